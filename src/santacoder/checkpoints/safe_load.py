"""Read ``torch.save`` files without ever running code from them.

Every pickle in this package is read by torch's ``weights_only`` unpickler, which builds only tensors and
plain containers. Megatron-LM checkpoints also pickle a few things of their own world: the training
``args`` (an ``argparse.Namespace``), Megatron enums (``megatron.model.enums.PositionEmbeddingType``) and
numpy's RNG state. We allow exactly those: ``argparse.Namespace`` as itself (an attribute bag), and every
``megatron.*`` / ``numpy.*`` global as an inert ``Placeholder`` that only records its arguments, so no
Megatron or numpy code is imported or called. Any other global -- ``os.system``, ``builtins.eval``,
``subprocess.Popen`` ... -- makes the load fail before a single object is built.
"""

from __future__ import annotations

import argparse
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

from santacoder.errors import ConfigError

# Top-level modules whose globals become inert placeholders: Megatron's enums in `args`, numpy's arrays in
# `rng_state`. We never need their values, so they never need to be real.
PLACEHOLDER_MODULES = ("megatron", "numpy")
# Globals allowed as themselves, beyond torch's own allowlist (tensors, dtypes, OrderedDict ...).
ALLOWED_GLOBALS: dict[str, Any] = {"argparse.Namespace": argparse.Namespace}
# What torch raises for a truncated or corrupt file, or a pickle the weights-only unpickler refuses.
READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, TypeError)


class Placeholder:
    """An inert stand-in for a global of the checkpoint's world (a Megatron enum member, numpy RNG state).

    Building one records the pickle's arguments and state and does nothing else.
    """

    qualified_name = "<placeholder>"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = kwargs or None
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.qualified_name}{self.args!r}>"


def _placeholder_class(qualified_name: str) -> type[Placeholder]:
    # One class per global, so a placeholder still says what it stands for (an enum member's repr shows its
    # class name and value).
    return type(qualified_name.rsplit(".", 1)[-1], (Placeholder,), {"qualified_name": qualified_name})


def pickled_globals(path: str | Path) -> list[str]:
    """The globals the pickle of ``path`` asks for beyond torch's weights-only allowlist (read, not built)."""
    try:
        return sorted(set(get_unsafe_globals_in_checkpoint(str(path))))
    except ValueError as e:  # not a zip written by torch.save (a legacy pickle, a TorchScript archive ...)
        raise ConfigError(
            f"{str(path)!r} is not a checkpoint written by torch.save (>= 1.6, zip format): {e}. Re-save it with "
            "a recent torch, or pass a Hugging Face directory, a Megatron-LM checkpoint or a .ckpt of this project."
        ) from e
    except READ_ERRORS as e:
        raise ConfigError(f"{str(path)!r} is truncated or not a torch checkpoint ({type(e).__name__}: {e})") from e


def is_megatron_global(name: str) -> bool:
    """Whether a pickled global is one that only Megatron-LM checkpoints need (and that we allow in them)."""
    return name in ALLOWED_GLOBALS or name.split(".", 1)[0] in PLACEHOLDER_MODULES


def _globals_to_allow(path: Path, allow_megatron: bool) -> list[Any]:
    """The extra globals ``path`` needs, or a ConfigError naming any global this module refuses."""
    extra: list[Any] = []
    refused = []
    for name in pickled_globals(path):
        if not (allow_megatron and is_megatron_global(name)):
            refused.append(name)
        elif name in ALLOWED_GLOBALS:
            extra.append(ALLOWED_GLOBALS[name])
        else:
            extra.append((_placeholder_class(name), name))
    if refused:
        raise ConfigError(
            f"refusing to load {str(path)!r}: its pickle asks for {', '.join(refused)}, which no model checkpoint "
            "needs, and building it could run code from the file. Only tensors and plain containers (plus "
            "argparse.Namespace and Megatron's own enums in Megatron-LM checkpoints) are accepted. Re-save the "
            "weights with torch.save(state_dict) or as safetensors from a trusted environment."
        )
    return extra


def safe_torch_load(path: str | Path, allow_megatron: bool = False) -> Any:
    """``torch.load(path, weights_only=True, mmap=True)``, with clear errors; with ``allow_megatron=True`` it also
    accepts what Megatron-LM files pickle: ``argparse.Namespace`` and inert placeholders for their enums.

    Tensors are memory-mapped, so opening a multi-GB checkpoint to read its ``args`` or shapes reads little
    (copy tensors that must outlive the file: it may be overwritten). A ConfigError explains files that are
    not checkpoints, are truncated, or ask for a refused global.
    """
    path = Path(path)
    extra = _globals_to_allow(path, allow_megatron)
    try:
        with safe_globals(extra):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except READ_ERRORS as e:
        raise ConfigError(
            f"could not read {str(path)!r} safely ({type(e).__name__}: {e}); the file is truncated, corrupt, or "
            "pickles objects that a weights-only load refuses"
        ) from e
