"""When a run first trained on a token: its global sample order is a deterministic function of its settings.

Training reads the train split as one token sequence (d1 eod d2 eod ...); sample ``i`` is tokens
``[i L, (i + 1) L]`` (``L = data.seq_len``), whose labels are tokens ``i L + 1 .. (i + 1) L``. Each epoch ``e`` is
one permutation of the samples, ``torch.randperm(n)`` seeded with ``data.seed + e`` (``EpochSampler``, a
``DistributedSampler``), cut to a multiple of the ranks; rank ``r`` takes every world-th sample of it, so the
global micro-batch ``m`` is the contiguous block ``[m M, (m + 1) M)`` of the permutation (``M = data.batch_size /
accumulation``), and optimizer step ``s`` of the epoch takes micro-batches ``s a .. s a + a - 1``.

For a run on one data source (its in-run store, or one prepared directory); not for mixtures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from santacoder.conf.run_config import load_run_config
from santacoder.errors import ConfigError


class TrainingOrder:
    """The step at which run ``run_dir`` first trained on token ``g`` of its train sequence (``step_of``)."""

    def __init__(self, run_dir: Path, num_tokens: int):
        cfg = load_run_config(run_dir)
        data, trainer = cfg.data, cfg.trainer
        if data.get("sources"):
            raise ConfigError("the training step of a span is not computed for mixtures (data.sources)")
        self.seq_len, self.batch_size, self.seed = int(data.seq_len), int(data.batch_size), int(data.seed)
        self.accumulate = int(trainer.get("accumulate_grad_batches") or 1)
        devices = trainer.get("devices")
        world = (devices if isinstance(devices, int) else 1) * int(trainer.get("num_nodes") or 1)
        self.samples = max(0, (num_tokens - 1) // self.seq_len)
        per_rank = self.samples // world  # drop_last: the permutation is cut to a multiple of the ranks
        micro = self.batch_size // (world * self.accumulate)
        self.global_micro = micro * world
        self.micro_batches = per_rank // micro if micro else 0  # per epoch (the loader drops an incomplete one)
        self.steps_per_epoch = math.ceil(self.micro_batches / self.accumulate)  # the last step may be short
        metrics = Path(run_dir) / "metrics.json"
        self.trained_steps = json.loads(metrics.read_text()).get("step") if metrics.is_file() else None
        self._positions: dict[int, np.ndarray] = {}

    def _position(self, epoch: int) -> np.ndarray:
        """Where each sample stands in epoch ``epoch``'s global order."""
        if epoch not in self._positions:
            order = torch.randperm(self.samples, generator=torch.Generator().manual_seed(self.seed + epoch)).numpy()
            position = np.empty(self.samples, dtype=np.int64)
            position[order] = np.arange(self.samples)
            self._positions[epoch] = position
        return self._positions[epoch]

    def step_of(self, token: int, max_epochs: int = 100) -> int | None:
        """The first optimizer step whose batch holds token ``token`` as a label; None if no epoch of the first
        ``max_epochs`` does (it sits in the dropped tail, or the sequence has no sample)."""
        sample = max(0, token - 1) // self.seq_len
        if sample >= self.samples or not self.micro_batches:
            return None
        used = self.micro_batches * self.global_micro
        for epoch in range(max_epochs):
            q = int(self._position(epoch)[sample])
            if q < used:
                return epoch * self.steps_per_epoch + (q // self.global_micro) // self.accumulate
        return None
