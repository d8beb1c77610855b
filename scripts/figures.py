#!/usr/bin/env python3
"""The README's figures, from real runs: `make figures`.

    python scripts/figures.py [--run logs/train/runs/<run>] [--out docs/figures]

- ``loss_curve.png``: training and validation loss of a ``make train`` run (the newest finished run under
  ``logs/train/runs`` unless ``--run`` names one), from its CSV log;
- ``attention.png``: attention forward + backward time and peak memory against sequence length per backend,
  measured now by ``santacoder.bench.attention.measure`` on this machine;
- ``demo.png``: the playground (``santacoder demo``) serving that run's model, after filling a gap, in headless
  Chromium (``santacoder.bench.browser``; skipped, with the reason, where the OS has no Chromium).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO_CODE = 'def read_lines(path):\n    """Return the lines of the file at path."""\n    <FILL-HERE>\n'


def newest_finished_run(root: Path) -> Path:
    runs = sorted((p.parent for p in root.glob("*/metrics.json")), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"error: no finished run under {root}; run `make train` first (or pass --run)")
    return runs[-1]


def read_csv_log(run: Path) -> dict[str, list[tuple[int, float]]]:
    files = sorted(run.glob("csv/**/metrics.csv"))
    if not files:
        raise SystemExit(f"error: {run} has no CSV log (csv/metrics.csv); train with logger=csv or many_loggers")
    series: dict[str, list[tuple[int, float]]] = {}
    with open(files[0]) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key != "step" and value:
                    series.setdefault(key, []).append((int(row["step"]), float(value)))
    return series


def loss_curve(run: Path, out: Path) -> None:
    series = read_csv_log(run)
    metrics = json.loads((run / "metrics.json").read_text())
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, style in (("train/loss", "-"), ("val/loss", "o-")):
        steps, values = zip(*series[name], strict=True)
        ax.plot(steps, values, style, label=name)
    ax.axhline(metrics["uniform_loss"], color="grey", ls=":", label="uniform guess")
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title=f"make train: final val/loss {metrics['val/loss']:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out} from {run}")


def attention_plot(out: Path, seq_lens: list[int]) -> None:
    import torch

    from santacoder.bench import attention as attention_bench
    from santacoder.bench.common import machine

    torch.set_num_threads(2)
    results = attention_bench.measure(seq_lens, rounds=3)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    attention_bench.plot(results, axes)
    fig.suptitle(f"attention forward + backward, santacoder-1b heads, batch 1: {machine()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


def demo_screenshot(run: Path, out: Path) -> None:
    from santacoder import load, load_tokenizer
    from santacoder.bench import browser
    from santacoder.inference.demo import build_app, launch

    if browser.chromium() is None:
        print(f"skipped {out.name}: no Chromium (apt-get install chromium)")
        return
    app = launch(build_app(load(run), load_tokenizer(run)), block=False)
    try:
        shown = browser.drive(app.local_url, out, DEMO_CODE)
    finally:
        app.close()
    print(f"wrote {out} ({shown['status']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a make train run directory (default: the newest finished one)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[256, 512, 1024, 2048], help="attention plot")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.run or newest_finished_run(REPO / "logs" / "train" / "runs")
    loss_curve(run, args.out / "loss_curve.png")
    attention_plot(args.out / "attention.png", args.seq_lens)
    demo_screenshot(run, args.out / "demo.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
