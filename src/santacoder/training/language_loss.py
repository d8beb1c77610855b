"""``val/loss/<language>``: validation's token-weighted loss per language, summed over batches and ranks."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from santacoder.model.loss import grouped_loss_sums


class LanguageLoss(Metric):
    """Per language: the summed loss and the count of labelled tokens, both summed over ranks at ``compute``,
    which gives each language's mean (NaN for a language with no labelled token)."""

    full_state_update = False

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = list(names)
        self.add_state("sums", torch.zeros(len(names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(len(names), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, token_losses: torch.Tensor, labels: torch.Tensor, languages: torch.Tensor) -> None:
        sums, counts = grouped_loss_sums(token_losses, labels, languages, len(self.names))
        self.sums += sums
        self.counts += counts

    def compute(self) -> dict[str, torch.Tensor]:
        means = self.sums / self.counts  # NaN where a language had no token
        return {name: means[i].float() for i, name in enumerate(self.names) if self.counts[i] > 0}
