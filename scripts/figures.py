#!/usr/bin/env python3
"""The README's figures, from real runs: `make figures`.

    python scripts/figures.py [--run logs/train/runs/<run>] [--out logs/figures | --update]

Figures go to ``logs/figures/`` (ignored by git), or with ``--update`` (``make figures UPDATE=1``) over the
README's committed ones in ``docs/figures/``:

- ``loss_curve.png``: training and validation loss of a ``make train`` run (the newest finished run under
  ``logs/train/runs`` that validated, unless ``--run`` names one), from its CSV log;
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

from santacoder.conf.run_config import project_root  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO_CODE = 'def read_lines(path):\n    """Return the lines of the file at path."""\n    <FILL-HERE>\n'


def validated(run: Path) -> bool:
    try:
        return "val/loss" in json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return False


def newest_finished_run(root: Path) -> Path:
    """The newest run under ``root`` with a ``val/loss`` in its ``metrics.json``: a run shorter than one
    validation interval (``trainer.max_steps=20``) finished but has no validation curve to draw."""
    runs = sorted((p.parent for p in root.glob("*/metrics.json")), key=lambda p: p.stat().st_mtime, reverse=True)
    for skipped, run in enumerate(runs):
        if validated(run):
            if skipped:
                print(f"skipped {skipped} newer run(s) without val/loss (shorter than one validation interval)")
            return run
    raise SystemExit(
        f"error: no finished run that validated under {root} ({len(runs)} without val/loss); "
        "run `make train` first (or pass --run <run dir>)"
    )


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
    if "train/loss" not in series:
        raise SystemExit(f"error: {run} logged no train/loss (shorter than trainer.log_every_n_steps?)")
    metrics = json.loads((run / "metrics.json").read_text())
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, style in (("train/loss", "-"), ("val/loss", "o-")):
        if name in series:  # a run named by --run may have stopped before its first validation
            steps, values = zip(*series[name], strict=True)
            ax.plot(steps, values, style, label=name)
    if "uniform_loss" in metrics:
        ax.axhline(metrics["uniform_loss"], color="grey", ls=":", label="uniform guess")
    final = f"final val/loss {metrics['val/loss']:.3f}" if "val/loss" in metrics else "no validation yet"
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title=f"make train: {final}")
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
    parser.add_argument("--out", type=Path, default=project_root() / "logs" / "figures", help="default: logs/figures")
    parser.add_argument("--update", action="store_true", help="write the README's figures (docs/figures)")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[256, 512, 1024, 2048], help="attention plot")
    args = parser.parse_args(argv)
    if args.update:
        args.out = REPO / "docs" / "figures"
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.run or newest_finished_run(project_root() / "logs" / "train" / "runs")
    loss_curve(run, args.out / "loss_curve.png")
    attention_plot(args.out / "attention.png", args.seq_lens)
    demo_screenshot(run, args.out / "demo.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
