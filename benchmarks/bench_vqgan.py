"""Benchmark: VQ-GAN training-step time and peak memory on CPU.

For every block size × precision (fp32, bf16 autocast) × gradient checkpointing (off, on),
a fresh worker process builds the Med-LSDM VQ-GAN (channels 16→32→64, 8-dim codes) with
its two PatchGANs and times full training steps (generator forward/backward/update, then
discriminator update — the step after ``disc_start``), after one untimed warm-up step.

Memory is the worker's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
which sees torch's C++ allocations — tracemalloc would not); the report gives the peak and
the peak minus the RSS measured just before the first step (interpreter, torch and the
models), i.e. what the training step itself needs. Each configuration runs in its own
process so peaks do not carry over.

    python benchmarks/bench_vqgan.py                       # 32x64x64 and 32x256x256 (slow!)
    python benchmarks/bench_vqgan.py --steps 1 --sizes 8x16x16   # smoke check

Writes ``benchmarks/results/vqgan.md`` (``--out``). Run it when nothing else uses the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker import peak_mib, rss_mib, run_worker, timed  # noqa: E402


def worker(cfg: dict) -> dict:
    """Time ``cfg["steps"]`` training steps of one configuration (runs in a fresh process)."""
    import torch

    from medlsdm.models import VQGAN
    from medlsdm.training.losses import VQGANLoss
    from medlsdm.training.vqgan import frozen

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    shape = cfg["size"]
    spade = cfg["decoder"] == "spade"
    model = VQGAN(
        3,
        channels=(16, 32, 64),
        embedding_dim=8,
        num_embeddings=cfg["codebook"],
        decoder_type=cfg["decoder"],
        num_classes=9 if spade else 0,
        spade_hidden_channels=cfg["spade_hidden"],
    )
    if cfg["checkpointing"]:
        model.enable_gradient_checkpointing()
    loss_fn = VQGANLoss(3, disc_start=0, disc_channels=64, disc_layers=3)
    opt_g = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam([p for d in loss_fn.discriminators() for p in d.parameters()], lr=3e-4)
    x = torch.rand(cfg["batch_size"], 1, *shape) * 2 - 1
    labels = torch.randint(0, 9, (cfg["batch_size"], *shape)) if spade else None
    dtype = torch.bfloat16 if cfg["precision"] == "bf16" else None

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            out = model(x, labels)
            with frozen(*loss_fn.discriminators()):
                loss_g, _ = loss_fn.generator_loss(x, out.reconstruction, out.commitment_loss, step=0)
        loss_g.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss_d, _ = loss_fn.discriminator_loss(x, out.reconstruction, step=0)
        loss_d.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)

    base = rss_mib()
    (warmup,) = timed(step, 1)  # warm-up (kernel selection, allocator)
    times = timed(step, cfg["steps"])
    peak = peak_mib()
    return {
        **cfg,
        "warmup_s": warmup,
        "times": times,
        "mean_s": sum(times) / len(times),
        "min_s": min(times),
        "rss_before_mib": base,
        "peak_rss_mib": peak,
        "step_mib": peak - base,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _report(results: list[dict], args) -> str:
    now = datetime.datetime.now().isoformat(timespec="seconds")
    first = next((r for r in results if "error" not in r), {})
    lines = [
        "# VQ-GAN training step on CPU",
        "",
        f"Written by `benchmarks/bench_vqgan.py` on {now}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, torch {first.get('torch', '?')} with {first.get('threads', '?')} threads, "
        f"Python {platform.python_version()}.",
        "",
        f"Model: VQ-GAN channels 16→32→64, 8-dim codes, codebook {args.codebook}, decoder `{args.decoder}`; "
        f"batch size {args.batch_size}. A step = generator forward/backward/Adam update + 2-D and 3-D "
        "PatchGAN update (the full step after `disc_start`). One warm-up step, then the timed steps.",
        "",
        "Memory: peak resident set size of the worker process (`resource.getrusage().ru_maxrss`), and "
        "the peak minus the RSS just before the first step (what the step itself needs). One process per row.",
        "",
        "Ratios (×) are against the fp32, no-checkpointing row of the same block size in this run.",
        "",
        "| block (D×H×W) | precision | grad. checkpointing | timed steps | s/step (mean) | s/step (min) | "
        "time × | warm-up s | peak RSS MiB | step MiB | step memory × |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference = {
        tuple(r["size"]): r for r in results if "error" not in r and r["precision"] == "fp32" and not r["checkpointing"]
    }
    for r in results:
        size = "×".join(map(str, r["size"]))
        ckpt = "on" if r["checkpointing"] else "off"
        if "error" in r:
            lines.append(f"| {size} | {r['precision']} | {ckpt} | {r['steps']} | error: {r['error']} | | | | | | |")
            continue
        ref = reference.get(tuple(r["size"]))
        time_ratio = f"{r['mean_s'] / ref['mean_s']:.2f}" if ref else "–"
        mem_ratio = f"{r['step_mib'] / ref['step_mib']:.2f}" if ref and ref["step_mib"] > 0 else "–"
        lines.append(
            f"| {size} | {r['precision']} | {ckpt} | {r['steps']} | {r['mean_s']:.3f} | {r['min_s']:.3f} | "
            f"{time_ratio} | {r['warmup_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['step_mib']:.0f} | {mem_ratio} |"
        )
    lines += ["", "Raw numbers:", "", "```json", json.dumps(results, indent=1), "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="32x64x64,32x256x256", help="comma-separated DxHxW blocks (divisible by 4)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--checkpointing", default="off,on")
    parser.add_argument("--decoder", default="normal", choices=["normal", "spade"])
    parser.add_argument("--codebook", type=int, default=512)
    parser.add_argument("--spade-hidden", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vqgan.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    from medlsdm.atomic import write_text

    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    results = []
    for size in sizes:
        for precision in args.precisions.split(","):
            for ckpt in args.checkpointing.split(","):
                cfg = dict(
                    size=size,
                    precision=precision,
                    checkpointing=ckpt == "on",
                    steps=args.steps,
                    batch_size=args.batch_size,
                    decoder=args.decoder,
                    codebook=args.codebook,
                    spade_hidden=args.spade_hidden,
                    threads=args.threads,
                )
                print(f"{'x'.join(map(str, size))} {precision} checkpointing={ckpt} …", flush=True)
                r = run_worker(__file__, cfg, args.timeout)
                results.append(r)
                print(
                    "   ", r.get("error") or f"{r['mean_s']:.3f} s/step, peak {r['peak_rss_mib']:.0f} MiB", flush=True
                )
    out = Path(args.out)
    write_text(out, _report(results, args))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
