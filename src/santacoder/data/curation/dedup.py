"""Exact and near deduplication on datatrove's stages, configured for code.

Exact: a hash of the whole content; of identical files the copy from the most-starred repository survives
(datatrove keeps the highest ``document_priority``: stars + 1, capped at its 16 bits).

Near: MinHash LSH over 5-grams of code words at Jaccard about 0.7, as the SantaCoder paper's "more near-dedup"
ablation (its best, kept in the final model). datatrove's defaults are meant for prose: they lower-case, replace
punctuation (``_`` included) with spaces and every number with 0, which merges ``foo_bar(1)`` with
``Foo.bar[2]``; and its English word splitter needs spaCy. Here words are BigCode's: the runs of
``[A-Za-z0-9_]`` (identifiers and numbers kept whole, case kept), and only whitespace is normalised.

``bands`` x ``rows`` hashes make a pair of Jaccard similarity s a candidate with probability
1 - (1 - s^rows)^bands: ``detection_curve`` prints it. datatrove's 14 x 8 (112 hashes) is BigCode's 25 x 10 curve
(250 hashes) with less than half the hashes; configs/prepare.yaml takes 20 x 8 (160), which rises at 0.69 and
catches 97% of pairs at 0.8 where those catch 92-94%.
"""

from __future__ import annotations

import re

from datatrove.data import Document
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.text import TextNormConfig
from datatrove.utils.word_tokenizers import WordTokenizer

WORD = re.compile(r"[A-Za-z0-9_]+")
# whitespace only: code's case, punctuation and numbers are content
CODE_NORMALISATION = TextNormConfig(
    lowercase=False, norm_whitespace=True, remove_punctuation=False, norm_unicode_diacritics=False, norm_numbers=False
)
CURVE_POINTS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
PRIORITY_MAX = 65535  # datatrove stores priorities in 16 bits; 0 is reserved


class CodeWords(WordTokenizer):
    """Words of code for MinHash shingles: identifiers and numbers whole, case kept, punctuation dropped."""

    def __init__(self):
        super().__init__("code")

    def word_tokenize(self, text: str) -> list[str]:
        return WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]  # no sentences in code; MinHash never asks

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for match in WORD.finditer(text)]


def content(doc: Document) -> str:  # the annotation tells datatrove to hash a str
    return doc.text


def stars_priority(doc: Document) -> int:
    """Of exact copies, the most-starred repository's survives (ties: the first in task and stream order)."""
    stars = doc.metadata.get("stars") or 0
    return max(1, min(int(stars) + 1, PRIORITY_MAX))


def exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=content, document_priority=stars_priority)


def minhash_config(n_grams: int, bands: int, rows: int, seed: int) -> MinhashConfig:
    return MinhashConfig(
        n_grams=n_grams, num_buckets=bands, hashes_per_bucket=rows, seed=seed, norm_config=CODE_NORMALISATION
    )


def detection_probability(jaccard: float, bands: int, rows: int) -> float:
    """Probability that a pair of this Jaccard similarity shares a band, so that one of them is removed."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


def detection_curve(bands: int, rows: int, points=CURVE_POINTS) -> str:
    """The curve as a two-line table, with the threshold (1/bands)^(1/rows) where it rises."""
    threshold = (1.0 / bands) ** (1.0 / rows)
    head = " ".join(f"{s:>5.2f}" for s in points)
    probs = " ".join(f"{detection_probability(s, bands, rows):>5.2f}" for s in points)
    return (
        f"near-dedup: {bands} bands x {rows} rows ({bands * rows} hashes), threshold ~{threshold:.2f}\n"
        f"  Jaccard         {head}\n"
        f"  P(removed)      {probs}"
    )
