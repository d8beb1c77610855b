"""The fuzzy tier of attribution: BM25 over code words (tantivy), verified by n-gram containment.

The exact tier (a suffix array over the training token ids) finds verbatim spans; this one finds documents that
look like the query when it was edited (identifiers renamed, constants changed, lines dropped). BM25 always ranks
*something* first, so a hit only counts as "similar" when :func:`containment` of the query in the document's text
is at least :data:`SIMILAR_CONTAINMENT` (data-at-scale.md, 3.3: excerpts score 1.00, edited excerpts 0.22-1.00, code
that is not in the corpus 0.00 median and 0.39 at most; the raw BM25 score does not separate them, it grows with
the length of the query).

Words (:data:`CODE_WORDS`) are identifiers, runs of digits and single punctuation characters, **case kept**: code
is case-sensitive (``Path`` and ``path``, ``MAX`` and ``max`` are different names), case-preserving terms are rarer
and so carry more IDF, and copying preserves case. It is also the configuration the reference measured. A rename
that only changes case is not matched term for term; the other words of the query still are.

The index stores only the integer key of each document (a fast field): its text stays in the token store, where
the caller reads it back for :func:`containment`. An index is one directory, built beside its final place and
renamed into it with its completion record ``fuzzy.json`` already inside, so a killed build leaves nothing that
looks complete. Building the same ``index_dir`` from two processes at once is not supported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Sized
from pathlib import Path

import tantivy

from santacoder.durable import fsync_dir, make_publishable

__all__ = [
    "CODE_WORDS",
    "MAX_QUERY_TERMS",
    "SIMILAR_CONTAINMENT",
    "FuzzyIndex",
    "build_fuzzy_index",
    "code_words",
    "containment",
]

# Identifiers, runs of digits, and every other non-space character on its own (the reference's regex tokenizer).
# One split for both the BM25 terms and containment, so the two tiers of the check see the same words.
CODE_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[^\sA-Za-z0-9_]")

# A hit is "similar" (rather than merely BM25's best guess) from this 5-gram containment on (measured: 3.3).
SIMILAR_CONTAINMENT = 0.5

# At most this many distinct terms per query, the rarest kept. A 20-line excerpt has ~100-200 distinct code words,
# so 1024 covers a query of well over a hundred lines whole. Beyond it the cost (one posting list per term, the
# commonest ones long: ``(``, ``self``, ``=`` are in nearly every document) keeps growing while the ranking does
# not change: BM25 is dominated by the rare terms, and those are the ones kept. A whole file pasted as a query
# stays a query of milliseconds.
MAX_QUERY_TERMS = 1024

# tantivy's remove_long filter drops tokens of this many UTF-8 bytes or more (long literals, base64 blobs): they
# would only bloat the term dictionary. Queries see the same filter (they are analysed by the same analyzer).
_MAX_WORD_BYTES = 100
_TOKENIZER = "code"
_KEY, _TEXT = "key", "text"
# BM25 needs term frequencies only; positions (for phrase queries) would make the index larger and slower to build.
_INDEX_OPTION = "freq"
_FORMAT = 1
MARKER = "fuzzy.json"


def code_words(text: str) -> list[str]:
    """The code words of ``text`` (:data:`CODE_WORDS`), in order, case kept."""
    return CODE_WORDS.findall(text)


def _analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(CODE_WORDS.pattern))
        .filter(tantivy.Filter.remove_long(_MAX_WORD_BYTES))
        .build()
    )


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field(_KEY, stored=False, indexed=False, fast=True)
    builder.add_text_field(_TEXT, stored=False, tokenizer_name=_TOKENIZER, index_option=_INDEX_OPTION)
    return builder.build()


def _settings() -> dict:
    """What makes two indexes of the same documents interchangeable (compared before skipping a build)."""
    return {
        "format": _FORMAT,
        "words": CODE_WORDS.pattern,
        "max_word_bytes": _MAX_WORD_BYTES,
        "case": "kept",
        "index_option": _INDEX_OPTION,
    }


def _read_marker(index_dir: Path) -> dict | None:
    try:
        record = json.loads((index_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("complete") is True else None


def _tree_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def build_fuzzy_index(
    documents: Iterable[tuple[int, str]],
    index_dir: Path,
    *,
    threads: int = 2,
    heap_bytes: int = 128 * 2**20,
    num_docs: int | None = None,
) -> dict:
    """Index ``(key, text)`` pairs for BM25 over their code words into ``index_dir``; return its record.

    Only the key is kept (a fast field), never the text. ``threads`` indexing threads share ``heap_bytes`` of
    buffer (tantivy wants at least ~15 MB per thread). The build goes to ``.<name>.partial`` beside ``index_dir``
    (a leftover one from a killed build is removed first) and is renamed into place, ``fuzzy.json`` included, at
    the end.

    Skipped, returning the existing record with ``"skipped": True``, when ``index_dir/fuzzy.json`` says the index
    is complete, was built with the same word split, and holds as many documents as this call would index:
    ``num_docs`` if given, else ``len(documents)`` when it has one. For a bare iterator of unknown length the count
    cannot be known without consuming it, so the index is rebuilt.

    The record: ``num_docs``, ``text_bytes`` (UTF-8 bytes indexed), ``build_seconds``, ``index_bytes`` and the
    settings. No documents give an index that answers every query with [].
    """
    index_dir = Path(index_dir)
    expected = num_docs if num_docs is not None else (len(documents) if isinstance(documents, Sized) else None)
    existing = _read_marker(index_dir)
    if (
        existing is not None
        and expected is not None
        and existing.get("num_docs") == expected
        and all(existing.get(k) == v for k, v in _settings().items())
    ):
        return {**existing, "skipped": True}

    start = time.perf_counter()
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = index_dir.with_name(f".{index_dir.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # a killed build's: tantivy's files in it are of no use to this one
    partial.mkdir()
    index = writer = None
    try:
        index = tantivy.Index(_schema(), path=str(partial), reuse=False)
        index.register_tokenizer(_TOKENIZER, _analyzer())
        writer = index.writer(heap_size=heap_bytes, num_threads=threads)
        count = text_bytes = 0
        for key, text in documents:
            doc = tantivy.Document()
            doc.add_integer(_KEY, int(key))
            doc.add_text(_TEXT, text)
            writer.add_document(doc)
            count += 1
            text_bytes += len(text.encode())
        writer.commit()
        writer.wait_merging_threads()
        index = writer = None  # release the writer (its lock, its threads) before the directory moves
        record = {
            **_settings(),
            "complete": True,
            "num_docs": count,
            "text_bytes": text_bytes,
            "build_seconds": round(time.perf_counter() - start, 3),
            "index_bytes": _tree_bytes(partial),
        }
        with open(partial / MARKER, "w") as f:
            json.dump(record, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(partial)
        # tantivy writes meta.json and .managed.json atomically through 0600 temporaries: every user the umask
        # allows must read the index (the demo, a shared cluster), as the exact tier's files
        for path in (partial, *partial.iterdir()):
            make_publishable(path)
        if index_dir.exists():
            shutil.rmtree(index_dir)
        os.replace(partial, index_dir)
        fsync_dir(index_dir.parent)
    except BaseException:
        index = writer = None  # its indexing threads stop before their directory goes
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {**record, "skipped": False}


class FuzzyIndex:
    """A complete index made by :func:`build_fuzzy_index`, opened read-only for BM25 search."""

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)
        record = _read_marker(self.index_dir)
        if record is None:
            raise FileNotFoundError(f"no complete fuzzy index in {self.index_dir} (missing or unfinished {MARKER})")
        self.record = record
        self._analyzer = _analyzer()
        self._index = tantivy.Index.open(str(self.index_dir))
        self._index.register_tokenizer(_TOKENIZER, self._analyzer)
        self._schema = self._index.schema
        self._searcher = self._index.searcher()

    def __len__(self) -> int:
        return self._searcher.num_docs

    def terms(self, text: str) -> list[str]:
        """The distinct terms a query for ``text`` uses: its code words in order of first occurrence (as indexed:
        case kept, words of 100 bytes or more dropped), the :data:`MAX_QUERY_TERMS` rarest if there are more."""
        terms = list(dict.fromkeys(self._analyzer.analyze(text)))
        if len(terms) > MAX_QUERY_TERMS:
            freqs = {term: self._searcher.doc_freq(_TEXT, term) for term in terms}
            present = [term for term in terms if freqs[term] > 0]  # absent terms score nothing anyway
            if len(present) > MAX_QUERY_TERMS:
                order = sorted(range(len(present)), key=lambda i: (freqs[present[i]], i))[:MAX_QUERY_TERMS]
                present = [present[i] for i in sorted(order)]
            terms = present
        return terms

    def search(self, text: str, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` best documents for ``text`` by BM25 over its distinct code words, as ``(key, score)``, best
        first. Each word is a term query of its own (no query parser: punctuation is just another term), combined
        as Should clauses. An empty query, or one with no word, gives []; so does an empty index."""
        if k <= 0:
            return []
        terms = self.terms(text)
        if not terms:
            return []
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, _TEXT, term)) for term in terms]
        )
        hits = self._searcher.search(query, limit=k, count=False).hits
        if not hits:
            return []
        keys = self._searcher.fast_field_values(_KEY, [address for _, address in hits])
        return [(int(key), float(score)) for (score, _), key in zip(hits, keys, strict=True)]


def containment(query: str, document: str, n: int = 5) -> float:
    """The fraction of the query's distinct ``n``-grams of code words that occur in ``document`` (0.0 to 1.0).

    A query of fewer than ``n`` words (but at least one) is one n-gram of its whole length: 1.0 when its words
    occur contiguously in the document, else 0.0. Falling back to unigrams instead would call nearly any document
    "similar" to a short query (``x = 1`` shares every word with most files). A query with no words gives 0.0.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    words = code_words(query)
    if not words:
        return 0.0
    n = min(n, len(words))
    wanted = set(zip(*(words[i:] for i in range(n)), strict=False))
    doc = code_words(document)
    found = wanted.intersection(zip(*(doc[i:] for i in range(n)), strict=False))
    return len(found) / len(wanted)
