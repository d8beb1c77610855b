"""What a data mixture (``data.sources``) has trained on, per source: ``train/tokens/<name>`` and
``train/epochs/<name>``."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from santacoder.data.mixture import MixtureDataset


class MixtureMonitor(Callback):
    """Logs, per source of a mixture, the input tokens the whole job has trained on (``seq_len`` per sample) as
    ``train/tokens/<name>`` and those samples over the source's own as ``train/epochs/<name>`` (1.0: each sample
    once), at Lightning's logging steps. Does nothing when the data is not a mixture.

    Each sample says its source (``MixtureDataset``): a rank counts its own, and the ranks' counts are summed only
    when they are logged or saved (a small all-reduce). The counts are saved in checkpoints, so a resumed run goes
    on counting where the run it resumes stopped.
    """

    def __init__(self) -> None:
        self.mixture: MixtureDataset | None = None
        self.seen: dict[str, int] = {}  # samples per source name, whole job, as of the last sum over ranks
        self._pending: torch.Tensor | None = None  # this rank's samples per source since then
        self._strategy = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        train = (getattr(trainer.datamodule, "datasets", None) or {}).get("train")  # set up before callbacks
        self.mixture = train if isinstance(train, MixtureDataset) else None
        self._strategy = trainer.strategy

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.mixture is None:
            return
        counts = torch.bincount(batch["source"], minlength=len(self.mixture.names))  # on the device: no sync
        self._pending = counts if self._pending is None else self._pending + counts
        if not trainer._logger_connector.should_update_logs:  # as Lightning's LearningRateMonitor asks
            return
        self._sum_over_ranks()
        for name, samples in zip(self.mixture.names, self.mixture.samples, strict=True):
            seen = self.seen.get(name, 0)
            # float64: a float32 count of tokens is exact only up to 2**24
            pl_module.log(f"train/tokens/{name}", torch.tensor(seen * self.mixture.seq_len, dtype=torch.float64))
            pl_module.log(f"train/epochs/{name}", seen / samples)

    def _sum_over_ranks(self) -> None:
        if self._pending is None:
            return
        total = self._strategy.reduce(self._pending, reduce_op="sum").tolist()  # every rank calls it at once
        for name, n in zip(self.mixture.names, total, strict=True):
            self.seen[name] = self.seen.get(name, 0) + int(n)
        self._pending = None

    def state_dict(self) -> dict:
        if self.mixture is None:
            return {}  # nothing saved: Lightning keeps no state for this callback
        self._sum_over_ranks()  # Lightning asks every rank when a checkpoint is saved
        return {"samples_seen": dict(self.seen)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seen = {str(name): int(n) for name, n in state_dict.get("samples_seen", {}).items()}
