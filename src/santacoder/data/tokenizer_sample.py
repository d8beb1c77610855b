"""A tokenizer for a corpus too large to read whole: a byte-level BPE (``santacoder.text.tokenizer``) trained on a
seeded sample of its documents, read until the sample is full, never the whole corpus in one process.

The sample is every source's files in a seeded random order (so it spreads over the corpus, not over its first
directories), each file's documents taken until ``sample_bytes`` of text are in. The same sources, seed and size
give the same tokenizer.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

from santacoder.data.corpus import Corpus
from santacoder.errors import ConfigError
from santacoder.text.tokenizer import CodeTokenizer, FIMTokens, train_tokenizer

log = logging.getLogger(__name__)


def sampled_texts(corpora: list[Corpus], sample_bytes: int, seed: int) -> Iterator[str]:
    """Documents of ``corpora`` (files shuffled by ``seed``, sources interleaved) up to ``sample_bytes``."""
    rng = random.Random(seed)
    files = [(corpus, path) for corpus in corpora for path in corpus.files]
    rng.shuffle(files)
    taken = 0
    for corpus, path in files:
        for doc in corpus.read_file(path):
            yield doc.text
            taken += len(doc.text.encode("utf-8"))
            if taken >= sample_bytes:
                log.info("tokenizer sample: %.1f MB of text", taken / 1e6)
                return
    log.info("tokenizer sample: the whole corpus, %.1f MB of text (under the %.1f MB asked)", taken / 1e6,
             sample_bytes / 1e6)  # fmt: skip


def train_on_sample(
    sources: list[str | Path],
    vocab_size: int,
    *,
    sample_bytes: int,
    seed: int = 0,
    extensions: tuple[str, ...] = (".py", ".java", ".js"),
    max_doc_bytes: int = 1_000_000,
    fim_tokens: FIMTokens | None = None,
) -> CodeTokenizer:
    """Train a BPE of ``vocab_size`` tokens (its FIM specials included: SantaCoder's has 49,152) on a sample."""
    if sample_bytes <= 0:
        raise ConfigError(f"--sample-bytes={sample_bytes} must be positive")
    corpora = [Corpus(source, extensions, max_doc_bytes, setting="source") for source in sources]
    return train_tokenizer(sampled_texts(corpora, sample_bytes, seed), vocab_size, fim_tokens or FIMTokens())
