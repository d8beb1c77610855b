"""The ``santacoder`` command.

    santacoder info PATH                          layout, shape, parameter count and dtype of a checkpoint
    santacoder convert --to hf SOURCE OUT_DIR     any supported checkpoint -> transformers GPTBigCode directory
    santacoder convert --to ckpt SOURCE OUT.ckpt  any supported checkpoint -> checkpoint of this project
    santacoder generate MODEL --prompt TEXT       continue a prompt (or --file F), streaming to the terminal
    santacoder infill MODEL --prefix P --suffix S fill in the middle (or --file F with one <FILL-HERE>)

Each subcommand registers itself in ``build_parser`` through an ``add_<name>`` function that sets the
handler as ``func``; bad input (a ``ConfigError``) is printed as one line, without a traceback, and so is Ctrl-C
(exit status 130, what was streamed so far kept). Bad option values are argparse's errors, before anything loads.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from santacoder.checkpoints.loading import (
    DTYPES,
    convert,
    inspect_checkpoint,
    load,
    load_tokenizer,
    read_checkpoint_config,
)
from santacoder.errors import ConfigError
from santacoder.inference.completion import (
    FILL_MARKER,
    check_prompt_size,
    infill_prompt,
    stream_generate,
)
from santacoder.search.commands import add_attribute, add_index

DEVICES = "cpu, cuda, cuda:N or mps"


def _checked(convert, ok, requirement: str):
    """An argparse type: the text converted, or argparse's one-line error naming it and what is asked."""

    def parse(text: str):
        try:
            value = convert(text)
            if ok(value):
                return value
        except ValueError:  # not a number at all
            pass
        raise argparse.ArgumentTypeError(f"{text!r} is not {requirement}")

    return parse


TEMPERATURE = _checked(float, lambda t: 0 <= t < math.inf, "a finite number >= 0 (0: greedy)")
TOP_P = _checked(float, lambda p: 0 < p <= 1, "a number in (0, 1], e.g. 0.95")  # NaN fails every comparison
AT_LEAST_ONE = _checked(int, lambda n: n >= 1, "a whole number >= 1")
SEED = _checked(int, lambda n: 0 <= n < 2**64, "a whole number from 0 to 2**64 - 1")  # what torch seeds take


def _text(text: str) -> str:
    """An argparse type: text the tokenizer can take (a terminal's invalid UTF-8 comes as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("the text is not valid UTF-8; pass it in a UTF-8 --file") from None
    return text


def _device(text: str) -> str:
    """An argparse type: a device torch can use on this machine, checked before a model is loaded onto it."""
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use {DEVICES}")
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: torch finds no CUDA GPU on this machine; use --device cpu")
        if int(text.partition(":")[2] or 0) >= count:
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
    if text == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("'mps': torch finds no Apple GPU (MPS) on this machine; use --device cpu")
    return text


def add_info(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe a checkpoint: layout, shape, parameter count, dtype, step, val/loss, tokenizer",
        description="Describe a checkpoint without loading its weights: layout, model shape, parameter count "
        "(tied LM head counted once), the dtype its weights are stored in, and for a training checkpoint its step, "
        "last val/loss and whether it carries its tokenizer.",
    )
    parser.add_argument("path", help="a .ckpt of this project, a Hugging Face directory, or a Megatron-LM checkpoint")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    parser.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
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
        *info.details.items(),
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
        help="tokenizer.json (or a directory holding one) to go with the model (--to hf: beside it; --to ckpt: "
        "inside it); by default the source's own: its tokenizer.json, or the one its .ckpt carries",
    )
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), help="dtype of the written weights (default: as the source stores them)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output (never the input)")
    parser.set_defaults(func=run_convert)


def _source_tokenizer(source: Path):
    """The tokenizer the source has: a tokenizer.json beside a Hugging Face model, or the one a checkpoint of
    this project carries (Megatron-LM checkpoints have none)."""
    directory = source if source.is_dir() else source.parent
    if (directory / "tokenizer.json").is_file():
        try:
            return load_tokenizer(directory / "tokenizer.json")
        except ConfigError as e:
            print(f"santacoder: warning: not copying the source's tokenizer: {e}", file=sys.stderr)
            return None
    try:
        return load_tokenizer(source)
    except ConfigError:
        return None


def run_convert(args: argparse.Namespace) -> int:
    tokenizer = args.tokenizer if args.tokenizer is not None else _source_tokenizer(Path(args.source))
    try:
        written = convert(args.source, args.out, to=args.to, tokenizer=tokenizer, dtype=args.dtype, force=args.force)
    except OSError as e:  # e.g. no permission to write there, or a full disk
        where = f": {e.filename!r}" if e.filename else ""
        raise ConfigError(f"cannot convert {args.source!r} to {args.out!r}: {e.strerror or e}{where}") from None
    print(f"wrote {written}")
    if tokenizer is None:
        print("note: no tokenizer written; pass --tokenizer path/to/tokenizer.json to include one", file=sys.stderr)
    return 0


def _add_model_and_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a run directory, a .ckpt, a Hugging Face directory or a Megatron-LM checkpoint")
    parser.add_argument("--tokenizer", help="tokenizer.json (default: the one the model carries or has beside it)")
    parser.add_argument("--max-new-tokens", type=AT_LEAST_ONE, default=128)
    parser.add_argument("--temperature", type=TEMPERATURE, default=0.0, help="0: greedy (default)")
    parser.add_argument("--top-k", type=AT_LEAST_ONE)
    parser.add_argument("--top-p", type=TOP_P)
    parser.add_argument("--seed", type=SEED)
    parser.add_argument("--stop", action="append", default=[], help="stop before this string (repeatable)")
    parser.add_argument("--device", type=_device, default="cpu", help=DEVICES)


def add_generate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="continue a prompt, streaming the text")
    _add_model_and_sampling(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", type=_text, help="the text to continue")
    source.add_argument("--file", help="a file whose text is the prompt")
    parser.set_defaults(func=run_generate)


def add_infill(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("infill", help="fill in the middle between a prefix and a suffix")
    _add_model_and_sampling(parser)
    parser.add_argument("--prefix", type=_text, help="the code before the gap")
    parser.add_argument("--suffix", type=_text, help="the code after the gap")
    parser.add_argument("--file", help=f"a file with one {FILL_MARKER} marker where the gap is")
    parser.add_argument("--mode", choices=("psm", "spm"), default="psm", help="FIM layout of the prompt")
    parser.set_defaults(func=run_infill)


def _model_and_tokenizer(args: argparse.Namespace, *prompt: str):
    """The model and its tokenizer, checked in the order that costs least: the model path and its context (its
    config only; a missing model is named as such, not as a missing tokenizer), then the ``prompt``'s parts
    against that context in bytes, then the tokenizer and the weights."""
    n_positions = read_checkpoint_config(args.model).n_positions
    if prompt:
        if args.max_new_tokens >= n_positions:
            raise ConfigError(
                f"--max-new-tokens {args.max_new_tokens} leaves no room for the prompt in the model's context of "
                f"{n_positions} tokens (n_positions); ask for at most {n_positions - 1}"
            )
        check_prompt_size(n_positions, *prompt)
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    return load(args.model, device=args.device), tokenizer


def _check_fits(model, ids: list[int], max_new_tokens: int) -> None:
    n_positions = model.config.n_positions
    if len(ids) + max_new_tokens > n_positions:
        advice = f"ask for at most {n_positions - len(ids)}" if len(ids) < n_positions else "shorten the prompt"
        raise ConfigError(
            f"the prompt is {len(ids)} tokens and --max-new-tokens is {max_new_tokens}: {len(ids) + max_new_tokens} "
            f"is more than the model's context of {n_positions} tokens (n_positions); {advice}"
        )


def _sampling(args: argparse.Namespace) -> dict:
    return dict(
        max_new_tokens=args.max_new_tokens,
        stop=args.stop,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read --file {path!r}: {e}") from None


def _stream(pieces) -> int:
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except ValueError as e:  # a value the sampler refuses
        raise ConfigError(str(e)) from None
    except KeyboardInterrupt:  # Ctrl-C: the text so far is kept and ends its line, as a finished one does
        sys.stdout.write("\n")
        raise
    sys.stdout.write("\n")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    prompt = args.prompt if args.prompt is not None else _read(args.file)
    if not prompt:
        raise ConfigError("the prompt is empty: give the code to continue")
    model, tokenizer = _model_and_tokenizer(args, prompt)
    sampling = _sampling(args)
    max_new_tokens = sampling.pop("max_new_tokens")
    ids = tokenizer.encode(prompt)
    _check_fits(model, ids, max_new_tokens)
    return _stream(stream_generate(model, tokenizer, ids, max_new_tokens, **sampling))


def split_at_marker(text: str) -> tuple[str, str]:
    """(prefix, suffix) around the one ``<FILL-HERE>`` of ``text``; a ConfigError for none or several."""
    count = text.count(FILL_MARKER)
    if count != 1:
        raise ConfigError(
            f"the file must hold exactly one {FILL_MARKER} marker where the middle goes; it holds {count}"
        )
    prefix, suffix = text.split(FILL_MARKER)
    return prefix, suffix


def run_infill(args: argparse.Namespace) -> int:
    if args.file is not None:
        if args.prefix is not None or args.suffix is not None:
            raise ConfigError("give either --file or --prefix/--suffix, not both")
        prefix, suffix = split_at_marker(_read(args.file))
    elif args.prefix is None and args.suffix is None:
        raise ConfigError(f"give --prefix and --suffix, or --file with one {FILL_MARKER} marker")
    else:
        prefix, suffix = args.prefix or "", args.suffix or ""
    model, tokenizer = _model_and_tokenizer(args, prefix, suffix)
    sampling = _sampling(args)
    max_new_tokens = sampling.pop("max_new_tokens")
    ids = infill_prompt(tokenizer, prefix, suffix, args.mode)
    _check_fits(model, ids, max_new_tokens)
    return _stream(stream_generate(model, tokenizer, ids, max_new_tokens, **sampling))


def add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help=f"a playground in the browser: continue code, or fill {FILL_MARKER}")
    parser.add_argument("model", help="a run directory, a .ckpt, a Hugging Face directory or a Megatron-LM checkpoint")
    parser.add_argument("--tokenizer", help="tokenizer.json (default: the one the model carries or has beside it)")
    parser.add_argument("--device", type=_device, default="cpu", help=DEVICES)
    parser.add_argument(
        "--host", help="0.0.0.0 to serve other machines (default: $GRADIO_SERVER_NAME, else 127.0.0.1: this one)"
    )
    parser.add_argument("--port", type=int, help="default: $GRADIO_SERVER_PORT, else 7860")
    parser.add_argument(
        "--index",
        metavar="DIR",
        help="an attribution index (`santacoder index`; or a run or prepared directory holding index/): a panel "
        "then says where each generated piece of code could come from in the training data",
    )
    parser.set_defaults(func=run_demo)


def demo_address(host: str | None, port: int | None) -> tuple[str, int]:
    """Where the demo listens: ``--host``/``--port``, else Gradio's own variables GRADIO_SERVER_NAME and
    GRADIO_SERVER_PORT (which hosting platforms set), else 127.0.0.1:7860."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    where = "--port"
    if port is None and os.environ.get("GRADIO_SERVER_PORT"):
        where, raw = "GRADIO_SERVER_PORT", os.environ["GRADIO_SERVER_PORT"]
        try:
            port = int(raw)
        except ValueError:
            raise ConfigError(f"GRADIO_SERVER_PORT={raw!r} is not a port number; set it to one, e.g. 7860") from None
    port = 7860 if port is None else port
    if not 0 < port < 65536:
        raise ConfigError(f"{where}={port} is not a port number (1 to 65535)")
    return host, port


def check_can_listen(host: str, port: int) -> None:
    """Bind the address once, before the model is loaded, so that a port in use or an unknown host is one line
    at once rather than gradio's traceback after the loading."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gradio does: a port in TIME_WAIT is free
            s.bind((host, port))
    except OSError as e:
        if e.errno != errno.EADDRINUSE:  # an unknown host, a port below 1024 without root, ...
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        with socket.socket(family) as s:
            s.bind((host, 0))  # a port the system says is free now, to suggest
            free = s.getsockname()[1]
        raise ConfigError(
            f"port {port} on {host} is in use (another server?); pass a free one, e.g. --port {free}"
        ) from None


def run_demo(args: argparse.Namespace) -> int:
    try:  # gradio is an optional extra: imported only when the demo is asked for
        from santacoder.inference.demo import build_app, launch
    except ImportError as e:
        raise ConfigError(f"the demo needs gradio ({e}); install it with: pip install 'santacoder[demo]'") from None
    host, port = demo_address(args.host, args.port)  # checked before the model is loaded
    check_can_listen(host, port)
    attribute = None
    if args.index is not None:  # opened before the model is loaded too: a missing or damaged index is one line
        # imported here: santacoder.search needs the attribution extra (infini-gram, tantivy), the demo does not
        from santacoder.search.commands import open_index, search_modules

        attribution, _ = search_modules()  # a ConfigError with the install hint when the extra is missing
        index = open_index(args.index)
        attribute = lambda text: attribution.attribute(text, index).to_dict()  # the demo is below search
    model, tokenizer = _model_and_tokenizer(args)
    print(f"SantaCoder playground on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    launch(build_app(model, tokenizer, attribute=attribute), host=host, port=port)
    return 0


def add_prepare(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="tokenize a corpus into shards that training reads (datatrove: this machine or SLURM)",
        description="The same as `python prepare.py source=... out=... tokenizer=...` (configs/prepare.yaml): read "
        "the sources, curate them as the SantaCoder paper did (filters, dedup, decontamination, PII: configs/"
        "prepare.yaml's curation), tokenize, write one shard per task into OUT; run it again after a kill and it "
        "resumes.",
    )
    parser.add_argument("source", nargs="+", help="directories of code or .jsonl/.jsonl.gz/.parquet files")
    parser.add_argument("--out", required=True, help="the prepared directory")
    parser.add_argument("--tokenizer", required=True, help="a tokenizer.json")
    parser.add_argument("--tasks", type=int, help="shards (fixed per prepared directory); default: prepare.yaml's")
    parser.add_argument("--workers", type=int, help="local tasks at once (default: all)")
    parser.add_argument("--no-curation", action="store_true", help="keep every document as read (curation.enabled)")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="any other setting of configs/prepare.yaml"
    )
    parser.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from santacoder.conf.compose import CONFIG_DIR
    from santacoder.data.curation.verdict import summarize

    try:  # datatrove is an optional extra: imported only when prepare is asked for
        from santacoder.data.prepare.pipeline import prepare
    except ImportError as e:
        raise ConfigError(f"prepare needs datatrove ({e}); install it with: pip install 'santacoder[data]'") from None
    base = OmegaConf.load(CONFIG_DIR / "prepare.yaml")
    del base["hydra"]
    given = {"source": args.source, "out": args.out, "tokenizer": args.tokenizer}
    if args.tasks is not None:
        given["tasks"] = args.tasks
    if args.workers is not None:
        given["executor"] = {"workers": args.workers}
    if args.no_curation:
        given["curation"] = {"enabled": False}
    try:
        cfg = OmegaConf.merge(base, given, OmegaConf.from_dotlist(args.set))
    except Exception as e:  # an unknown or mistyped key: OmegaConf's message names it
        raise ConfigError(f"--set: {e}".splitlines()[0]) from None
    manifest = prepare(cfg)
    if manifest is not None:
        for report in manifest.get("curation", []):
            print(summarize(report))
        for split, counts in manifest["splits"].items():
            print(f"{split}: {counts['num_docs']:,} documents, {counts['num_tokens']:,} tokens")
        print(f"prepared {args.out}; train with: python train.py data=prepared data.path={args.out}")
    return 0


def add_train_tokenizer(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-tokenizer",
        help="train a byte-level BPE with FIM tokens on a sample of a corpus (or of a prepared directory's sources)",
        description="Train SantaCoder's kind of tokenizer (byte-level BPE, digits split, FIM special tokens) on a "
        "seeded sample of the corpus: files in random order, read until --sample-bytes of text are in.",
    )
    parser.add_argument("source", nargs="+", help="directories of code, .jsonl/.jsonl.gz/.parquet, or a prepared dir")
    parser.add_argument("--out", required=True, help="the tokenizer.json to write")
    parser.add_argument("--vocab-size", type=int, default=49152, help="tokens, the 5 FIM specials included")
    parser.add_argument("--sample-bytes", type=float, default=1e9, help="text to train on (default 1e9: 1 GB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fim-tokens", choices=("santacoder", "starcoder"), default="santacoder")
    parser.add_argument("--extensions", nargs="+", default=[".py", ".java", ".js"])
    parser.set_defaults(func=run_train_tokenizer)


def run_train_tokenizer(args: argparse.Namespace) -> int:
    from santacoder.data.tokenizer_sample import train_on_sample
    from santacoder.text.tokenizer import FIMTokens

    sources = []
    for source in args.source:  # a prepared directory stands for the sources it was prepared from
        settings = Path(source) / "prepare.json"
        sources += [s["path"] for s in json.loads(settings.read_text())["sources"]] if settings.is_file() else [source]
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out={args.out!r} is a directory; give the tokenizer.json file to write")
    fim = FIMTokens() if args.fim_tokens == "santacoder" else FIMTokens.starcoder()
    tokenizer = train_on_sample(sources, args.vocab_size, sample_bytes=int(args.sample_bytes), seed=args.seed,
                                extensions=tuple(args.extensions), fim_tokens=fim)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out)
    print(f"wrote {out}: {len(tokenizer):,} tokens (FIM: {', '.join(fim.as_list()[1:])})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="santacoder", description="SantaCoder-style code models: inspect, convert, generate and infill."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_info, add_convert, add_generate, add_infill, add_demo, add_prepare, add_train_tokenizer,
                add_index, add_attribute):  # fmt: skip
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
    except KeyboardInterrupt:  # Ctrl-C: what was printed stays; the shell's status for SIGINT, 128 + 2
        print(f"santacoder {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
