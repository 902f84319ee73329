"""Whole-volume benchmark: windowed vs one-pass synthesis, time and peak memory against depth.

A random-weight pipeline of the quick profile's size (VQ-GAN 16→32→64 with 8 latent channels
and a SPADE decoder, 9 torso classes; UNet channels 32, 64, 128 with attention on the lower two
levels; block 32×64×64 → latent 8×8×16×16) synthesises label maps 1, 2, 4 and 8 blocks deep
with DDIM-10, once in one pass and once in windows of one block (``window=32``, default
overlap 8 slices). Weights are untrained: time and memory do not depend on them.

Each configuration runs in a fresh subprocess, which reports its wall time and peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which counts torch's allocations,
unlike ``tracemalloc``), also as the increase over the peak before sampling (model built,
label map made, a one-step warm-up on a 16×16×16 label map). Writes ``benchmarks/results/whole_volume.md``.

    python benchmarks/bench_whole_volume.py [--depths 1,2,4,8] [--steps 10] [--check]

Run it on an otherwise idle machine: a second job on these 2 cores distorts the times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLOCK = (32, 64, 64)
MODES = ("one pass", "windowed")


def build_pipeline():
    """The quick-size pipeline with random weights (zero-initialised output layers randomised)."""
    import torch
    from diffusers import DDIMScheduler

    from medlsdm.data.classes import TORSO_CT
    from medlsdm.models.unet import SemanticUNet
    from medlsdm.models.vqgan import VQGAN
    from medlsdm.pipelines.pipeline_medlsdm import MedLSDMPipeline

    torch.manual_seed(0)
    classes = len(TORSO_CT.names)
    vqgan = VQGAN(channels=(16, 32, 64), embedding_dim=8, num_embeddings=512, decoder_type="spade", num_classes=classes)
    unet = SemanticUNet(
        in_channels=8, out_channels=8, num_classes=classes, channels=(32, 64, 128), attention_levels=(False, True, True)
    )
    with torch.no_grad():
        for p in unet.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.02)
    pipe = MedLSDMPipeline(
        vqgan.eval(), unet.eval(), DDIMScheduler(beta_schedule="squaredcos_cap_v2"), block_shape=list(BLOCK)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def worker(depth_blocks: int, mode: str, steps: int, threads: int) -> dict:
    """One configuration in this (fresh) process: seconds, UNet calls and peak RSS in MB."""
    import torch

    torch.set_num_threads(threads)
    pipe = build_pipeline()
    labels = torch.randint(
        0,
        pipe.unet.config.num_classes,
        (1, BLOCK[0] * depth_blocks, *BLOCK[1:]),
        generator=torch.Generator().manual_seed(1),
    )
    window = BLOCK[0] if mode == "windowed" else None
    pipe(labels[:, :16, :16, :16], num_inference_steps=1)  # warm-up: libraries' one-time allocations
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[2]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    out = pipe(labels, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), window=window)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert out.images.shape == (1, 1, *labels.shape[1:])
    return {
        "depth_blocks": depth_blocks,
        "mode": mode,
        "seconds": seconds,
        "unet_calls": len(calls),
        "unet_depth": max(calls),
        "peak_mb": peak,
        "before_mb": before,
    }


def run_config(depth_blocks: int, mode: str, steps: int, threads: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        str(depth_blocks),
        mode,
        "--steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ.copy())
    if done.returncode:
        raise RuntimeError(f"{depth_blocks} blocks, {mode}: the worker failed\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="1,2,4,8", help="label-map depths in blocks")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    parser.add_argument("--out", default=str(HERE / "results" / "whole_volume.md"))
    parser.add_argument("--check", action="store_true", help="depths 1 and 2, 2 steps: check the script runs")
    parser.add_argument("--worker", nargs=2, metavar=("DEPTH_BLOCKS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1], args.steps, args.threads)))
        return

    from tqdm.auto import tqdm

    from medlsdm.atomic import write_text

    depths = [1, 2] if args.check else [int(v) for v in args.depths.split(",")]
    steps = 2 if args.check else args.steps
    configs = [(d, m) for d in depths for m in MODES]
    load_before = os.getloadavg()[0]
    results = {(d, m): run_config(d, m, steps, args.threads) for d, m in tqdm(configs, desc="configurations")}
    load_after = os.getloadavg()[0]
    base = {m: results[(depths[0], m)] for m in MODES}

    lines = [
        "# Whole-volume benchmark: windowed vs one-pass synthesis",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads per run, one fresh "
        f"process per configuration. Random-weight pipeline of the quick size (latent 8 channels, block "
        f"{'×'.join(map(str, BLOCK))} → latent 8×{BLOCK[0] // 4}×{BLOCK[1] // 4}×{BLOCK[2] // 4}, UNet channels "
        f"32/64/128 with attention on the lower two levels), DDIM-{steps}, guidance 1, batch 1. Windowed: "
        f"windows of one block ({BLOCK[0]} slices), overlap 8 slices, one window per UNet call, decoding in the "
        "same tiles. "
        f"Load average (1 min) {load_before:.1f} before the run, {load_after:.1f} after.",
        "",
        "Peak RSS is `ru_maxrss` of the process; *Δ peak* is its increase during sampling (over the "
        "peak after building the model, which is the same for every configuration).",
        "",
        "| depth (blocks × slices) | mode | steps | UNet calls (window depth, latent) | s | s / block | peak RSS MB "
        "| Δ peak MB | Δ peak vs 1 block |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for (d, m), r in results.items():
        rise = r["peak_mb"] - r["before_mb"]
        base_rise = base[m]["peak_mb"] - base[m]["before_mb"]
        lines.append(
            f"| {d} × {BLOCK[0]} = {d * BLOCK[0]} | {m} | {steps} | {r['unet_calls']} ({r['unet_depth']}) | "
            f"{r['seconds']:.2f} | {r['seconds'] / d:.2f} | {r['peak_mb']:.0f} | {rise:.0f} | {rise / base_rise:.2f}× |"
        )
    lines += [
        "",
        "Windowed against one pass at the same depth (ratios of the numbers above, one run):",
        "",
        "| depth (blocks) | time windowed / one pass | Δ peak windowed / one pass |",
        "|--:|--:|--:|",
    ]
    for d in depths:
        w, o = results[(d, "windowed")], results[(d, "one pass")]
        lines.append(
            f"| {d} | {w['seconds'] / o['seconds']:.2f} | "
            f"{(w['peak_mb'] - w['before_mb']) / (o['peak_mb'] - o['before_mb']):.2f} |"
        )
    one = [results[(depths[0], m)]["seconds"] for m in MODES]
    lines += [
        "",
        f"At {depths[0]} block(s) both modes run the same computation (one window covers the depth): their "
        f"time ratio, {max(one) / min(one):.2f}, shows how much other jobs on the machine distorted the times of "
        f"this run; the memory columns are not affected.",
        "",
    ]
    print(write_text(args.out, "\n".join(lines)).read_text())


if __name__ == "__main__":
    main()
