"""Token-weighted validation loss and perplexity of a model over a data module's held-out split, computed as
training validates (``SantaCoderLitModule.validation_step``): the same batches, labels and weighting."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from santacoder.model.gpt import GPT
from santacoder.model.loss import IGNORE_INDEX


@torch.inference_mode()
def perplexity(
    model: GPT,
    batches: Iterable[dict[str, torch.Tensor]],
    limit_batches: int | None = None,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> dict[str, float]:
    """``val/loss`` (mean cross-entropy per labelled token), ``val/ppl`` and ``val/tokens``."""
    device = next(model.parameters()).device
    total, tokens = torch.zeros((), dtype=torch.float64), 0
    for i, batch in enumerate(progress(batches)):
        if limit_batches is not None and i >= limit_batches:
            break
        logits = model(batch["input_ids"].to(device))
        labels = batch["labels"].to(device)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total += loss.double().cpu()
        tokens += int((labels != IGNORE_INDEX).sum())
    if tokens == 0:
        raise ValueError("no labelled token in the validation batches")
    loss = float(total) / tokens
    return {"val/loss": loss, "val/ppl": math.exp(loss), "val/tokens": float(tokens)}
