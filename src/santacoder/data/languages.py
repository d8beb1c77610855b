"""The language of every validation token, for ``val/loss/<language>``.

A packed sample spans several documents, often of several languages, so a sample has no language; a token does:
the language of the document it belongs to, from each prepared shard's ``docs.jsonl``. The ``<|endoftext|>``
that ends a document belongs to that document (predicting the end of a file is part of modelling it).

FIM rewrites a sample segment by segment (the ids between two ``<|endoftext|>``), keeping the segments in order
and the separators in place, but changing their lengths; so a token of the transformed sample takes the language
of the segment it is in, counted by the separators before it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from santacoder.data.shards import PreparedSplit
from santacoder.errors import ConfigError

UNKNOWN = "unknown"  # a document without a language (as the shards' meta.json count it)


class TokenLanguages:
    """For one split: where each document ends in the split's token sequence (the layout ``PreparedSplit.tokens``
    reads: d1 eod d2 eod ... dn eod) and its language, as an index into ``names``."""

    def __init__(self, doc_ends: np.ndarray, codes: np.ndarray):
        # int64, in positions of the shards' concatenation: document k holds (doc_ends[k - 1], doc_ends[k]], that
        # is its ids and then the eod that starts the next document (the eod that ends it, in the split's sequence)
        self.doc_ends = doc_ends
        self.codes = codes  # int16, one per document

    @classmethod
    def of_split(cls, split: PreparedSplit, names: Sequence[str]) -> TokenLanguages:
        """Read from the shards' offsets and document lines (a validation split: small, read once per run)."""
        index = {name: i for i, name in enumerate(names)}
        ends, codes = [], []
        for shard, start in zip(split.shards, split.tokens.starts[:-1], strict=True):
            offsets = np.load(shard / "doc_offsets.npy")
            ends.append(offsets[1:] + int(start))
            with open(shard / "docs.jsonl", encoding="utf-8") as lines:
                names_here = [json.loads(line).get("language") or UNKNOWN for line in lines]
            stray = sorted(set(names_here) - set(index))
            if stray:
                raise ConfigError(
                    f"shard {str(shard)!r} has documents in {stray}, which manifest.json does not count: the shards "
                    "changed since it was written; prepare the data again"
                )
            codes.append([index[name] for name in names_here])
        if not ends:
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16))
        return cls(np.concatenate(ends), np.concatenate([np.asarray(c, dtype=np.int16) for c in codes]))

    def of_tokens(self, start: int, stop: int) -> np.ndarray:
        """The language of tokens [start, stop) of the split's sequence: token p is position p + 1 of the shards'
        concatenation (which starts with an eod), inside the first document ending at or after it."""
        positions = np.arange(start + 1, stop + 1, dtype=np.int64)
        k = np.searchsorted(self.doc_ends, positions, side="left")
        return self.codes[np.minimum(k, len(self.codes) - 1)]


def label_languages(raw: np.ndarray, sample: np.ndarray, raw_languages: np.ndarray, eod_id: int) -> np.ndarray:
    """The language of each label of ``sample`` (the FIM transform of ``raw``; labels are ``sample[1:]``), given
    the language of each token of ``raw``."""
    ends = np.flatnonzero(raw == eod_id)
    # segment j is ended by the j-th eod (the last one by the sample's end): its language is that token's
    segment_language = raw_languages[np.append(ends, len(raw) - 1)]
    is_eod = sample == eod_id
    segment = np.cumsum(is_eod) - is_eod  # separators strictly before each token
    return segment_language[np.minimum(segment, len(segment_language) - 1)][1:]
