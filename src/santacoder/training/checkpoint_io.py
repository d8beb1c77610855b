"""Lightning's checkpoint plugin for this project: every ``.ckpt`` a run writes is streamed by ``torch.save`` into a
temporary file beside its target and renamed into place (``santacoder.checkpoints.storage.write_atomically``),
with a checksum of its contents recorded inside; loading is weights-only whatever the environment says
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` included).

``checkpoint_plugin(asynchronous=True)`` wraps it in Lightning's ``AsyncCheckpointIO``: the save clones every
tensor on the training thread (a point-in-time copy: twice the state's memory while it is written), returns, and
a writer thread does the rest. What must follow a file (``last.ckpt``'s link, pruning) is registered with
``then(path, fn)`` and runs once the file is in place, in whichever thread wrote it (not through
``storage_options``, which Lightning's FSDP strategy refuses).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from santacoder.checkpoints.format import META_KEY, seal, stamp
from santacoder.checkpoints.storage import read_checkpoint, write_atomically


class AtomicCheckpointIO(CheckpointIO):
    """Lightning's checkpoint plugin for this project: atomic streamed saves with a checksum, safe loads."""

    def __init__(self):
        super().__init__()
        self._then: dict[str, Callable[[], Any]] = {}

    def then(self, path, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` once the next save to ``path`` has put the complete file under that name."""
        self._then[str(path)] = fn

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if META_KEY not in checkpoint:  # written by Lightning without the module's hook (e.g. by a callback)
            stamp(checkpoint)
        seal(checkpoint)
        write_atomically(path, lambda f: torch.save(checkpoint, f))
        follow = self._then.pop(str(path), None)
        if follow is not None:
            follow()

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        # weights-only and the same refusal of foreign globals as model.init_from, whatever the caller asked;
        # the checksum was verified when the resume was decided (santacoder.training.resume), before loading
        return read_checkpoint(path)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


def checkpoint_plugin(asynchronous: bool = False) -> CheckpointIO:
    """The plugin configs/trainer/default.yaml names: atomic saves, written by a background thread if asked."""
    return AsyncCheckpointIO(AtomicCheckpointIO()) if asynchronous else AtomicCheckpointIO()


def unwrapped(plugin: CheckpointIO) -> CheckpointIO:
    """The plugin that writes the files, under any of Lightning's wrappers (``AsyncCheckpointIO``)."""
    while getattr(plugin, "checkpoint_io", None) is not None and plugin.checkpoint_io is not plugin:
        plugin = plugin.checkpoint_io
    return plugin
