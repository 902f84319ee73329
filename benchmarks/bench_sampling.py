"""Sampling benchmark: schedulers vs the 1000-step DDPM result, latent vs image-space step cost.

Needs a run with a trained pipeline (``make demo`` → ``runs/demo``). For the same test label
maps and the same initial noise it samples with DDPM-1000 (the reference) and with DDIM-50,
DPM-Solver++-25/10 and UniPC-10, and reports seconds per volume, the RMSE to the reference
volume and the class-intensity error against the real volumes. Then it times one denoising
step of the same UNet on the latent grid and on the image grid (the UNet rebuilt with image
channels), and reports their ratio. Writes ``benchmarks/results/sampling.md``.

    python benchmarks/bench_sampling.py --run-dir runs/demo [--n-labels 2]

Run it on an otherwise idle machine: a second job on these 2 cores distorts the times.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SETTINGS = [("ddpm", 1000), ("ddim", 50), ("dpm++", 25), ("dpm++", 10), ("unipc", 10)]
QUICK_CHECK = [("ddpm", 4), ("ddim", 3)]  # --check: a seconds-long run that exercises the script


def timed_schedulers(pipe, labels, settings, *, seed: int = 0) -> dict[str, tuple[np.ndarray, float]]:
    """Sample the same labels and noise with each ``(scheduler, steps)``.

    Returns ``{"<scheduler>-<steps>": (images, seconds per volume)}``; the pipeline's scheduler
    is restored afterwards. (Not :func:`medlsdm.evaluation.oracle.scheduler_distributions`: that
    one returns distribution statistics against oracle re-renders, not the images this
    benchmark compares with the reference and the real volumes.)
    """
    from medlsdm.pipelines.synthesis import use_scheduler

    original, results = pipe.scheduler, {}
    try:
        for name, steps in settings:
            use_scheduler(pipe, name)
            start = time.perf_counter()
            out = pipe(
                labels, num_inference_steps=steps, guidance_scale=1.0, generator=torch.Generator().manual_seed(seed)
            )
            results[f"{name}-{steps}"] = out.images, (time.perf_counter() - start) / len(out.images)
    finally:
        pipe.scheduler = original
    return results


def step_seconds(unet, sample, cond, repeats: int = 5) -> float:
    """Median seconds of one forward pass (one denoising step) of ``unet``."""
    times = []
    with torch.no_grad():
        unet(sample, 10, cond)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            unet(sample, 10, cond)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--n-labels", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "sampling.md"))
    parser.add_argument("--check", action="store_true", help="a few steps only, to check the script runs")
    args = parser.parse_args()

    from medlsdm.atomic import write_text
    from medlsdm.data.prepare import load_manifest
    from medlsdm.data.splits import load_split
    from medlsdm.data.store import CaseStore, stack_cases
    from medlsdm.metrics.image import class_intensity_error
    from medlsdm.models.unet import SemanticUNet, semantic_condition
    from medlsdm.pipelines.loading import load_pipeline

    run = Path(args.run_dir)
    manifest, split = load_manifest(run / "data"), load_split(run / "data" / "split.json")
    with CaseStore(run / "data" / "cases.h5") as store:
        real, labels, _ = stack_cases(store, split["test"][: args.n_labels])
    pipe = load_pipeline(run)
    settings = QUICK_CHECK if args.check else SETTINGS
    results = timed_schedulers(pipe, labels, settings)
    reference, ref_seconds = next(iter(results.values()))

    lines = [
        "# Sampling benchmark",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads. "
        f"Reference: {settings[0][0].upper()}-{settings[0][1]}. Run `{run}`: {len(labels)} test label maps of shape "
        f"{tuple(labels.shape[1:])}, one batch, same initial noise.",
        "",
        "| scheduler | steps | s / volume | speed-up vs reference | RMSE to reference | class-intensity error (mean) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for (name, steps), (images, seconds) in zip(settings, results.values()):
        rmse = float(np.sqrt(np.mean((images - reference) ** 2)))
        err = np.mean(list(class_intensity_error(list(images), list(real), list(labels), manifest.classes).values()))
        lines.append(f"| {name} | {steps} | {seconds:.2f} | {ref_seconds / seconds:.1f}× | {rmse:.4f} | {err:.4f} |")

    unet = pipe.unet
    latent_shape = (1, unet.config.in_channels, *(s // pipe.vqgan.downsample_factor for s in labels.shape[1:]))
    cond = semantic_condition(torch.as_tensor(labels[:1]), unet.config.num_classes)
    latent_step = step_seconds(unet, torch.randn(latent_shape), cond)
    image_unet = SemanticUNet.from_config({**unet.config, "in_channels": 1, "out_channels": 1}).eval()
    image_step = step_seconds(image_unet, torch.randn(1, 1, *labels.shape[1:]), cond)
    lines += [
        "",
        f"One denoising step of the same UNet (median of 5, batch 1): latent grid {latent_shape[1:]} "
        f"{latent_step * 1000:.1f} ms, image grid {(1, *labels.shape[1:])} {image_step * 1000:.1f} ms: "
        f"image space costs **{image_step / latent_step:.1f}×** more per step.",
        "",
        "DDPM is stochastic (fresh noise at every step), so its RMSE to other samplers measures how close",
        "their results are in distribution rather than a numerical error; DDIM/DPM-Solver++/UniPC are deterministic.",
        "",
    ]
    print(write_text(args.out, "\n".join(lines)).read_text())


if __name__ == "__main__":
    main()
