"""Training's peak memory against the size of its prepared corpus: flat, because shards are read through memory
maps, a sample at a time, and checked in fixed-size chunks.

    python -m santacoder.bench.prepared_memory                # 4 MB and 40 MB corpora (about 3 minutes, 2 cores)
    python -m santacoder.bench.prepared_memory --smoke        # 0.5 MB and 5 MB, seconds: the suite runs this

A synthetic corpus of Python-like files (varied identifiers and numbers, so the BPE cannot shrink it to
nothing) is generated at a base size and at ten times it, prepared with one tokenizer trained on the small one,
and a short training run (`python train.py data=prepared ...`, a small model, a few steps, one data-loader
worker) is started on each in its own process. The table gives each run's peak resident memory (the process
and its children, from the kernel's accounting) and the ratio of the large corpus's to the small one's.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from santacoder.bench.common import machine, table
from santacoder.conf.compose import CONFIG_DIR, REPO
from santacoder.data.corpus import Corpus
from santacoder.text.tokenizer import train_tokenizer

WORDS = ("total", "count", "value", "index", "items", "result", "buffer", "offset", "name", "path", "node")


def synthetic_corpus(root: Path, n_bytes: int, seed: int) -> int:
    """Python-like files in ``root`` until ``n_bytes`` of text; the bytes written."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    written, i = 0, 0
    while written < n_bytes:
        lines = []
        for _ in range(rng.randint(3, 12)):
            a, b = rng.choice(WORDS), rng.choice(WORDS)
            lines.append(f"def {a}_{b}_{rng.randint(0, 9999)}({a}, {b}={rng.randint(0, 99)}):")
            lines += [f"    {a} = {a} + {b} * {rng.randint(1, 999)}  # {rng.choice(WORDS)}" for _ in range(4)]
            lines.append(f"    return {a}\n")
        text = "\n".join(lines) + "\n"
        (root / f"m{i:06d}.py").write_text(text)
        written, i = written + len(text.encode()), i + 1
    return written


def prepare_corpus(source: Path, out: Path, tokenizer_file: Path, tasks: int) -> None:
    from santacoder.data.prepare.pipeline import prepare

    cfg = OmegaConf.load(CONFIG_DIR / "prepare.yaml")
    del cfg["hydra"]
    cfg = OmegaConf.merge(cfg, {"source": str(source), "out": str(out), "tokenizer": str(tokenizer_file),
                                "tasks": tasks, "val_fraction": 0.05, "curation": {"enabled": False}})  # fmt: skip
    prepare(cfg)


def peak_training_memory(prepared: Path, work: Path, steps: int) -> tuple[int, float]:
    """Peak RSS (bytes) of a training run on ``prepared`` in a fresh process, and its wall time."""
    cmd = [sys.executable, str(REPO / "train.py"), "data=prepared", f"data.path={prepared}", "data.seq_len=128",
           "data.batch_size=8", "data.num_workers=1", "model.config.n_layer=2", "model.config.n_embd=64",
           "model.config.n_head=4", "model.config.n_inner=256", "model.config.n_positions=128",
           "trainer.accelerator=cpu", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
           "trainer.limit_val_batches=2", "logger=csv", "extras.print_config=false",
           "callbacks.progress_bar.refresh_rate=0", f"hydra.run.dir={work}",
           f"paths.data_dir={work / 'data'}"]  # fmt: skip
    script = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )  # a fresh parent: RUSAGE_CHILDREN is then this run's alone (the largest of the process and its workers)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *cmd], capture_output=True, text=True, cwd=work)
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stderr[-3000:]}")
    return int(done.stdout.strip().splitlines()[-1]) * 1024, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="0.5 MB and 5 MB, 5 steps")
    parser.add_argument("--mb", type=float, default=4.0, help="the small corpus, in MB; the large one is 10x")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tasks", type=int, default=2)
    args = parser.parse_args(argv)
    small_mb, steps = (0.5, 5) if args.smoke else (args.mb, args.steps)
    rows, peaks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = {"1x": small_mb, "10x": 10 * small_mb}
        for name, mb in sizes.items():
            synthetic_corpus(tmp / f"corpus-{name}", int(mb * 1e6), seed=0)
        tokenizer_file = tmp / "tokenizer.json"
        docs = Corpus(tmp / "corpus-1x", [".py"])
        train_tokenizer((d.text for d in docs), 2048).save(tokenizer_file)
        for name in sizes:
            prepared = tmp / f"prepared-{name}"
            prepare_corpus(tmp / f"corpus-{name}", prepared, tokenizer_file, args.tasks)
            tokens = sum(
                OmegaConf.to_container(OmegaConf.load(prepared / "manifest.json"))["splits"][s]["num_tokens"]
                for s in ("train", "val")
            )
            (tmp / f"run-{name}").mkdir()
            peak, wall = peak_training_memory(prepared, tmp / f"run-{name}", steps)
            peaks[name] = peak
            rows.append([name, f"{sizes[name]:g}", f"{tokens:,}", f"{peak / 2**20:.0f}", f"{wall:.1f}",
                         f"{peak / peaks['1x']:.3f}"])  # fmt: skip
    print(f"Peak training memory vs prepared corpus size: {machine()}; {steps} steps, a 2 x 64 model, seq 128, "
          f"batch 8, one data-loader worker, {args.tasks} shards\n")  # fmt: skip
    print(f"`python -m santacoder.bench.prepared_memory{' --smoke' if args.smoke else ''}`\n")
    print(table(["corpus", "MB", "tokens", "peak RSS (MiB)", "wall s", "vs 1x"], rows))
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
