"""Data preparation's speed: ``prepare`` (datatrove's local executor, one shard per task) against the in-run
tokenization that training does when it is given no prepared directory.

    python -m santacoder.bench.prepare_throughput             # fim_pipeline's packages (~2.4 MB of .py), 5 rounds
    python -m santacoder.bench.prepare_throughput --smoke     # seconds: the suite runs this

One BPE is trained once on the corpus and saved to a tokenizer.json, which every variant loads. The reference is
the in-run path (``build_token_stores`` over a ``Corpus``, one process); the others are ``prepare`` with ``--tasks``
shards and each of ``--workers`` processes at once. Every run writes into a fresh directory and is timed whole:
reading the files, tokenizing, writing. ``prepare`` also pays for what the in-run path does not do: fingerprinting
the sources, per-document metadata (docs.jsonl), datatrove's logs and statistics, the manifest, and processes: a
``multiprocess`` manager in every run and, with more than one worker, a pool whose processes come from a forkserver
(started once, in the untimed warm-up round; its time is the "first run" column). All variants tokenize with the
tokenizers library's ``encode_batch``, which runs on a Rust thread pool of its own (all cores unless
RAYON_NUM_THREADS says otherwise) inside every process. The agreement check: each prepare gives the documents and
tokens of the in-run path, per split.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from santacoder.bench.common import machine, table
from santacoder.bench.fim_pipeline import PACKAGES
from santacoder.conf.compose import CONFIG_DIR
from santacoder.data.corpus import Corpus, default_source
from santacoder.data.token_store import build_token_stores
from santacoder.text.tokenizer import CodeTokenizer, train_tokenizer

IN_RUN = "in-run (build_token_stores)"
VAL_FRACTION = 0.02  # the same split in every variant (by document name)
SPLITS = ("train", "val")


def in_run(sources: list[Path], tokenizer_file: Path, out: Path) -> dict:
    """Training's path: read the corpus and tokenize it into a train and a validation store, in this process."""
    tokenizer = CodeTokenizer.from_file(tokenizer_file)
    documents = (doc for source in sources for doc in Corpus(source, [".py"]))
    stores = build_token_stores(documents, tokenizer, out / "store", VAL_FRACTION)
    return {split: (stores[split].num_docs, stores[split].num_tokens) for split in SPLITS}


def prepared(sources: list[Path], tokenizer_file: Path, tasks: int, workers: int, out: Path) -> dict:
    """``prepare`` as ``santacoder prepare`` runs it: configs/prepare.yaml with the source, tasks and workers, without
    curation."""
    from santacoder.data.prepare.pipeline import prepare

    cfg = OmegaConf.load(CONFIG_DIR / "prepare.yaml")
    del cfg["hydra"]
    cfg = OmegaConf.merge(cfg, {
        "source": [str(s) for s in sources], "out": str(out / "prepared"), "tokenizer": str(tokenizer_file),
        "extensions": [".py"], "val_fraction": VAL_FRACTION, "tasks": tasks, "executor": {"workers": workers},
        "curation": {"enabled": False},  # the same documents as the in-run path (curation: bench/curation.py)
    })  # fmt: skip
    manifest = prepare(cfg)
    return {split: (manifest["splits"][split]["num_docs"], manifest["splits"][split]["num_tokens"]) for split in SPLITS}


def measure(variants: dict[str, Callable[[Path], dict]], root: Path, rounds: int) -> tuple[dict, dict, dict]:
    """Alternating rounds after one untimed warm-up round, each run into a fresh directory (made and removed
    outside the timing): the median seconds of each variant, its warm-up seconds, and its counts."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    first, counts = {}, {}
    for i in range(1 + rounds):
        for k, (name, run) in enumerate(variants.items()):
            out = Path(tempfile.mkdtemp(prefix=f"r{i}v{k}-", dir=root))
            start = time.perf_counter()
            counts[name] = run(out)
            seconds = time.perf_counter() - start
            shutil.rmtree(out)
            if i == 0:
                first[name] = seconds
            else:
                times[name].append(seconds)
    return {name: statistics.median(ts) for name, ts in times.items()}, first, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one small package, vocabulary 1024, one round")
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), help="standard-library packages to read")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--tasks", type=int, default=2, help="prepare's tasks (shards)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="prepare's processes at once, each")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, after one warm-up round")
    args = parser.parse_args(argv)
    packages, vocab_size, rounds = args.packages, args.vocab_size, args.rounds
    if args.smoke:
        packages, vocab_size, rounds = ["json"], 1024, 1
    try:
        import multiprocess  # datatrove's pools
    except ImportError as e:
        print(f"skipped: prepare needs datatrove ({e}); install it with: pip install 'santacoder[data]'")
        return 0
    # `python prepare.py` and `santacoder prepare` start from a file, which the forkserver imports once, so the pool's
    # processes are forked with the project's modules loaded. Under `python -m` it has no file to import and every
    # pool process would import this module's imports, torch among them, anew: preload them, as the commands do.
    preload = ["santacoder.bench.fim_pipeline", "santacoder.data.prepare.pipeline"]
    multiprocess.set_forkserver_preload(["__main__", *preload])

    sources = [default_source() / package for package in packages]
    docs = [doc for source in sources for doc in Corpus(source, [".py"])]
    corpus_bytes = sum(len(doc.text.encode("utf-8")) for doc in docs)
    variants: dict[str, Callable[[Path], dict]] = {}
    processes = {IN_RUN: 1}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokenizer_file = root / "tokenizer.json"
        train_tokenizer((doc.text for doc in docs), vocab_size).save(tokenizer_file)
        variants[IN_RUN] = lambda out: in_run(sources, tokenizer_file, out)
        for workers in args.workers:
            name = f"prepare, {args.tasks} tasks, {workers} worker{'s' if workers > 1 else ''}"
            variants[name] = lambda out, w=workers: prepared(sources, tokenizer_file, args.tasks, w, out)
            processes[name] = min(workers, args.tasks)
        seconds, first, counts = measure(variants, root, rounds)

    reference = seconds[IN_RUN]
    rows = []
    for name, s in seconds.items():
        tokens = sum(n_tokens for _, n_tokens in counts[name].values())
        mb_per_s = corpus_bytes / 1e6 / s
        same = "yes" if counts[name] == counts[IN_RUN] else "NO"
        rows.append([
            name, processes[name], f"{s:.2f}", f"{first[name]:.2f}", f"{mb_per_s:.2f}", f"{tokens / s:,.0f}",
            f"{mb_per_s / processes[name]:.2f}", f"{reference / s:.2f}x", same,
        ])  # fmt: skip
    n_docs, n_tokens = (sum(c[i] for c in counts[IN_RUN].values()) for i in (0, 1))
    threads = os.environ.get("RAYON_NUM_THREADS") or f"{os.cpu_count()} (all cores)"
    print(
        f"Data preparation: {machine()}; standard-library packages {', '.join(packages)}: {n_docs:,} documents, "
        f"{corpus_bytes / 1e6:.2f} MB of .py, {n_tokens:,} tokens "
        f"(vocabulary {vocab_size}, <|endoftext|> included); val fraction {VAL_FRACTION}; median of {rounds} "
        f"round(s) after one warm-up round; tokenizer threads per process: {threads}\n"
    )
    print(table(["variant", "processes", "wall s", "first run s", "MB/s", "tokens/s", "MB/s per process",
                 "speed vs in-run", "same docs and tokens"], rows))  # fmt: skip
    print(
        "\nMB = 10^6 bytes of UTF-8 text of the documents tokenized; wall time of the whole run (reading, "
        "tokenizing, writing; for prepare also its process start-up, logs and manifest, see the module's docstring)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
