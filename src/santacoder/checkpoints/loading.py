"""Open a checkpoint in any supported layout, check its weights, build the ``GPT``; the public functions ``load``,
``load_tokenizer``, ``read_checkpoint_config``, ``inspect_checkpoint``, ``convert`` and ``save_hf``.

``open_checkpoint`` detects the layout and hands the path to its reader (``santacoder.checkpoints.layouts``):

- a directory with ``config.json``: transformers GPTBigCode or the original santacoder upload (``hf``); a weight
  file or the config.json inside such a directory stands for the directory;
- a Megatron-LM save, iteration or rank directory, or a ``model_optim_rng.pt`` / ``model_rng.pt`` file
  (``megatron``);
- a run directory or its ``checkpoints/``: its ``last.ckpt`` (``santacoder.checkpoints.discovery``);
- any other torch file: a checkpoint of this project (``project``), unless its pickle asks for Megatron's
  ``args`` (then it is a renamed Megatron file).

Every reader returns a ``Checkpoint`` (layout, shape, stored dtype; the weights read only on demand, in this
project's parameter names). ``build_model`` checks the weights against the config -- every parameter present,
nothing extra, every shape as the config implies -- so a checkpoint whose files disagree fails with a message
naming the tensor, never with a half-loaded model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from santacoder.checkpoints.discovery import checkpoint_dir, model_file
from santacoder.checkpoints.format import stored_tokenizer
from santacoder.checkpoints.layouts import hf, megatron, project
from santacoder.checkpoints.layouts.base import LM_HEAD, SUPPORTED, WTE, Checkpoint
from santacoder.checkpoints.safe_load import is_megatron_global, pickled_globals
from santacoder.checkpoints.storage import read_checkpoint
from santacoder.config import GPTConfig
from santacoder.errors import ConfigError
from santacoder.model import GPT
from santacoder.text.tokenizer import CodeTokenizer, FIMTokens

LAYOUTS = {
    project.LAYOUT: "checkpoint of this project (Lightning .ckpt)",
    hf.LAYOUT: "Hugging Face transformers GPTBigCode directory",
    hf.SANTACODER_LAYOUT: "original bigcode/santacoder directory (GPT2LMHeadCustomModel)",
    megatron.LAYOUT: "Megatron-LM checkpoint",
}
CONVERT_TARGETS = ("hf", "ckpt")
# The dtypes weights can be loaded or converted to, by name (the CLI offers these names), and other spellings.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def open_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path`` in whichever supported layout it is (reads configs and headers, not weights)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"checkpoint path {str(path)!r} does not exist; pass {SUPPORTED}")
    if path.is_file() and hf.is_hf_file(path) and (path.parent / "config.json").is_file():
        path = path.parent
    if path.is_dir():
        if (path / "config.json").is_file():
            return hf.open_checkpoint(path)
        if megatron.looks_like_megatron(path):
            return megatron.open_checkpoint(path)
        if any(checkpoint_dir(path).glob("*.ckpt")):  # a run directory (or its checkpoints/): its last.ckpt
            return project.open_checkpoint(model_file(path))
        raise ConfigError(f"directory {str(path)!r} has no config.json and no Megatron-LM checkpoint; pass {SUPPORTED}")
    if path.name.endswith(".safetensors"):
        raise ConfigError(
            f"{str(path)!r} is a bare safetensors file: it holds weights but no model config. Pass the directory "
            "holding it together with its config.json."
        )
    if path.name in megatron.MODEL_FILES or any(is_megatron_global(g) for g in pickled_globals(path)):
        return megatron.open_checkpoint(path)
    return project.open_checkpoint(path)


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None`` means float32: what training (with or without autocast) and CPU inference expect."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.").lower()
        key = DTYPE_ALIASES.get(key, key)
        if key not in DTYPES:
            raise ConfigError(f"dtype {dtype!r} is not one of {sorted(DTYPES)} (or {sorted(DTYPE_ALIASES)})")
        return DTYPES[key]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"dtype {dtype!r} must be a floating torch.dtype such as torch.float16")
    return dtype


def check_weights(config: GPTConfig, weights: dict[str, torch.Tensor], source: str) -> None:
    """A ConfigError unless ``weights`` holds exactly the parameters ``config`` implies, in their shapes."""
    with torch.device("meta"):
        expected = {name: t.shape for name, t in GPT(config).state_dict().items() if name != LM_HEAD}
    missing = [n for n in expected if n not in weights]
    unexpected = [n for n in weights if n not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
        raise ConfigError(
            f"{source}: the weights do not match the model its config describes: {'; '.join(parts)}. "
            "The checkpoint is incomplete or of a different architecture."
        )
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise ConfigError(
                f"{source}: tensor {name} has shape {tuple(weights[name].shape)} but the config (n_embd="
                f"{config.n_embd}, n_head={config.n_head}, n_inner={config.inner_dim}, vocab_size="
                f"{config.vocab_size}, n_positions={config.n_positions}, multi_query={config.multi_query}) "
                f"implies {tuple(shape)}; the config and the weights disagree"
            )


def build_model(
    checkpoint: Checkpoint,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    attn_impl: str = "auto",
) -> GPT:
    """The ``GPT`` of ``checkpoint`` with its weights, on ``device`` in ``dtype``, in eval mode."""
    dtype = resolve_dtype(dtype)
    source = f"{checkpoint.layout} checkpoint {str(checkpoint.path)!r}"
    weights = checkpoint.read_weights()
    check_weights(checkpoint.config, weights, source)
    # Build on the meta device and assign the checkpoint's tensors: no time spent on a random init that
    # would be overwritten, and no second copy of the weights in memory. copy=True so the model never
    # aliases a memory-mapped file that training may later overwrite.
    with torch.device("meta"):
        model = GPT(checkpoint.config, attn_impl=attn_impl)
    state = {name: t.to(device=device, dtype=dtype, copy=True) for name, t in weights.items()}
    state[LM_HEAD] = state[WTE]
    model.load_state_dict(state, strict=True, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # assign=True made two Parameters: tie them again
    return model.eval()


def load(
    path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    attn_impl: str = "auto",
) -> GPT:
    """A ``GPT`` with the weights at ``path``, on ``device``, in eval mode, running attention with ``attn_impl``
    (see ``santacoder.attention``; checkpoints never store a backend, so any model runs anywhere).

    ``path`` is a Lightning ``.ckpt`` of this project, a transformers GPTBigCode directory, an original
    ``bigcode/santacoder`` directory, or a Megatron-LM checkpoint (save directory, ``iter_*``/``release``
    directory or ``model_optim_rng.pt`` file); the layout is detected. ``dtype`` (a torch dtype or a name such
    as ``"bfloat16"``) defaults to float32 whatever the stored dtype. Raises ``ConfigError`` with an
    explanation for anything else, including files that are truncated, disagree with their config, or
    pickle objects a checkpoint never needs (no code from a file is ever run).
    """
    return build_model(open_checkpoint(path), device=device, dtype=dtype, attn_impl=attn_impl)


def load_tokenizer(path: str | Path, fim_tokens: FIMTokens | None = None) -> CodeTokenizer:
    """The tokenizer at ``path``: a ``tokenizer.json`` or a directory holding one (SantaCoder's, StarCoder's, a
    Hugging Face export), or the one a checkpoint of this project carries (a ``.ckpt``, its run directory or its
    ``checkpoints/``). Without ``fim_tokens`` the FIM token names are detected (SantaCoder's hyphens, then
    StarCoder's underscores)."""
    path = Path(path).expanduser()
    is_json = path.is_file() and path.suffix == ".json" or path.is_dir() and (path / "tokenizer.json").is_file()
    if is_json or not path.exists():
        return CodeTokenizer.from_file(path, fim_tokens)  # a missing path: its error names a tokenizer file
    file = model_file(path)
    tokenizer = stored_tokenizer(read_checkpoint(file), f"checkpoint {str(file)!r}")
    if tokenizer is None:
        raise ConfigError(
            f"checkpoint {str(file)!r} carries no tokenizer (written before checkpoints did, or converted without "
            "one); pass the tokenizer.json it was trained with"
        )
    return tokenizer


def save_hf(model: GPT, out_dir: str | Path, tokenizer: CodeTokenizer | str | Path | None = None) -> Path:
    """Write ``model`` as a transformers GPTBigCode directory that ``AutoModelForCausalLM.from_pretrained`` loads
    with identical logits (``config.json``, ``generation_config.json``, ``model.safetensors``), and with
    ``tokenizer`` (a ``CodeTokenizer`` or any path ``load_tokenizer`` reads) the files ``AutoTokenizer`` reads,
    padding with the FIM pad token on the left. Returns ``out_dir``."""
    if tokenizer is not None and not isinstance(tokenizer, CodeTokenizer):
        tokenizer = load_tokenizer(tokenizer)
    return hf.save_hf(model, out_dir, tokenizer=tokenizer)


def read_checkpoint_config(path: str | Path) -> GPTConfig:
    """The model shape (and dropouts) of the checkpoint at ``path``, reading as little as the layout allows.

    Hugging Face directories: config.json only; Megatron and Lightning files: the pickle, with the tensors
    memory-mapped rather than read.
    """
    return open_checkpoint(path).config


@dataclass(frozen=True)
class CheckpointInfo:
    layout: str  # one of LAYOUTS
    description: str
    path: Path  # the file or directory the weights are read from
    config: GPTConfig
    num_params: int  # tied LM head counted once
    dtype: torch.dtype  # as stored
    details: dict[str, str] = field(default_factory=dict)  # step, val/loss, tokenizer, where the layout knows

    def to_dict(self) -> dict:
        return {
            "layout": self.layout,
            "description": self.description,
            "path": str(self.path),
            "config": self.config.to_dict(),
            "head_dim": self.config.head_dim,
            "num_params": self.num_params,
            "dtype": str(self.dtype).removeprefix("torch."),
            **self.details,
        }


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Layout, shape, parameter count and stored dtype of a checkpoint, without loading its weights."""
    checkpoint = open_checkpoint(path)
    return CheckpointInfo(
        layout=checkpoint.layout,
        description=LAYOUTS[checkpoint.layout],
        path=checkpoint.path,
        config=checkpoint.config,
        num_params=checkpoint.num_params(),
        dtype=checkpoint.dtype,
        details=checkpoint.details or _beside_tokenizer(checkpoint.path),
    )


def _beside_tokenizer(path: Path) -> dict[str, str]:
    """For layouts without training state: whether a tokenizer.json lies beside the weights."""
    folder = path if path.is_dir() else path.parent
    found = (folder / "tokenizer.json").is_file()
    return {"tokenizer": "tokenizer.json beside it" if found else "none: pass --tokenizer <tokenizer.json>"}


def convert(
    source: str | Path,
    out: str | Path,
    to: str = "hf",
    tokenizer: CodeTokenizer | str | Path | None = None,
    dtype: torch.dtype | str | None = None,
    force: bool = False,
) -> Path:
    """Convert any supported checkpoint to a transformers GPTBigCode directory (``to="hf"``) or to a checkpoint
    of this project (``to="ckpt"``; where ``out`` is a directory or ends with "/", ``out/model.ckpt``).

    ``dtype`` defaults to the dtype the source stores. ``tokenizer`` (a CodeTokenizer or a path
    ``load_tokenizer`` reads) goes with the model (hf: ``tokenizer.json`` beside it; ckpt: inside it); by default
    the source's own, where it has one.
    An existing output is replaced only with ``force=True``, and never when it is (or holds) the source.
    Returns the path written.
    """
    if to not in CONVERT_TARGETS:
        raise ConfigError(f"conversion target {to!r} must be one of {CONVERT_TARGETS}")
    is_dir = str(out).endswith(("/", os.sep)) or Path(out).expanduser().is_dir()
    out = Path(out).expanduser()
    if to == "ckpt" and is_dir:
        out = out / "model.ckpt"
    _check_output(Path(source).expanduser(), out, force, is_dir=to == "hf")  # before any work: nothing read or written
    checkpoint = open_checkpoint(source)
    model = build_model(checkpoint, dtype=resolve_dtype(dtype) if dtype is not None else checkpoint.dtype)
    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(tokenizer)
    elif tokenizer is None:
        tokenizer = _own_tokenizer(Path(source).expanduser())
    if to == "hf":
        return hf.save_hf(model, out, tokenizer=tokenizer)
    return project.save_checkpoint(model, out, tokenizer=tokenizer)


def _own_tokenizer(source: Path) -> CodeTokenizer | None:
    """The tokenizer a checkpoint carries or has beside it (tokenizer.json), or None (e.g. Megatron-LM's)."""
    try:
        return load_tokenizer(source)
    except ConfigError:
        return None


def _check_output(source: Path, out: Path, force: bool, is_dir: bool) -> None:
    """Refuse to write over the source (even with ``force``), over an existing output without ``force``, or where
    a file stands in the way of the output (a directory when ``is_dir``) or of the directory it goes into."""
    folder = out if is_dir else out.parent
    nearest = next(p for p in (folder, *folder.parents) if p.exists())  # "." or "/" at the latest
    if not nearest.is_dir():
        raise ConfigError(
            f"cannot write the output {str(out)!r}: {str(nearest)!r} is a file, not a directory; pass another path"
        )
    source, target = source.resolve(), out.resolve()
    if target == source or source.is_relative_to(target) or (source.is_dir() and target.is_relative_to(source)):
        raise ConfigError(
            f"the output {str(out)!r} is the input {str(source)!r} or overlaps it: converting would replace the "
            "checkpoint being read (a resumable .ckpt would lose its optimizer state); write to another path"
        )
    exists = target.is_file() or (target.is_dir() and any(target.iterdir()))
    if exists and not force:
        raise ConfigError(f"the output {str(out)!r} exists; pass --force (force=True) to overwrite it")
