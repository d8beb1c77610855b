"""This project's checkpoint format, in one place: what a ``.ckpt`` holds beyond Lightning's own keys. A schema
only: reading and writing files is ``santacoder.checkpoints.storage``'s.

A checkpoint is a Lightning checkpoint of ``SantaCoderLitModule``:

- ``state_dict``: the module's tensors, the GPT under ``model.`` (the tied LM head under both of its names);
- ``hyper_parameters``: ``config`` (the GPTConfig fields: what the model is), ``optimizer``, ``scheduler``
  and ``decay_embeddings`` (how it was trained), as plain values, so ``torch.load(weights_only=True)`` reads it;
- ``santacoder``: the fields of ``CheckpointMeta`` below, ``format_version`` first.

Every later addition (the tokenizer, loss options) is a field of ``CheckpointMeta`` with a default that
describes files written before it. ``checksum`` (added in format 1, ``None`` in older files) is the SHA-256 of
the file's contents (``content_checksum``): resuming refuses a file whose contents no longer match it.

Files written before the format had a version (version 0) read as well: their model config may hold
``attn_impl`` (a runtime choice, dropped) and may leave out fields whose defaults then were SantaCoder-1B's
(``FORMAT0_CONFIG_DEFAULTS``), and their W&B run id sits at the top level as ``wandb_run_id``. A file of a
newer format than this code knows is refused with a message.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import torch

from santacoder.config import GPTConfig
from santacoder.errors import ConfigError
from santacoder.text.tokenizer import CodeTokenizer

FORMAT_VERSION = 1
META_KEY = "santacoder"
# The tokenizer the model was trained with (CodeTokenizer.to_dict: its JSON and FIM token names), so that a
# checkpoint is usable on its own; absent from files written before it was added, and from Megatron's.
TOKENIZER_KEY = "tokenizer"
MODEL_PREFIX = "model."  # the GPT's parameter names inside the LightningModule's state_dict
# Before format 1, GPTConfig's own defaults were SantaCoder-1B's, and a config stored only the fields it was
# given; a format-0 config is read against those defaults. A record of the past: never derive it from PRESETS.
FORMAT0_CONFIG_DEFAULTS = {
    "vocab_size": 49280, "n_positions": 2048, "n_embd": 2048, "n_layer": 24, "n_head": 16, "n_inner": None,
    "multi_query": True, "layer_norm_epsilon": 1e-5, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "resid_pdrop": 0.1,
    "initializer_range": 0.022,
}  # fmt: skip


@dataclass(frozen=True)
class CheckpointMeta:
    format_version: int = FORMAT_VERSION
    wandb_run_id: str | None = None  # the W&B run that wrote the file: resuming from it continues that run
    checksum: str | None = None  # "sha256:<hex>" of the contents (content_checksum); None: not recorded
    val_loss: float | None = None  # the newest val/loss when the file was written (santacoder info); None: none yet
    val_step: int | None = None  # the step that validation ran at (a save at a step can come before its validation)


def content_checksum(checkpoint: dict) -> str:
    """SHA-256 of everything a checkpoint dict holds except the checksum itself: every tensor's dtype, shape
    and bytes and every plain value, in a fixed order. The same after ``torch.save`` and a weights-only load,
    so a file whose bytes were damaged (a partial overwrite, a bad disk) no longer matches."""
    digest = hashlib.sha256()

    def visit(obj) -> None:
        if isinstance(obj, torch.Tensor):
            tensor = obj.detach()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            if tensor.numel():  # one tensor at a time on the CPU: never the whole state at once
                digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
        elif isinstance(obj, dict):
            digest.update(f"D{len(obj)}".encode())
            for key in sorted(obj, key=repr):
                digest.update(repr(key).encode())
                visit(obj[key])
        elif isinstance(obj, list | tuple):
            digest.update(f"L{len(obj)}".encode())
            for item in obj:
                visit(item)
        else:
            digest.update(f"V{obj!r}".encode())

    meta = checkpoint.get(META_KEY)
    if isinstance(meta, dict):
        checkpoint = {**checkpoint, META_KEY: {k: v for k, v in meta.items() if k != "checksum"}}
    visit(checkpoint)
    return "sha256:" + digest.hexdigest()


def stamp(checkpoint: dict, **fields) -> None:
    """Add this format's fields to a checkpoint dict about to be saved (``fields``: see ``CheckpointMeta``)."""
    checkpoint[META_KEY] = dataclasses.asdict(CheckpointMeta(**fields))


def seal(checkpoint: dict) -> None:
    """Record the checksum of a stamped checkpoint dict: the last change before it is written."""
    checkpoint[META_KEY]["checksum"] = content_checksum(checkpoint)


def verify(checkpoint: dict, source: str = "checkpoint") -> None:
    """A ConfigError when the contents no longer match the recorded checksum (files without one pass)."""
    recorded = read_meta(checkpoint, source).checksum
    if recorded is not None and content_checksum(checkpoint) != recorded:
        raise ConfigError(f"{source} is damaged: its contents do not match the checksum recorded when it was saved")


def read_meta(checkpoint: dict, source: str = "checkpoint") -> CheckpointMeta:
    """The format fields of a loaded checkpoint dict, from any format version this code knows."""
    stored = checkpoint.get(META_KEY)
    if stored is None:  # version 0: written before the format had a version
        return CheckpointMeta(format_version=0, wandb_run_id=checkpoint.get("wandb_run_id"))
    version = stored.get("format_version") if isinstance(stored, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(f"{source} has a malformed '{META_KEY}' entry: {stored!r}")
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"{source} is in checkpoint format {version}, newer than this santacoder reads ({FORMAT_VERSION}); "
            "upgrade santacoder to read it"
        )
    known = {f.name for f in dataclasses.fields(CheckpointMeta)}
    return CheckpointMeta(**{k: v for k, v in stored.items() if k in known})


def is_project_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj


def model_config(checkpoint: dict, source: str = "checkpoint") -> GPTConfig:
    """What the model of a loaded checkpoint dict is, from any format version this code knows."""
    hparams = checkpoint.get("hyper_parameters")
    config = hparams.get("config") if isinstance(hparams, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(
            f"{source} has no hyper_parameters['config'] dict; it was not written by this project's SantaCoderLitModule"
        )
    if read_meta(checkpoint, source).format_version == 0:
        config = {**FORMAT0_CONFIG_DEFAULTS, **config}
    try:
        return GPTConfig.from_dict(config, source=f"{source}: hyper_parameters['config']")
    except ConfigError as e:
        raise ConfigError(f"{source}: hyper_parameters['config'] is invalid: {e}") from None


def model_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The GPT's tensors by their names in ``GPT`` (the tied ``lm_head.weight`` included when stored)."""
    state = checkpoint["state_dict"]
    return {
        name[len(MODEL_PREFIX) :]: tensor
        for name, tensor in state.items()
        if name.startswith(MODEL_PREFIX) and isinstance(tensor, torch.Tensor)
    }


def attach_tokenizer(checkpoint: dict, tokenizer: CodeTokenizer) -> None:
    """Carry ``tokenizer`` (a CodeTokenizer) inside ``checkpoint``."""
    checkpoint[TOKENIZER_KEY] = tokenizer.to_dict()


def stored_tokenizer(checkpoint: dict, source: str = "checkpoint") -> CodeTokenizer | None:
    """The CodeTokenizer a checkpoint carries, or None."""
    stored = checkpoint.get(TOKENIZER_KEY)
    return None if stored is None else CodeTokenizer.from_dict(stored, source=source)
