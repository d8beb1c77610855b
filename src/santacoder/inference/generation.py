"""Decoding with a preallocated KV cache: greedy or sampled (temperature, top-k, top-p), batched prompts of any
lengths, and streaming text.

A batch of prompts is left-padded; the padding is masked in attention and skipped by the positions, so each row
decodes exactly what it would alone. After the prompt is prefilled in one pass, each step feeds one token per
row and computes the LM head for that position only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from santacoder.model.gpt import GPT
from santacoder.model.kv_cache import KVCache

Prompts = torch.Tensor | Sequence[Sequence[int]] | Sequence[torch.Tensor]


def left_pad(prompts: Prompts, pad_id: int = 0, device: torch.device | str | None = None):
    """``(input_ids, attention_mask)`` of shape (B, T): each prompt right-aligned after ``pad_id`` fill, with
    ones over its tokens. A (B, T) tensor is taken as B prompts of T tokens."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2:
            raise ValueError(f"input_ids must be (batch, tokens); got shape {tuple(prompts.shape)}")
        ids = prompts.to(device=device, dtype=torch.long)
        return ids, torch.ones_like(ids)
    rows = [torch.as_tensor(p, dtype=torch.long).flatten() for p in prompts]
    if not rows or any(r.numel() == 0 for r in rows):
        raise ValueError("every prompt needs at least one token")
    width = max(r.numel() for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - row.numel() :] = row
        mask[i, width - row.numel() :] = 1
    return ids.to(device), mask.to(device)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of ``logits`` (B, V): the argmax when ``temperature`` is 0, else a draw from the
    softmax of ``logits / temperature`` restricted to the ``top_k`` most likely tokens and to the smallest set
    whose probability reaches ``top_p`` (the most likely token is always kept)."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0: greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be a positive integer or None")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p} must be in (0, 1] or None")
    if temperature == 0:
        return logits.argmax(dim=-1)
    # shifted by the row's maximum first (softmax does not change): a tiny temperature then sends the others to
    # -inf instead of overflowing every logit to inf, whose softmax is NaN
    logits = logits.float()
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = before >= top_p  # the first token has 0 before it: always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate_stream(
    model: GPT,
    input_ids: Prompts,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    seed: int | None = None,
    num_samples: int = 1,
) -> Iterator[torch.Tensor]:
    """The tokens of ``generate`` one step at a time: a (B x num_samples,) tensor per step."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be >= 1")
    param = next(model.parameters())
    ids, mask = left_pad(input_ids, device=param.device)
    batch, width = ids.shape
    total = width + max_new_tokens
    if total > model.config.n_positions:
        raise ValueError(
            f"the prompt ({width} tokens) and max_new_tokens={max_new_tokens} need {total} positions; the model "
            f"has n_positions={model.config.n_positions}: shorten the prompt or ask for fewer tokens"
        )
    if max_new_tokens == 0:
        return
    pad_id = eos_id if pad_id is None else pad_id
    generator = None
    if seed is not None:
        generator = torch.Generator(device=param.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        cache = KVCache(model.config, batch, total, device=param.device, dtype=param.dtype)
        mask = torch.cat([mask, mask.new_ones(batch, max_new_tokens)], dim=1)  # generated tokens are tokens
        if bool(mask.all()):  # no padding: plain causal attention, without a mask to build and apply
            mask = None
        logits = model(ids, attention_mask=mask, cache=cache, last_only=True)  # the prompt, in one pass
        if num_samples > 1:  # the samples of a prompt share its prefill: copy its cache, not its compute
            cache.repeat_interleave(num_samples)
            logits = logits.repeat_interleave(num_samples, dim=0)
            mask = None if mask is None else mask.repeat_interleave(num_samples, dim=0)
            batch *= num_samples
        done = torch.zeros(batch, dtype=torch.bool, device=param.device)
        for step in range(max_new_tokens):
            sampled = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
            token = sampled if pad_id is None else sampled.masked_fill(done, pad_id)
            yield token
            if eos_id is not None:
                done |= token == eos_id
                if bool(done.all()):
                    return
            if step + 1 < max_new_tokens:  # an ended row goes on with valid ids (pad_id may be any number)
                logits = model(sampled[:, None], attention_mask=mask, cache=cache, last_only=True)
    finally:
        model.train(was_training)


def generate(
    model: GPT,
    input_ids: Prompts,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    seed: int | None = None,
    num_samples: int = 1,
) -> torch.Tensor:
    """The new tokens (B, T_new) after each prompt of ``input_ids`` (a (B, T) tensor, or a list of prompts of
    any lengths).

    ``temperature=0`` is greedy. A row that produces ``eos_id`` keeps it and is filled with ``pad_id`` (default
    ``eos_id``) afterwards; decoding ends when every row has, or after ``max_new_tokens`` (``eos_id=None``:
    always ``max_new_tokens``). ``seed`` makes sampling repeatable. ``num_samples`` > 1 draws that many
    continuations of each prompt from one prefill: rows ``i * num_samples ...`` belong to prompt ``i``.
    """
    steps = list(
        generate_stream(
            model,
            input_ids,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_id=eos_id,
            pad_id=pad_id,
            seed=seed,
            num_samples=num_samples,
        )
    )
    if not steps:
        batch = input_ids.shape[0] if isinstance(input_ids, torch.Tensor) else len(input_ids)
        return torch.zeros((batch * num_samples, 0), dtype=torch.long, device=next(model.parameters()).device)
    return torch.stack(steps, dim=1)
