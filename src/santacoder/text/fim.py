"""The fill-in-the-middle transform of SantaCoder (context-level, character-level), made reproducible.

A packed sample of ``seq_len + 1`` token ids is split at ``<|endoftext|>``. Each segment, with probability
``fim_rate``, is decoded to text, cut at two uniformly random character offsets into prefix / middle /
suffix, each part encoded on its own, and laid out as

    PSM:  <fim-prefix> prefix <fim-suffix> suffix <fim-middle> middle
    SPM:  <fim-prefix> <fim-suffix> suffix <fim-middle> prefix middle      (probability ``fim_spm_rate``)

Segments are re-joined with ``<|endoftext|>`` and the sample is truncated, or padded with ``<fim-pad>``,
back to its length. This is bigcode Megatron-LM's algorithm with its lossy parts fixed:

- decoding is byte-exact (see ``CodeTokenizer.decode_bytes``): no clean-up of spaces, and characters cut
  at the sample's edges survive as raw bytes, so undoing the permutation restores the text exactly;
- every ``<|endoftext|>`` is kept (Megatron dropped one at position 0 or after another);
- an empty trailing segment stays empty (Megatron turned it into three bare sentinels);
- randomness comes from the generator the caller passes, which the dataset seeds from
  (seed, epoch, sample index), so workers, ranks and resumed runs are deterministic and independent.

Characters are Python characters of the UTF-8 text; a byte that is not valid UTF-8 counts as one character.
"""

from __future__ import annotations

import numpy as np

from santacoder.text.tokenizer import CodeTokenizer


def fim_sample(
    sample: np.ndarray, tokenizer: CodeTokenizer, rng: np.random.Generator, fim_rate: float, spm_rate: float
) -> np.ndarray:
    """The FIM transform of one packed sample; the result has the sample's length and dtype."""
    if fim_rate <= 0.0:
        return sample
    eod = tokenizer.eod_id
    pieces: list[list[int]] = []
    start = 0
    for loc in np.flatnonzero(sample == eod):
        pieces.append(fim_segment(sample[start:loc].tolist(), tokenizer, rng, fim_rate, spm_rate))
        pieces.append([eod])
        start = loc + 1
    pieces.append(fim_segment(sample[start:].tolist(), tokenizer, rng, fim_rate, spm_rate))
    out = [t for piece in pieces for t in piece]
    if len(out) >= len(sample):
        out = out[: len(sample)]  # FIM grows a sample by 3 sentinels (+ re-tokenisation); the tail is dropped
    else:
        out.extend([tokenizer.fim_pad_id] * (len(sample) - len(out)))
    return np.asarray(out, dtype=sample.dtype)


def fim_segment(
    segment: list[int], tokenizer: CodeTokenizer, rng: np.random.Generator, fim_rate: float, spm_rate: float
) -> list[int]:
    """One segment (the ids between two ``<|endoftext|>``), FIM-permuted with probability ``fim_rate``."""
    if not segment or rng.random() >= fim_rate:
        return segment
    text = tokenizer.decode_bytes(segment).decode("utf-8", errors="surrogateescape")
    lo, hi = sorted(rng.integers(0, len(text) + 1, size=2).tolist())

    def encode(part: str) -> list[int]:
        return tokenizer.encode_bytes(part.encode("utf-8", errors="surrogateescape"))

    prefix, middle, suffix = encode(text[:lo]), encode(text[lo:hi]), encode(text[hi:])
    return fim_prompt(prefix, suffix, tokenizer, spm=rng.random() < spm_rate) + middle


def fim_prompt(prefix: list[int], suffix: list[int], tokenizer: CodeTokenizer, spm: bool) -> list[int]:
    """Everything of a FIM segment before its middle: what training puts there, and so what an infilling prompt is
    (``santacoder.inference.completion.infill``). The model then writes the middle, ending it with
    ``<|endoftext|>``."""
    p, m, s = tokenizer.fim_prefix_id, tokenizer.fim_middle_id, tokenizer.fim_suffix_id
    if spm:
        return [p, s, *suffix, m, *prefix]
    return [p, *prefix, s, *suffix, m]


def undo_fim_segment(segment: list[int], tokenizer: CodeTokenizer) -> list[int]:
    """Ids of the original order (prefix + middle + suffix) of a FIM-permuted segment.

    A segment without FIM sentinels is returned unchanged. Raises ValueError if the sentinels are not in
    exactly one PSM or SPM layout. For SPM the prefix/middle boundary is not recoverable, but their
    concatenation is, so the decoded bytes equal the original's.
    """
    p, m, s = tokenizer.fim_prefix_id, tokenizer.fim_middle_id, tokenizer.fim_suffix_id
    counts = [segment.count(t) for t in (p, m, s)]
    if counts == [0, 0, 0]:
        return segment
    if counts != [1, 1, 1] or segment[0] != p:
        raise ValueError(f"not one FIM layout: prefix/middle/suffix sentinel counts {counts}")
    i_s, i_m = segment.index(s), segment.index(m)
    if i_s == 1:  # SPM: <P><S> suffix <M> prefix+middle
        if i_m < i_s:
            raise ValueError("SPM layout with <fim-middle> before <fim-suffix>")
        return segment[i_m + 1 :] + segment[2:i_m]
    if not i_s < i_m:  # PSM: <P> prefix <S> suffix <M> middle
        raise ValueError("PSM layout with <fim-middle> before <fim-suffix>")
    return segment[1:i_s] + segment[i_m + 1 :] + segment[i_s + 1 : i_m]


def fim_layout(segment: list[int], tokenizer: CodeTokenizer) -> str | None:
    """'PSM', 'SPM' or None (no sentinels) for a segment; raises ValueError for a broken layout."""
    undo_fim_segment(segment, tokenizer)  # validates
    if tokenizer.fim_prefix_id not in segment:
        return None
    return "SPM" if segment[1] == tokenizer.fim_suffix_id else "PSM"
