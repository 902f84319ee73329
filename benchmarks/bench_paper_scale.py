"""Benchmark: the paper profiles' VQ-GAN and diffusion UNet, two training steps each at the paper block, on CPU.

For each 3-D paper profile (``paper-autopet``, ``paper-synthrad2023``, ``paper-duke``) a fresh
worker process builds one model from the profile's settings (``paper_training_parameters``
over the ``train_vqgan`` / ``train_diffusion`` defaults) and runs ``--steps`` training steps on
random data of the profile's batch size:

- **VQ-GAN** (notebook 02): SPADE decoder reading the dataset's one-hot map (37 / 31 / 3
  classes, the original's ``label_nc``), L1 + perceptual (a VGG16 with *random* weights: the
  cost does not depend on the values, and no pretrained file is needed) + both PatchGANs with
  feature matching; a step = generator forward/backward/Adam update, then discriminator update
  (the step after ``disc_start``). fp32: the profile's fp16 autocast is a GPU setting.
- **UNet** (notebook 03) on the corresponding latent (8 channels, the block / 4): the
  denoising loss with the profile's label encoder (64 / 32 / 8 channels) reading the
  image-resolution condition, AdamW update. One micro-batch per step (the profile accumulates
  2 per optimiser step: twice the time, the same memory).

Memory is the worker's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
which sees torch's C++ allocations; tracemalloc would not). The GPU estimate is::

    weights + gradients + Adam's two moments (+ the UNet's EMA copy), 4 bytes each per trainable
    parameter, + frozen weights and buffers + activations,
    activations = peak RSS − RSS after building the models − (gradients + Adam moments)

i.e. the measured growth of a step minus the optimiser state, all in fp32, without the CUDA
context (about 0.3-0.5 GiB per GPU) and without allocator fragmentation. Under fp16 autocast the
activations are roughly halved.

    python benchmarks/bench_paper_scale.py                      # 32x256x256: slow, tens of GiB
    python benchmarks/bench_paper_scale.py --shape 32x32x32 --out /tmp/paper_scale.md  # smoke check

The block must be divisible by 32 on every axis (the VQ-GAN's 4× times the UNet's 8×).
Writes ``benchmarks/results/paper_scale.md`` (``--out``) after every model, keeping the rows of
earlier runs for other profiles, models or blocks (so a run can be split, and an interrupted one
keeps what it measured). Run it when nothing else uses the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker import MIB, peak_mib, rss_mib, run_worker, timed  # noqa: E402

PROFILES = ("paper-autopet", "paper-synthrad2023", "paper-duke")
#: classes of each dataset's label map in the original runs (``label_nc``, shared/REFERENCE.md)
NUM_CLASSES = {"paper-autopet": 37, "paper-synthrad2023": 31, "paper-duke": 3}


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def build_vqgan(profile: str, shape: tuple[int, ...], vgg_path: str, batch_size: int | None = None):
    """The profile's VQ-GAN, its loss (random-weight VGG16) and optimisers; ``(step, info)``."""
    import torch

    from medlsdm.models import VQGAN
    from medlsdm.profiles import paper_training_parameters
    from medlsdm.training.losses import VQGANLoss
    from medlsdm.training.vqgan import VQGAN_DEFAULTS, frozen

    params = paper_training_parameters(profile, "02")
    p = {**VQGAN_DEFAULTS, **{k: v for k, v in params.items() if k in VQGAN_DEFAULTS}}
    k = NUM_CLASSES[profile]
    model = VQGAN(
        spatial_dims=3,
        channels=tuple(p["channels"]),
        num_res_blocks=p["num_res_blocks"],
        embedding_dim=p["embedding_dim"],
        num_embeddings=p["num_embeddings"],
        norm_num_groups=p["norm_num_groups"],
        decoder_type=p["decoder_type"],
        num_classes=k,
        spade_hidden_channels=p["spade_hidden_channels"],
        commitment_cost=p["commitment_cost"],
    )
    loss_fn = VQGANLoss(
        spatial_dims=3,
        l1_weight=p["l1_weight"],
        perceptual_weight=p["perceptual_weight"],
        perceptual_weights=vgg_path,
        gan_weight_2d=p["gan_weight_2d"],
        gan_weight_3d=p["gan_weight_3d"],
        feat_weight=p["feat_weight"],
        disc_start=0,
        disc_channels=p["disc_channels"],
        disc_layers=p["disc_layers"],
    )
    discs = list(loss_fn.discriminators())
    opt_g = torch.optim.Adam(model.parameters(), lr=p["lr"], betas=tuple(p["betas"]))
    opt_d = torch.optim.Adam([q for d in discs for q in d.parameters()], lr=p["disc_lr"], betas=tuple(p["betas"]))
    b = batch_size or p["batch_size"]
    x = torch.rand(b, 1, *shape) * 2 - 1
    labels = torch.randint(0, k, (b, *shape))

    def step():
        out = model(x, labels)
        with frozen(*discs):
            loss_g, _ = loss_fn.generator_loss(x, out.reconstruction, out.commitment_loss, step=0)
        loss_g.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        loss_d, _ = loss_fn.discriminator_loss(x, out.reconstruction, step=0)
        loss_d.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)

    trainable = _numel(model.parameters()) + _numel(q for d in discs for q in d.parameters())
    frozen_bytes = 4 * (_numel(loss_fn.perceptual.parameters()) + _numel(model.buffers()))
    info = dict(
        batch_size=b,
        profile_batch_size=p["batch_size"],
        num_classes=k,
        input=[b, 1, *shape],
        trainable_params=trainable,
        frozen_bytes=frozen_bytes,
        copies=4,  # weights, gradients, Adam m and v
        settings={key: p[key] for key in ("channels", "num_embeddings", "spade_hidden_channels", "decoder_type")},
    )
    return step, info


def build_unet(profile: str, shape: tuple[int, ...], batch_size: int | None = None):
    """The profile's diffusion UNet on the latent of a ``shape`` block, with its label encoder; ``(step, info)``."""
    import torch

    from medlsdm.models.unet import SemanticUNet, semantic_condition
    from medlsdm.profiles import paper_training_parameters
    from medlsdm.training.diffusion import DIFFUSION_DEFAULTS, diffusion_loss, make_scheduler

    params = paper_training_parameters(profile, "03")
    p = {**DIFFUSION_DEFAULTS, **{k: v for k, v in params.items() if k in DIFFUSION_DEFAULTS}}
    k = NUM_CLASSES[profile]
    latent = [s // 4 for s in shape]  # the VQ-GAN's 16→32→64 channels downsample 4× per axis
    unet = SemanticUNet(
        spatial_dims=3,
        in_channels=8,
        out_channels=8,
        num_classes=k,
        channels=tuple(p["channels"]),
        attention_levels=tuple(p["attention_levels"]),
        num_res_blocks=p["num_res_blocks"],
        norm_num_groups=p["norm_num_groups"],
        num_heads=p["num_heads"],
        conditioning=p["conditioning"],
        dropout=p["dropout"],
        label_encoder_channels=p["label_encoder_channels"],
    )
    scheduler = make_scheduler(p["num_train_timesteps"], p["beta_schedule"], p["prediction_type"])
    opt = torch.optim.AdamW(unet.parameters(), lr=p["lr"], weight_decay=0.0)
    b = batch_size or p["batch_size"]
    z = torch.randn(b, 8, *latent)
    labels = torch.randint(0, k, (b, *shape))
    gen = torch.Generator().manual_seed(0)

    def step():
        loss = diffusion_loss(
            unet, scheduler, z, semantic_condition(labels, k), cond_drop_prob=p["cond_drop_prob"], generator=gen
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    info = dict(
        batch_size=b,
        profile_batch_size=p["batch_size"],
        num_classes=k,
        input=[b, 8, *latent],
        trainable_params=_numel(unet.parameters()),
        frozen_bytes=4 * _numel(unet.buffers()),
        copies=5,  # weights, gradients, AdamW m and v, EMA
        settings={
            key: p[key]
            for key in ("channels", "attention_levels", "num_heads", "conditioning", "label_encoder_channels")
        },
    )
    return step, info


def worker(cfg: dict) -> dict:
    """Build one model of one profile and time ``cfg["steps"]`` training steps (in a fresh process)."""
    import torch

    from medlsdm.models.feature_nets.vgg import vgg16_features

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    shape = tuple(cfg["shape"])
    if cfg["model"] == "unet":
        step, info = build_unet(cfg["profile"], shape, cfg.get("batch_size"))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            vgg_path = os.path.join(tmp, "vgg16_random.pt")
            torch.save(vgg16_features().state_dict(), vgg_path)
            step, info = build_vqgan(cfg["profile"], shape, vgg_path, cfg.get("batch_size"))
    base = rss_mib()
    times = timed(step, cfg["steps"])
    peak = peak_mib()
    optimiser_mib = 3 * 4 * info["trainable_params"] / MIB  # gradients + Adam m and v, allocated by the steps
    activations = max(0.0, peak - base - optimiser_mib)
    static = (info["copies"] * 4 * info["trainable_params"] + info["frozen_bytes"]) / MIB
    # activations grow in proportion to the batch: the estimate at the profile's batch
    profile_estimate = static + activations * info["profile_batch_size"] / info["batch_size"]
    return {
        **cfg,
        **info,
        "times": times,
        "rss_before_mib": base,
        "peak_rss_mib": peak,
        "activations_mib": activations,
        "static_mib": static,
        "gpu_estimate_mib": static + activations,
        "gpu_estimate_profile_batch_mib": profile_estimate,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _report(results: list[dict], args) -> str:
    now = datetime.datetime.now().isoformat(timespec="seconds")
    first = next((r for r in results if "error" not in r), {})
    shape = "×".join(map(str, args.shape))
    lines = [
        "# The paper profiles at the paper block: two training steps on CPU",
        "",
        f"Written by `benchmarks/bench_paper_scale.py` on {now}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, torch {first.get('torch', '?')} with {first.get('threads', '?')} threads, "
        f"Python {platform.python_version()}. Blocks D×H×W as in the table (this run: {shape}), fp32, random data, "
        f"{args.steps} steps per model, each model in its own process.",
        "",
        "VQ-GAN step: generator forward/backward/Adam + both PatchGANs' update, perceptual loss through a "
        "random-weight VGG16. UNet step: one micro-batch of the denoising loss on the latent (block / 4, "
        "8 channels) with the profile's label encoder, AdamW update (the profiles accumulate 2 micro-batches "
        "per optimiser step). Step 1 includes one-time costs (kernel selection, allocator growth, optimiser state).",
        "",
        "Peak RSS: `resource.getrusage(RUSAGE_SELF).ru_maxrss` of the worker. GPU estimate (fp32) = "
        "static + activations, static = 4 bytes × trainable parameters × (weights, gradients, Adam m, v; "
        "+ EMA for the UNet) + frozen weights and buffers, activations = peak RSS − RSS after building − "
        "(gradients + Adam moments); without the CUDA context (~0.3-0.5 GiB). fp16 autocast roughly halves "
        "the activations.",
        "",
        "A run with `--batch-size` smaller than the profile's (a block that does not fit this machine's "
        "memory at the profile's batch) measures that batch; the last column scales its activations to the "
        "profile's batch (activations grow in proportion to the batch).",
        "",
        "| profile | model | block | classes | batch input | trainable params (M) | s/step (each) | peak RSS GiB | "
        "activations GiB | static GiB | GPU estimate GiB | GPU estimate at the profile's batch GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(
                f"| {r['profile']} | {r['model']} | {'×'.join(map(str, r['shape']))} | | | | error: {r['error']} | "
                "| | | | |"
            )
            continue
        each = ", ".join(f"{t:.1f}" for t in r["times"])
        lines.append(
            f"| {r['profile']} | {r['model']} | {'×'.join(map(str, r['shape']))} | {r['num_classes']} | "
            f"{'×'.join(map(str, r['input']))} | "
            f"{r['trainable_params'] / 1e6:.2f} | {each} | {r['peak_rss_mib'] / 1024:.2f} | "
            f"{r['activations_mib'] / 1024:.2f} | {r['static_mib'] / 1024:.2f} | {r['gpu_estimate_mib'] / 1024:.2f} | "
            f"{r.get('gpu_estimate_profile_batch_mib', r['gpu_estimate_mib']) / 1024:.2f} |"
        )
    lines += [
        "",
        "A row with an error did not finish (time limit, memory). The same model at a smaller block "
        "(another row) shows its cost: convolution activations grow about in proportion to the voxels.",
        "",
        "Raw numbers:",
        "",
        "```json",
        json.dumps(results, indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="32x256x256", help="DxHxW block, each divisible by 32 (paper: 32x256x256)")
    parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated 3-D paper profiles")
    parser.add_argument("--models", default="vqgan,unet", help="comma-separated: vqgan, unet")
    parser.add_argument("--steps", type=int, default=2, help="training steps per model")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="measure this batch instead of the profile's (the report scales memory to the profile's)",
    )
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per model")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "paper_scale.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    from medlsdm.atomic import write_text
    from medlsdm.errors import ConfigError

    args.shape = tuple(int(v) for v in args.shape.lower().split("x"))
    if len(args.shape) != 3 or any(s % 32 for s in args.shape):
        raise ConfigError(
            f"--shape {args.shape}: give DxHxW with every side divisible by 32 "
            "(the VQ-GAN downsamples 4×, the UNet's four levels another 8×)"
        )
    profiles = args.profiles.split(",")
    unknown = sorted(set(profiles) - set(PROFILES)) + sorted(set(args.models.split(",")) - {"vqgan", "unet"})
    if unknown:
        raise ConfigError(
            f"unknown profile(s) or model(s) {unknown}; profiles: {', '.join(PROFILES)}; models: vqgan, unet"
        )
    out = Path(args.out)
    # rows of an earlier run of the same report (other profiles, models or blocks) are kept; the
    # report is rewritten after every model, so an interrupted run keeps what it measured
    results = [
        r
        for r in _previous_results(out)
        if not (r["profile"] in profiles and r["model"] in args.models.split(",") and tuple(r["shape"]) == args.shape)
    ]
    for profile in profiles:
        for model in args.models.split(","):
            cfg = dict(
                profile=profile,
                model=model,
                shape=args.shape,
                steps=args.steps,
                threads=args.threads,
                batch_size=args.batch_size,
            )
            print(f"{profile} {model} {'x'.join(map(str, args.shape))} …", flush=True)
            r = run_worker(__file__, cfg, args.timeout)
            results.append(r)
            print(
                "   ",
                r.get("error")
                or f"{', '.join(f'{t:.1f}' for t in r['times'])} s/step, "
                f"peak {r['peak_rss_mib'] / 1024:.2f} GiB, GPU estimate {r['gpu_estimate_mib'] / 1024:.2f} GiB",
                flush=True,
            )
            write_text(out, _report(results, args))
    print(f"wrote {out}")
    return 0


def _previous_results(path: Path) -> list[dict]:
    """The raw rows of an existing report (its JSON block), or none."""
    if not path.exists():
        return []
    text = path.read_text()
    start = text.find("```json\n")
    if start < 0:
        return []
    return json.loads(text[start + len("```json\n") : text.index("```", start + 7)])


if __name__ == "__main__":
    sys.exit(main())
