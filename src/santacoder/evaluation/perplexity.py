"""Token-weighted validation loss and perplexity of a model over a data module's held-out split, computed as
training validates (``SantaCoderLitModule.validation_step``): the same batches, labels and weighting."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from santacoder.model.gpt import GPT
from santacoder.model.loss import IGNORE_INDEX, grouped_loss_sums


@torch.inference_mode()
def perplexity(
    model: GPT,
    batches: Iterable[dict[str, torch.Tensor]],
    limit_batches: int | None = None,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    languages: list[str] | None = None,
) -> dict[str, float]:
    """``val/loss`` (mean cross-entropy per labelled token), ``val/ppl`` and ``val/tokens``; with ``languages``
    (the names a prepared data module's batches index in ``language``), ``val/loss/<language>`` for each."""
    device = next(model.parameters()).device
    total, tokens = torch.zeros((), dtype=torch.float64), 0
    sums = counts = torch.zeros(len(languages or ()), dtype=torch.float64)
    for i, batch in enumerate(progress(batches)):
        if limit_batches is not None and i >= limit_batches:
            break
        labels = batch["labels"].to(device)
        token_losses = model(batch["input_ids"].to(device), labels=labels, per_token_loss=True)
        total += token_losses.double().sum().cpu()
        tokens += int((labels != IGNORE_INDEX).sum())
        if languages and "language" in batch:
            s, c = grouped_loss_sums(token_losses, labels, batch["language"].to(device), len(languages))
            sums, counts = sums + s.cpu(), counts + c.cpu()
    if tokens == 0:
        raise ValueError("no labelled token in the validation batches")
    loss = float(total) / tokens
    metrics = {"val/loss": loss, "val/ppl": math.exp(loss), "val/tokens": float(tokens)}
    for name, s, c in zip(languages or (), sums.tolist(), counts.tolist(), strict=False):
        if c:
            metrics[f"val/loss/{name}"] = s / c
    return metrics
