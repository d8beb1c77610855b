"""Batched decoding that stops at stop strings: each row ends when its text contains one, the batch when every
row has ended, and each row's text is cut at its first stop.

The text is exactly that of decoding every row to its limit and cutting afterwards (what the evaluation
harnesses do): a row that has ended is still sampled with the others, as it would be without the early end, so
the random draws of the other rows do not change; only the steps after the last row ended are saved.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass

from santacoder.inference.generation import generate_stream
from santacoder.model.gpt import GPT
from santacoder.text.tokenizer import CodeTokenizer


@dataclass
class StoppedTexts:
    texts: list[str]  # one per row: prompt i's samples are rows i * num_samples ... (i + 1) * num_samples - 1
    model_calls: int  # forward passes: the prefill and one per step after the first


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the first stop string in ``text`` starts (None: there is none)."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first stop string (exclusive)."""
    cut = first_stop(text, stops)
    return text if cut is None else text[:cut]


def generate_until_stops(
    model: GPT,
    tokenizer: CodeTokenizer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int | Sequence[int],
    stops: Sequence[str],
    *,
    num_samples: int = 1,
    **sampling,
) -> StoppedTexts:
    """The text after each prompt (``num_samples`` rows per prompt) up to ``<|endoftext|>``, its first stop
    string, or its own ``max_new_tokens`` (one per prompt, or one for all). ``sampling``: ``temperature``,
    ``top_k``, ``top_p``, ``seed`` (see ``santacoder.inference.generation.generate``)."""
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(limits) != len(prompts):
        raise ValueError(f"{len(limits)} max_new_tokens for {len(prompts)} prompts")
    limits = [limit for limit in limits for _ in range(num_samples)]  # per row
    rows = len(limits)
    decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(rows)]
    texts = [""] * rows
    ended = [limit == 0 for limit in limits]
    longest = max((len(s) for s in stops), default=0)
    calls = 0
    steps = generate_stream(model, list(prompts), max(limits), eos_id=tokenizer.eod_id, num_samples=num_samples,
                            **sampling)  # fmt: skip
    try:
        for step, tokens in enumerate(steps):
            calls += 1  # this step's token came from one forward pass (the prefill, for the first)
            for row, token in enumerate(tokens.tolist()):
                if ended[row]:
                    continue
                if token == tokenizer.eod_id:
                    ended[row] = True
                    continue
                seen = len(texts[row])
                texts[row] += decoders[row].decode(tokenizer.decode_bytes([token]))
                # a stop can only be new where the new text and the stop's length before it overlap
                if any(s in texts[row][max(0, seen - longest + 1) :] for s in stops if s):
                    ended[row] = True
                elif step + 1 >= limits[row]:
                    ended[row] = True
            if all(ended):
                break
    finally:
        steps.close()
    texts = [text + decoder.decode(b"", final=True) for text, decoder in zip(texts, decoders, strict=True)]
    return StoppedTexts([cut_at_stops(text, stops) for text in texts], calls)
