"""Benchmark: does the sampler make the samples too noisy, or pin their appearance? (quality)

Takes a trained quick run (``--run``: notebooks 01-03 done) and samples its *validation* label
maps with each sampler variant below, then compares the samples with raw oracle re-renders of
the same maps (8 per map) and with the same re-renders through the VQ-GAN:

- texture (:func:`medlsdm.evaluation.oracle.texture_vs_oracle`): the noise level in the
  homogeneous classes, samples over raw oracle (``noise``), split into what the autoencoder
  does (``AE``: re-renders through it over raw) and what the diffusion model adds on top
  (``diffusion``: samples over re-renders through the autoencoder); HF power likewise;
- latent roughness: mean squared 3-D Laplacian of the sampled latents over that of the encoded
  oracle re-renders, both in the diffusion model's normalised space (1: the samples' latents
  are as smooth as real ones; above 1: the sampler leaves latent-scale noise the decoder turns
  into texture);
- per factor the within-map spread ratio and KS p against the oracle
  (:func:`medlsdm.evaluation.oracle.compare_with_oracle`).

Variants: ``ddim-N`` (N DDIM steps, guidance 1: notebook 04's sampler at N = 50),
``ddim-50-raw`` (decoded without snapping to the codebook), ``dpm++-25``, ``ddim-50-g2``
(classifier-free guidance 2).

    python benchmarks/bench_sampling_texture.py --run runs/demo --work /tmp/st sample --variant ddim-50
    python benchmarks/bench_sampling_texture.py --work /tmp/st report   # benchmarks/results/sampling_texture.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker import append_row, write_report  # noqa: E402  (benchmarks/worker.py)

#: ``(scheduler, steps, guidance scale, snap to the codebook)``
VARIANTS = {
    "ddim-10": ("ddim", 10, 1.0, True),
    "ddim-50": ("ddim", 50, 1.0, True),
    "ddim-200": ("ddim", 200, 1.0, True),
    "ddim-50-raw": ("ddim", 50, 1.0, False),
    "dpm++-25": ("dpm++", 25, 1.0, True),
    "ddim-50-g2": ("ddim", 50, 2.0, True),
}
N_SAMPLES, N_ORACLE, N_MAPS = 2, 8, 6


def laplacian_energy(z) -> float:
    """Mean squared discrete Laplacian of latents ``(N, C, d, h, w)`` over the interior voxels."""
    z = np.asarray(z, np.float64)
    c = (slice(1, -1),) * 3
    lap = -6 * z[(...,) + c]
    for axis in range(3):
        for shift in (slice(2, None), slice(None, -2)):
            lap = lap + z[(...,) + tuple(shift if a == axis else c[a] for a in range(3))]
    return float(np.mean(lap**2))


def sample(run: Path, work: Path, variant: str) -> dict:
    import torch

    from medlsdm.data.phantom import oracle as phantom_oracle
    from medlsdm.data.prepare import load_manifest
    from medlsdm.data.splits import load_split
    from medlsdm.data.store import CaseStore, stack_cases
    from medlsdm.evaluation import oracle
    from medlsdm.evaluation.reconstruction import reconstruct
    from medlsdm.pipelines.loading import load_pipeline
    from medlsdm.pipelines.synthesis import use_scheduler

    scheduler, steps, guidance, snap = VARIANTS[variant]
    manifest, split = load_manifest(run / "data"), load_split(run / "data" / "split.json")
    classes, dataset, ids = manifest.classes, manifest.dataset, split["val"][:N_MAPS]
    with CaseStore(run / "data" / "cases.h5") as store:
        _, labels, _ = stack_cases(store, ids)
    pipe = use_scheduler(load_pipeline(run), scheduler)
    raw = phantom_oracle.oracle_samples(run / "data", ids, N_ORACLE, seed=0)
    flat = raw.reshape(-1, *raw.shape[2:])
    rec = reconstruct(pipe.vqgan, flat, np.repeat(labels, N_ORACLE, axis=0)).images.reshape(raw.shape)
    with torch.no_grad():
        real_latents = pipe.vqgan.to_diffusion(pipe.vqgan.encode(torch.as_tensor(flat)).latents).numpy()
    t0 = time.perf_counter()
    images, latents = [], []
    for i in range(len(ids)):
        generators = [torch.Generator().manual_seed(k) for k in range(N_SAMPLES)]
        z = pipe(
            labels[i : i + 1],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
            num_per_label=N_SAMPLES,
            output_type="latent",
        ).images
        lab = torch.as_tensor(labels[i : i + 1]).repeat_interleave(N_SAMPLES, dim=0)
        with torch.no_grad():
            images.append(
                pipe.vqgan.decode(pipe.vqgan.from_diffusion(z), force_not_quantize=not snap, labels=lab)
                .sample.clamp(-1, 1)
                .numpy()
            )
        latents.append(z.numpy())
    seconds = time.perf_counter() - t0
    samples = np.stack(images)
    texture = oracle.texture_vs_oracle(samples, raw, labels, classes, dataset, autoencoded=rec)
    judged = oracle.compare_with_oracle(samples, rec, raw, labels, classes, dataset)
    row = {
        "variant": variant,
        "scheduler": scheduler,
        "steps": steps,
        "guidance": guidance,
        "snap": snap,
        "seconds": round(seconds, 1),
        "n_maps": len(ids),
        "texture": {k: v for k, v in texture.items() if not isinstance(v, dict)},
        "latent_roughness": laplacian_energy(np.concatenate(latents)) / laplacian_energy(real_latents),
        **{k: judged[k] for k in ("diversity_ratio", "factor_spread_ratio", "factor_spread_reference", "counted")},
        "ks_p": {f: c["ks_p"] for f, c in judged["factor_all"].items()},
    }
    append_row(work, row)
    return row


def report(rows: list[dict]) -> str:
    import torch

    factors = list(rows[0]["factor_spread_ratio"])
    tex = rows[0]["texture"]
    lines = [
        "# Sampler variants: texture and within-map spread of the samples",
        "",
        "Written by `benchmarks/bench_sampling_texture.py` on "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}: "
        f"{platform.machine()}, torch {torch.__version__}. One trained quick run (notebooks 01-03), its first "
        f"{rows[0]['n_maps']} validation label maps × {N_SAMPLES} samples against {N_ORACLE} oracle re-renders per "
        "map. "
        "Noise: the noise level in the homogeneous classes, samples over raw re-renders (1 right), = AE × diffusion "
        "(re-renders through the autoencoder over raw, times samples over those). Latent roughness: mean squared "
        "Laplacian of the sampled latents over that of the encoded re-renders. Spread: within-map sd of a factor, "
        "samples over oracle; counted factors in bold.",
        "",
        f"Oracle half against half: noise {tex['noise_ratio_reference']:.2f}, HF power "
        f"{tex['hf_power_ratio_reference']:.2f}; "
        f"the autoencoder alone: noise {tex['noise_ratio_autoencoder']:.2f}, HF power "
        f"{tex['hf_power_ratio_autoencoder']:.2f}; "
        "spread " + ", ".join(f"{f} {rows[0]['factor_spread_reference'][f]:.2f}" for f in factors) + ".",
        "",
        "| variant | s | noise (diffusion) | HF power | latent roughness | diversity | "
        + " | ".join(f"{f} spread / KS p" for f in factors)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(factors),
    ]
    for r in sorted(rows, key=lambda r: r["variant"]):
        t = r["texture"]
        cells = [f"{r['factor_spread_ratio'][f]:.2f} / {r['ks_p'][f]:.2g}" for f in factors]
        cells = [f"**{c}**" if f in r["counted"] else c for c, f in zip(cells, factors)]
        lines.append(
            f"| {r['variant']} | {r['seconds']} | {t['noise_ratio']:.2f} ({t['noise_ratio_diffusion']:.2f}) | "
            f"{t['hf_power_ratio']:.2f} | {r['latent_roughness']:.2f} | {r['diversity_ratio']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", *reading(rows), "", "Raw numbers:", "", "```json", json.dumps(rows, indent=1), "```", ""]
    return "\n".join(lines)


def reading(rows: list[dict]) -> list[str]:
    """What the table shows, written from its numbers."""
    plain = [r for r in rows if r["guidance"] == 1.0]
    noise = [r["texture"]["noise_ratio_diffusion"] for r in plain]
    rough = [r["latent_roughness"] for r in plain]
    out = [
        f"> With guidance 1, every sampler and step count ({', '.join(sorted(r['variant'] for r in plain))}) leaves "
        f"the samples {min(noise):.2f}-{max(noise):.2f}× as noisy as the oracle re-renders through the same "
        f"autoencoder, snapped to the codebook or not: the extra noise is not the solver's. The sampled latents are "
        f"{'smoother' if max(rough) < 1 else 'rougher'} than the encoded re-renders (roughness {min(rough):.2f}-"
        f"{max(rough):.2f}), so it is not latent-scale noise left by the sampler either: the extra texture comes "
        "from how the decoder reads the sampled latents' values."
    ]
    guided = [r for r in rows if r["guidance"] != 1.0]
    base = next((r for r in plain if r["variant"] == "ddim-50"), None)
    if guided and base:
        g = guided[0]
        drop = {f: (base["factor_spread_ratio"][f], g["factor_spread_ratio"][f]) for f in base["counted"]}
        out.append("")
        out.append(
            f"> Guidance {g['guidance']:g} brings the noise ratio from {base['texture']['noise_ratio']:.2f} to "
            f"{g['texture']['noise_ratio']:.2f} and pins the appearance: within-map spread "
            + ", ".join(f"{f} {a:.2f} → {b:.2f}" for f, (a, b) in drop.items())
            + f", diversity {base['diversity_ratio']:.2f} → {g['diversity_ratio']:.2f}. Less noise is bought "
            "with samples nearer the conditional mean: not a fix."
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (rows.jsonl)")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="sample with one variant and append its row")
    s.add_argument("--run", type=Path, required=True, help="a quick run with notebooks 01-03 done")
    s.add_argument("--variant", choices=list(VARIANTS), required=True)
    r = sub.add_parser("report", help="write the report from WORK/rows.jsonl")
    r.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sampling_texture.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.command == "sample":
        sample(args.run, args.work, args.variant)
    else:
        write_report(args.work, args.out, report)


if __name__ == "__main__":
    main()
