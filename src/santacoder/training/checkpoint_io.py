"""Lightning's checkpoint plugin for this project: every ``.ckpt`` a run writes is streamed by ``torch.save`` into a
temporary file beside its target and renamed into place (``santacoder.checkpoints.storage.write_atomically``),
with a checksum of its contents recorded inside; loading is weights-only whatever the environment says
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from santacoder.checkpoints.format import META_KEY, seal, stamp
from santacoder.checkpoints.storage import read_checkpoint, write_atomically


class AtomicCheckpointIO(CheckpointIO):
    """Lightning's checkpoint plugin for this project: atomic streamed saves with a checksum, safe loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if META_KEY not in checkpoint:  # written by Lightning without the module's hook (e.g. by a callback)
            stamp(checkpoint)
        seal(checkpoint)
        write_atomically(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        # weights-only and the same refusal of foreign globals as model.init_from, whatever the caller asked;
        # the checksum was verified when ckpt_path was resolved (resolve_resume), before any other work
        return read_checkpoint(path)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)
