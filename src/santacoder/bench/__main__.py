"""Run every benchmark, each in its own process, and write their tables to one markdown file.

    python -m santacoder.bench            # `make bench`: logs/bench/results.md (~11 min, 2 cores)
    python -m santacoder.bench --update   # `make bench UPDATE=1`: the committed bench/results.md
    python -m santacoder.bench --smoke --no-compile --out /tmp/r.md  # seconds per benchmark: the suite runs this

Exit status 1 if any benchmark fails (its output is kept in the file, under its heading).
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

from santacoder.conf.compose import REPO

# (heading, module of santacoder.bench, its arguments in a full run)
BENCHMARKS = [
    ("Training step: ours vs transformers' GPTBigCode", "train_step", ["--compile"]),
    ("FIM data pipeline, one worker", "fim_pipeline", []),
    ("Attention forward + backward, per backend", "attention", []),
    ("Decoding: santacoder.generate vs transformers' generate", "decode", []),
    ("Data preparation: prepare (datatrove) vs in-run tokenization", "prepare_throughput", []),
    ("Curation: each stage, and the curated prepare", "curation", []),
    ("Attribution index: build, size and queries at ~90M tokens", "attribution", []),
]


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True)
    return (done.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="pass --smoke to every benchmark")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "bench" / "results.md")
    parser.add_argument("--update", action="store_true", help="write the committed bench/results.md instead")
    parser.add_argument("--only", nargs="+", choices=[b[1] for b in BENCHMARKS], help="benchmarks to run")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile'd training step")
    args = parser.parse_args(argv)
    if args.update:
        args.out = REPO / "bench" / "results.md"
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        "# Benchmark results\n",
        f"`make bench` ({'smoke run, ' if args.smoke else ''}{today}, commit {commit()}). Each table compares "
        "against a reference measured in the same process, in alternating rounds; the ratios are the result, "
        "absolute rates depend on the machine named above each table.\n",
    ]
    failed = []
    for title, name, extra in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        if args.no_compile:
            extra = [a for a in extra if a != "--compile"]
        cmd = [sys.executable, "-m", f"santacoder.bench.{name}", *extra, *(["--smoke"] if args.smoke else [])]
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        start = time.monotonic()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        seconds = time.monotonic() - start
        print(done.stdout, flush=True)
        body = done.stdout.strip()
        if done.returncode != 0:
            failed.append(name)
            body += f"\n\n**Failed** (exit {done.returncode}):\n\n```\n{done.stderr.strip()[-3000:]}\n```"
            print(done.stderr[-3000:], file=sys.stderr)
        sections.append(
            f"## {title}\n\n`python -m santacoder.bench.{' '.join([name, *extra])}` ({seconds:.0f} s)\n\n{body}\n"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(sections))
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
