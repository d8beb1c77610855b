#!/usr/bin/env python3
"""Measure a short real training run through the project's own code path (Hydra config -> santacoder.training.task):
tokens/s, TFLOP/s and MFU per device, peak GPU memory, final loss and fp16 loss scaling, written as JSON.

    python scripts/gpu_measure.py --precision 16-mixed --attn-impl xformers --out m.json       # santacoder-1b
    python scripts/gpu_measure.py --preset tiny --device cpu --steps 12 --seq-len 64 --micro-batch 4 --out m.json

The corpus is a few standard-library packages copied once into ``<data-dir>/corpus``; the BPE tokenizer and the
token store are cached in ``<data-dir>/cache``, so runs sharing ``--data-dir`` build them once (the first run
pays for it). santacoder-1b keeps its 49,280 embedding rows whatever the tokenizer's size, so the compute is the
real 1.1B model's. Exit status 1 (and ``"status": "error"`` in the JSON) when the run fails, OOM included.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STDLIB_PACKAGES = ("json", "email", "logging", "http", "asyncio", "unittest", "collections", "importlib", "xml")
VAL_FRACTIONS = (0.02, 0.05, 0.1, 0.2)
CHARS_PER_TOKEN = 5.0  # a pessimistic guess for a code BPE (typically 3-4): fewer tokens than really come out
METRICS = {  # JSON key: metric name returned by santacoder.training.task.train
    "tokens_per_sec": "train/tokens_per_sec",
    "device_tokens_per_sec": "train/device/tokens_per_sec",
    "tflops_per_sec": "train/device/tflops_per_sec",
    "mfu": "train/mfu",
    "loss": "train/loss",
    "val_loss": "val/loss",
    "loss_scale": "train/loss_scale",
    "skipped_steps": "train/skipped_steps",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=("santacoder_1b", "tiny"), default="santacoder_1b")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument(
        "--precision",
        default=None,
        help="trainer.precision (cuda default: the preset's, 16-mixed; on cpu: 32-true, or bf16-true for bf16-*)",
    )
    p.add_argument("--attn-impl", default="auto", help="model.attn_impl: auto | xformers | sdpa | math")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps (validation once, after the last)")
    p.add_argument("--micro-batch", type=int, default=2, help="sequences per step (SantaCoder's micro batch: 2)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--vocab-size", type=int, default=8192, help="BPE size to train (the model keeps its rows)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--data-dir", type=Path, default=REPO / ".gpu_check" / "data", help="corpus + tokenizer cache")
    p.add_argument("--run-dir", type=Path, default=None, help="paths.output_dir (default: next to --out)")
    p.add_argument("--out", type=Path, default=None, help="JSON result (always printed as the last stdout line)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, appended last")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2 (throughput is averaged over a window of batches)")
    return args


def prepare_corpus(data_dir: Path) -> Path:
    """Copy a few standard-library packages into ``<data_dir>/corpus`` once (atomically: a crashed copy never
    looks complete). Copies keep mtimes, so the corpus fingerprint, and with it the token cache, stays valid."""
    from santacoder.data.corpus import default_source

    corpus = data_dir / "corpus"
    if corpus.is_dir():
        return corpus
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f"corpus.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "test", "tests")
    for package in STDLIB_PACKAGES:
        src = default_source() / package
        if src.is_dir():
            shutil.copytree(src, tmp / package, ignore=ignore)
    try:
        tmp.rename(corpus)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return corpus


def choose_val_fraction(corpus: Path, seq_len: int, micro_batch: int) -> tuple[float, dict]:
    """The smallest of VAL_FRACTIONS whose validation documents hold (pessimistically) at least one micro batch
    of ``seq_len + 1``-token samples, and the training split at least one step. The split is by document name,
    so this is exact up to the characters-per-token guess."""
    from santacoder.data.corpus import Corpus, is_validation

    sizes = [(d.name, len(d.text)) for d in Corpus(corpus, (".py",))]
    total = sum(n for _, n in sizes)
    need = micro_batch * (seq_len + 1) * CHARS_PER_TOKEN
    for fraction in VAL_FRACTIONS:
        val = sum(n for name, n in sizes if is_validation(name, fraction))
        if val >= need and total - val >= need:
            break
    info = {"corpus_docs": len(sizes), "corpus_chars": total, "val_chars": val}
    return fraction, info


def build_overrides(args: argparse.Namespace, corpus: Path, val_fraction: float) -> tuple[list[str], str]:
    window = min(10, max(2, args.steps - 2))  # the last batches: the first ones pay for warm-up
    if args.device == "cpu":
        precision = "bf16-true" if (args.precision or "").startswith("bf16") else "32-true"
    else:
        precision = args.precision
    overrides = []
    if args.preset == "santacoder_1b":
        overrides.append("experiment=santacoder_1b")
    else:
        overrides.append(f"model.config.n_positions={args.seq_len}")
        if args.device == "cuda":
            overrides.append("trainer=gpu")
    overrides += [
        "trainer.devices=1",
        *([f"trainer.precision={precision}"] if precision else []),
        *(["trainer.accelerator=cpu"] if args.device == "cpu" else []),
        f"model.attn_impl={args.attn_impl}",
        f"data.source={corpus}",
        "data.tokenizer=null",
        f"data.vocab_size={args.vocab_size}",
        f"data.batch_size={args.micro_batch}",
        f"data.seq_len={args.seq_len}",
        f"data.num_workers={args.num_workers}",
        f"data.val_fraction={val_fraction}",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.steps}",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=5",
        f"callbacks.throughput.window_size={window}",
        "callbacks.model_checkpoint.save_top_k=0",
        "~callbacks.run_checkpoint",  # measurements only: no 13 GB last.ckpt of the 1.1B model
        "callbacks.progress_bar.refresh_rate=0",
        "logger=csv",
        "extras.print_config=false",
        *args.overrides,
    ]
    return overrides, precision


def compose(overrides: list[str], output_dir: Path, data_dir: Path):
    """configs/train.yaml with ``overrides``, writing into ``output_dir`` (no Hydra run here)."""
    import santacoder

    return santacoder.compose([*overrides, f"paths.data_dir={data_dir}"], output_dir=output_dir, resolve=False)


def versions() -> dict:
    import lightning
    import torch

    try:
        from importlib.metadata import version

        xformers = version("xformers")
    except Exception:
        xformers = None
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "lightning": lightning.__version__,
        "xformers": xformers,
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def measure(args: argparse.Namespace, result: dict) -> None:
    import torch

    from santacoder.training.task import train

    data_dir = args.data_dir.resolve()
    t0 = time.perf_counter()
    corpus = prepare_corpus(data_dir)
    val_fraction, corpus_info = choose_val_fraction(corpus, args.seq_len, args.micro_batch)
    result.update(corpus_info, val_fraction=val_fraction)
    overrides, precision = build_overrides(args, corpus, val_fraction)
    result.update(precision=precision or "preset default", overrides=overrides)
    run_dir = args.run_dir or (args.out.with_suffix(".run") if args.out else data_dir / "runs" / str(os.getpid()))
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = compose(overrides, run_dir.resolve(), data_dir)
    result["precision"] = str(cfg.trainer.precision)
    cache = data_dir / "cache"
    cached = cache.is_dir() and any(cache.glob("tokenizer-*.json"))
    result["data_cached"] = cached
    if cached:
        print(f"data: tokenizer and token store reused from {cache}", flush=True)
    else:
        print(f"data: tokenizer and token store built now in {cache} (this run pays for it; later runs", flush=True)
        print("      sharing --data-dir reuse them)", flush=True)
    on_cuda = args.device == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    metrics = train(cfg)
    result["train_wall_s"] = round(time.perf_counter() - t1, 2)
    result["setup_wall_s"] = round(t1 - t0, 2)
    for key, name in METRICS.items():
        if name in metrics:
            result[key] = metrics[name]
    result["steps_done"] = metrics.get("step")
    result["num_params"] = metrics.get("num_params")
    if on_cuda:
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    problems = []
    if not result.get("tokens_per_sec", 0) > 0:
        problems.append("no positive train/tokens_per_sec")
    if not math.isfinite(result.get("loss", math.nan)):
        problems.append(f"train/loss is {result.get('loss')}")
    if result["steps_done"] != args.steps:
        problems.append(f"{result['steps_done']} of {args.steps} steps done")
    if problems:
        raise RuntimeError("; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PROJECT_ROOT", str(REPO))
    os.environ.setdefault("WANDB_MODE", "offline")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result: dict = {
        "preset": args.preset,
        "device": args.device,
        "attn_impl": args.attn_impl,
        "steps": args.steps,
        "micro_batch": args.micro_batch,
        "seq_len": args.seq_len,
        "status": "error",
    }
    start = time.perf_counter()
    try:
        result.update(versions())
        measure(args, result)
        result["status"] = "ok"
    except Exception as e:  # an OOM or a config error is a result too: written, and the exit status says so
        traceback.print_exc()
        lines = str(e).strip().splitlines()
        result["error"] = f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
    result["wall_s"] = round(time.perf_counter() - start, 2)
    text = json.dumps(result, sort_keys=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(text, flush=True)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
