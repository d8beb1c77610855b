"""``santacoder index`` and ``santacoder attribute``: the attribution index in the shell. The index's own modules
(infini-gram, tantivy: the ``attribution`` extra) are imported only when a command runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from santacoder.errors import ConfigError

EXTRA = "install the attribution extra: pip install 'santacoder[attribution]'"


def search_modules():
    try:
        from santacoder.search import attribution, index
    except ImportError as e:
        raise ConfigError(f"the attribution index needs infini-gram and tantivy ({e}); {EXTRA}") from None
    return attribution, index


def add_index(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index",
        help="build the attribution index of the tokens a run (or prepared data) trained on",
        description="A suffix array (exact spans) and a BM25 index (edited copies) over the train token stores of "
        "a run directory (found through its saved config) or a prepared directory; one shard at a time, each "
        "skipped when already built (a killed build resumes).",
    )
    parser.add_argument("source", help="a run directory or a prepared directory")
    parser.add_argument("--out", help="where to write it (default: SOURCE/index)")
    parser.add_argument("--mem-gb", type=float, default=1.0, help="memory for sorting the suffix array, per part")
    parser.add_argument("--cpus", type=int, default=2, help="parts sorted at once")
    parser.set_defaults(func=run_index)


def run_index(args: argparse.Namespace) -> int:
    _, index = search_modules()
    if args.mem_gb <= 0 or args.cpus < 1:
        raise ConfigError(f"--mem-gb={args.mem_gb} and --cpus={args.cpus} must be positive")
    source = Path(args.source)
    if not source.exists():
        raise ConfigError(f"{args.source!r} does not exist: give a run directory or a prepared directory")
    record = index.build_index(source, args.out, mem_bytes=int(args.mem_gb * 2**30), cpus=args.cpus)
    out = Path(args.out) if args.out else source / "index"
    per_token = sum(s["exact_bytes"] for s in record["shards"]) / max(record["num_tokens"], 1)
    print(f"indexed {record['num_docs']:,} documents, {record['num_tokens']:,} tokens in {len(record['shards'])} "
          f"shard(s) into {out} ({per_token:.2f} bytes per token of suffix array)")  # fmt: skip
    print(f"attribute code with: santacoder attribute {out} <file>")
    return 0


def add_attribute(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "attribute",
        help="where could this code come from? verbatim spans and similar files in the training data",
        description="Tokenize the snippet with the index's tokenizer, report each verbatim span of at least "
        "--min-len tokens found in the training tokens (longest first, with its documents' repository, path and "
        "license), then similar documents, then a one-line verdict.",
    )
    parser.add_argument("index", help="an index directory, or a run or prepared directory holding index/")
    parser.add_argument("file", nargs="?", default="-", help="the code to attribute (- for standard input)")
    parser.add_argument("--min-len", type=int, default=32, help="shortest verbatim span reported, in tokens")
    parser.add_argument("--json", action="store_true", help="the whole answer as JSON, for tools")
    parser.add_argument("--audit", choices=["humaneval"], help="count each benchmark solution in the training data")
    parser.set_defaults(func=run_attribute)


def index_dir(given: str) -> Path:
    path = Path(given).expanduser()
    for candidate in (path, path / "index"):
        if (candidate / "index.json").is_file():
            return candidate
    raise ConfigError(
        f"{given!r} holds no attribution index (no index.json in it or in its index/): build one with "
        "`santacoder index <run dir | prepared dir>`"
    )


def open_index(given: str):
    """The ``AttributionIndex`` of an index directory, or of the run or prepared directory holding index/."""
    attribution, _ = search_modules()
    return attribution.AttributionIndex(index_dir(given))


def read_snippet(file: str) -> str:
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {file!r}: {e.strerror or e}") from None
    if b"\0" in data:
        raise ConfigError(f"{file!r} is a binary file (it holds NUL bytes): give source code")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{file!r} is not UTF-8 text ({e.reason} at byte {e.start}): give source code") from None


def run_attribute(args: argparse.Namespace) -> int:
    attribution, _ = search_modules()
    if args.min_len < 1:
        raise ConfigError(f"--min-len={args.min_len} must be a positive number of tokens")
    index = open_index(args.index)
    if args.audit:
        from santacoder.search.audit import audit_humaneval

        rows = audit_humaneval(index)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                if row["count"]:
                    print(f"{row['task_id']}: {row['count']} occurrence(s) of its {row['tokens']}-token solution"
                          + ("" if row["flagged"] else " (too short to mean anything)"))  # fmt: skip
            flagged = sum(row["flagged"] for row in rows)
            print(f"humaneval: {flagged} of {len(rows)} solutions occur verbatim in the training data")
        return 0
    answer = attribution.attribute(read_snippet(args.file), index, min_len=args.min_len)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
        return 0
    for k, span in enumerate(answer.spans, 1):
        when = ""
        if span.first_step is not None and span.trained_on is False:
            when = f"; not trained on yet (step {span.first_step} of the run's order, after its last step)"
        elif span.first_step is not None:
            when = f"; first trained on at step {span.first_step}"
        print(f"span {k}: {span.tokens} tokens, {len(span.text)} characters, {span.count} occurrence(s){when}")
        for line in span.text.splitlines()[:12]:
            print(f"  > {line}")
        for source in span.sources[:5]:
            print(f"    {source.name} ({source.license or 'unknown license'}, {source.language or '?'})")
    for similar in answer.similar[:5]:
        print(f"similar: {similar.source.name} ({similar.containment:.0%} of the snippet's 5-grams, "
              f"{similar.source.license or 'unknown license'})")  # fmt: skip
    print(answer.verdict)
    return 0
