"""The ``santacoder`` command.

    santacoder info PATH                          layout, shape, parameter count and dtype of a checkpoint
    santacoder convert --to hf SOURCE OUT_DIR     any supported checkpoint -> transformers GPTBigCode directory
    santacoder convert --to ckpt SOURCE OUT.ckpt  any supported checkpoint -> checkpoint of this project

Each subcommand registers itself in ``build_parser`` through an ``add_<name>`` function that sets the
handler as ``func``; bad input (a ``ConfigError``) is printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from santacoder.errors import ConfigError
from santacoder.interop.loading import DTYPES


def add_info(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe a checkpoint: layout, shape, parameter count, dtype",
        description="Describe a checkpoint without loading its weights: layout, model shape, parameter count "
        "(tied LM head counted once) and the dtype its weights are stored in.",
    )
    parser.add_argument("path", help="a .ckpt of this project, a Hugging Face directory, or a Megatron-LM checkpoint")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    parser.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from santacoder.interop import inspect_checkpoint

    info = inspect_checkpoint(args.path)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    c = info.config
    attention = "multi-query (1 shared K/V head)" if c.multi_query else f"multi-head ({c.n_head} K/V heads)"
    rows = [
        ("path", str(info.path)),
        ("layout", f"{info.layout} ({info.description})"),
        ("n_layer", c.n_layer),
        ("n_embd", c.n_embd),
        ("n_head", f"{c.n_head} (head_dim {c.head_dim})"),
        ("attention", attention),
        ("n_inner", c.inner_dim),
        ("vocab_size", c.vocab_size),
        ("n_positions", c.n_positions),
        ("parameters", f"{info.num_params:,} ({info.num_params / 1e6:.1f}M, tied LM head counted once)"),
        ("dtype", str(info.dtype).removeprefix("torch.")),
    ]
    for name, value in rows:
        print(f"{name + ':':<13}{value}")
    return 0


def add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint to a Hugging Face directory or to this project's .ckpt",
        description="Convert any supported checkpoint (this project's .ckpt, transformers GPTBigCode, original "
        "bigcode/santacoder, Megatron-LM) to a transformers GPTBigCode directory (--to hf) or to a checkpoint "
        "of this project (--to ckpt).",
    )
    parser.add_argument("--to", required=True, choices=("hf", "ckpt"), help="the output layout")
    parser.add_argument("source", help="the checkpoint to convert (file or directory)")
    parser.add_argument("out", help="output directory (--to hf) or .ckpt file (--to ckpt; a directory gets model.ckpt)")
    parser.add_argument(
        "--tokenizer",
        help="tokenizer.json (or a directory holding one) to write next to the model (--to hf); by default the "
        "source directory's tokenizer.json, if it has one",
    )
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), help="dtype of the written weights (default: as the source stores them)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output (never the input)")
    parser.set_defaults(func=run_convert)


def _source_tokenizer(source: Path):
    """The tokenizer.json next to a Hugging Face source, if there is one that FIM can use."""
    from santacoder.tokenizer import load_tokenizer

    directory = source if source.is_dir() else source.parent
    if not (directory / "tokenizer.json").is_file():
        return None
    try:
        return load_tokenizer(directory / "tokenizer.json")
    except ConfigError as e:
        print(f"santacoder: warning: not copying the source's tokenizer: {e}", file=sys.stderr)
        return None


def run_convert(args: argparse.Namespace) -> int:
    from santacoder.interop import convert

    tokenizer = args.tokenizer
    if tokenizer is None and args.to == "hf":
        tokenizer = _source_tokenizer(Path(args.source))
    written = convert(args.source, args.out, to=args.to, tokenizer=tokenizer, dtype=args.dtype, force=args.force)
    print(f"wrote {written}")
    if args.to == "hf" and tokenizer is None:
        print("note: no tokenizer written; pass --tokenizer path/to/tokenizer.json to include one", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="santacoder", description="SantaCoder-style code models: inspect and convert checkpoints."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_info, add_convert):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``santacoder`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"santacoder {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
