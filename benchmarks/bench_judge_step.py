"""Benchmark: one judge training step (forward, loss, backward, optimiser) in the two memory
layouts of a 3-D tensor, for both recipes of :mod:`medlsdm.training.judge`.

``train_judge`` keeps its network and batches channels-last (``torch.channels_last_3d``). This
measures why: each (recipe, layout) runs in a fresh worker process on one thread, the rows
interleaved (``--repeats`` rounds of every configuration), each timing ``--steps`` steps after
two untimed warm-up steps on random 16×32×32 crops in batches of 2 (the quick judge's batch).

    python benchmarks/bench_judge_step.py                  # 3 rounds of 30 steps
    python benchmarks/bench_judge_step.py --steps 2 --repeats 1 --out /tmp/x.md   # smoke check

Writes ``benchmarks/results/judge_step.md`` (``--out``). Run it when nothing else uses the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker import run_worker, timed  # noqa: E402

LAYOUTS = ("contiguous", "channels_last_3d")


def worker(cfg: dict) -> dict:
    """Seconds per training step of one (recipe, layout) on one thread."""
    import torch
    from monai.losses import DiceCELoss

    from medlsdm.training.judge import JUDGE_DEFAULTS, RECIPES, judge_network
    from medlsdm.training.segnet import dice_ce_loss

    torch.set_num_threads(1)
    torch.manual_seed(0)
    fmt = torch.channels_last_3d if cfg["layout"] == "channels_last_3d" else torch.contiguous_format
    model = judge_network(cfg["recipe"], 9, RECIPES[cfg["recipe"]]["features"]).to(memory_format=fmt)
    x = torch.randn(int(JUDGE_DEFAULTS["batch_size"]), 1, *JUDGE_DEFAULTS["crop_shape"]).contiguous(memory_format=fmt)
    y = torch.randint(0, 9, (x.shape[0], *x.shape[2:]))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    monai_loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    loss_fn = (lambda p: monai_loss(p, y[:, None])) if cfg["recipe"] == "basicunet" else (lambda p: dice_ce_loss(p, y))

    def step():
        loss = loss_fn(model(x))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    timed(step, 2)
    return {**cfg, "seconds": statistics.median(timed(step, cfg["steps"]))}


def report(rows: list[dict], args) -> str:
    by = {}
    for r in rows:
        by.setdefault((r["recipe"], r["layout"]), []).append(r["seconds"])
    lines = [
        "# Judge training step: memory layout",
        "",
        f"Written by `benchmarks/bench_judge_step.py` on {datetime.datetime.now().isoformat(timespec='seconds')}: "
        f"{platform.machine()}, one thread, {args.repeats} interleaved rounds of a fresh process per (recipe, layout), "
        f"each the median of {args.steps} steps. {args.note}".rstrip(),
        "",
        "| recipe | contiguous (s/step) | channels-last (s/step) | channels-last / contiguous |",
        "|---|---|---|---|",
    ]
    for recipe in sorted({r for r, _ in by}):
        a, b = (statistics.median(by[(recipe, layout)]) for layout in LAYOUTS)
        lines.append(f"| {recipe} | {a:.4f} | {b:.4f} | {b / a:.2f} |")
    lines += ["", "```json", *(json.dumps(r) for r in rows), "```", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recipes", default="segnet,basicunet")
    ap.add_argument("--note", default="", help="the run's conditions, printed in the report")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "judge_step.md")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    rows = []
    for _ in range(args.repeats):
        for recipe in args.recipes.split(","):
            for layout in LAYOUTS:
                row = run_worker(__file__, {"recipe": recipe, "layout": layout, "steps": args.steps}, timeout=900)
                print(json.dumps(row), flush=True)
                if "error" in row:
                    raise SystemExit(f"worker failed: {row}")
                rows.append(row)
    from medlsdm.atomic import atomic_path

    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(report(rows, args))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
