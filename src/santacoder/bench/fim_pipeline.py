"""The FIM data pipeline's speed: packed samples per second that one data-loader worker produces.

    python -m santacoder.bench.fim_pipeline               # seq 2048, FIM rate 0.5 and 0 (about a minute)
    python -m santacoder.bench.fim_pipeline --smoke       # seconds: the suite runs this

A few standard-library packages are tokenized once (a BPE trained on them, as `make train` does) into a token
store in a temporary directory. Each variant then reads samples from ``PackedFIMDataset`` exactly as a worker
does (memmap slice, FIM transform with its seeded randomness, labels with ``<fim-pad>`` ignored), in
alternating rounds over the same samples. The reference is plain packing (FIM rate 0): the ratio is what the
FIM transform costs. One worker is one process: ``data.num_workers`` multiplies the rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from santacoder.bench.common import interleaved, machine, table
from santacoder.data.corpus import Corpus, default_source
from santacoder.data.dataset import PackedFIMDataset
from santacoder.data.token_store import build_token_stores
from santacoder.text.tokenizer import train_tokenizer

PACKAGES = ("json", "email", "asyncio", "logging", "unittest", "http", "importlib")


def token_store(out: Path, packages: tuple[str, ...], vocab_size: int):
    docs = [doc for package in packages for doc in Corpus(default_source() / package, [".py"])]
    tokenizer = train_tokenizer((d.text for d in docs), vocab_size)
    stores = build_token_stores(docs, tokenizer, out / "store", val_fraction=0.0)
    return stores["train"], tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one package, seq 256, one round")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=200, help="samples per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a worker is one process with one thread
    packages, seq_len, samples, rounds = PACKAGES, args.seq_len, args.samples, args.rounds
    if args.smoke:
        packages, seq_len, samples, rounds = ("json",), 256, 20, 1
    with tempfile.TemporaryDirectory() as tmp:
        store, tokenizer = token_store(Path(tmp), packages, vocab_size=8192 if not args.smoke else 1024)
        rates = {"FIM rate 0.5, SPM 0.5 (SantaCoder)": 0.5, "FIM rate 1.0": 1.0, "no FIM (rate 0)": 0.0}
        datasets = {
            name: PackedFIMDataset(store, tokenizer, seq_len, fim_rate=rate, fim_spm_rate=0.5, seed=0)
            for name, rate in rates.items()
        }
        n = min(samples, len(next(iter(datasets.values()))))
        if n == 0:
            raise SystemExit(f"the corpus holds fewer than {seq_len + 1} tokens")

        def read(dataset):
            for i in range(n):
                dataset[i]

        seconds = interleaved({name: lambda d=d: read(d) for name, d in datasets.items()}, rounds=rounds)
    reference = seconds["no FIM (rate 0)"]
    rows = [[name, f"{n * seq_len / s:,.0f}", f"{n / s:,.0f}", f"{reference / s:.2f}x"] for name, s in seconds.items()]
    print(f"FIM pipeline: {machine()}; one worker, seq {seq_len}, {n} samples per round, median of {rounds}\n")
    print(table(["variant", "tokens/s", "samples/s", "speed vs no FIM"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
