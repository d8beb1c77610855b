"""The fuzzy attribution tier: BM25 over code words (tantivy) and the containment check that says "similar"."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from santacoder.search.fuzzy import (
    MAX_QUERY_TERMS,
    SIMILAR_CONTAINMENT,
    FuzzyIndex,
    build_fuzzy_index,
    code_words,
    containment,
)

STDLIB = Path(os.__file__).parent
PACKAGES = ("json", "email", "collections", "importlib", "logging", "http")


def _corpus(limit: int = 200) -> list[str]:
    """~200 standard-library modules (top level, then a few packages), UTF-8 only, non-empty, sorted."""
    paths = sorted(STDLIB.glob("*.py")) + [p for pkg in PACKAGES for p in sorted((STDLIB / pkg).glob("*.py"))]
    texts = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            texts.append(text)
        if len(texts) == limit:
            break
    return texts


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _corpus()


@pytest.fixture(scope="module")
def index(corpus, tmp_path_factory) -> FuzzyIndex:
    directory = tmp_path_factory.mktemp("fuzzy") / "index"
    record = build_fuzzy_index(enumerate(corpus), directory, num_docs=len(corpus))
    assert record["num_docs"] == len(corpus) and not record["skipped"]
    return FuzzyIndex(directory)


def _window(text: str, lines: int = 20, need_number: bool = False) -> tuple[int, list[str]]:
    """A window of ``lines`` lines mostly of code (at least 15 non-blank), from a third of the way in."""
    rows = text.splitlines()
    for start in range(len(rows) // 3, len(rows) - lines):
        window = rows[start : start + lines]
        if sum(bool(r.strip()) for r in window) < 15:
            continue
        if need_number and not re.search(r"\b[0-9]+\b", "\n".join(window)):
            continue
        return start, window
    raise AssertionError("no suitable window")


def _targets(corpus: list[str], count: int = 4) -> list[int]:
    """Documents big enough for an excerpt from a third of the way in, spread over the corpus."""
    big = [i for i, text in enumerate(corpus) if len(text.splitlines()) > 300]
    return big[:: max(1, len(big) // count)][:count]


def _same(corpus: list[str], key: int, target: int) -> bool:
    return key == target or corpus[key] == corpus[target]


def _edit(window: list[str]) -> str:
    """Rename two identifiers, change a constant, delete a line."""
    text = "\n".join(window[:10] + window[11:])
    names = [w for w in code_words(text) if re.fullmatch(r"[a-z_][a-z0-9_]{3,}", w)]
    keywords = {"self", "return", "else", "elif", "import", "from", "None", "True", "False", "pass", "with", "while"}
    common = sorted({w for w in names if w not in keywords}, key=lambda w: (-names.count(w), w))[:2]
    for i, name in enumerate(common):
        text = re.sub(rf"\b{name}\b", f"renamed_{i}", text)
    return re.sub(r"\b[0-9]+\b", "98765", text, count=1)


def _invented(seed: int) -> str:
    """Plausible Python, none of it from the corpus: invented names in common statement shapes."""
    rng = random.Random(seed)

    def name() -> str:
        return "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(4))

    lines = [f"def {name()}({name()}, {name()}=None):"]
    for _ in range(18):
        a, b, c = name(), name(), name()
        lines.append(
            rng.choice(
                [
                    f"    {a} = {b}.{c}({name()}, {rng.randint(2, 999)})",
                    f"    if {a} > {b}:",
                    f"        {a}.{c}[{b}] = {name()}",
                    f"    for {a} in {b}({c}):",
                    f"        return {a}({b}, {c}={name()})",
                ]
            )
        )
    return "\n".join(lines) + "\n"


def test_code_words_split_identifiers_numbers_punctuation_case_kept():
    assert code_words("def Foo_1(x): return x+12 # é") == [
        "def", "Foo_1", "(", "x", ")", ":", "return", "x", "+", "12", "#", "é",
    ]  # fmt: skip


def test_an_exact_excerpt_finds_its_file_with_full_containment(corpus, index):
    for target in _targets(corpus):
        _, window = _window(corpus[target])
        excerpt = "\n".join(window)
        hits = index.search(excerpt, k=5)
        assert hits and _same(corpus, hits[0][0], target)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
        assert containment(excerpt, corpus[hits[0][0]]) == pytest.approx(1.0)


def test_a_lightly_edited_excerpt_is_in_the_top_3_and_similar(corpus, index):
    for target in _targets(corpus):
        _, window = _window(corpus[target], need_number=True)
        edited = _edit(window)
        assert edited != "\n".join(window)
        hits = index.search(edited, k=3)
        top = [key for key, _ in hits if _same(corpus, key, target)]
        assert top, f"document {target} not in the top 3: {hits}"
        assert containment(edited, corpus[top[0]]) >= SIMILAR_CONTAINMENT


def test_code_not_in_the_corpus_is_not_similar_though_bm25_ranks_something(corpus, index):
    for seed in range(5):
        query = _invented(seed)
        hits = index.search(query, k=1)
        assert hits  # BM25 always ranks something: the punctuation and keywords are everywhere
        assert containment(query, corpus[hits[0][0]]) < SIMILAR_CONTAINMENT


@pytest.mark.parametrize("query", ["", "   \n\t ", "\u3000\n"])
def test_an_empty_query_finds_nothing(index, query):
    assert index.search(query) == []
    assert containment(query, "x = 1") == 0.0


def test_punctuation_only_is_a_query_like_any_other(index):
    # No query parser: ``"``, ``:``, ``(`` or ``*`` are terms, never syntax. Found everywhere, they rank something.
    for query in ['"', ')(*&^%$#@!:"{}[]|\\', "AND OR NOT -+ ~ ^2"]:
        hits = index.search(query, k=3)
        assert all(isinstance(key, int) and score > 0 for key, score in hits)
    assert index.search("x", k=0) == []


def test_a_query_of_5000_distinct_words_keeps_the_rarest_terms(corpus, index):
    junk = " ".join(f"word{i}" for i in range(5000))
    assert len(index.terms(junk)) == 0  # none is in the index: dropped before the query is built
    assert index.search(junk) == []
    # a whole big file plus junk: more than MAX_QUERY_TERMS real terms, the rarest kept, its file still first
    target = max(range(len(corpus)), key=lambda i: len(set(code_words(corpus[i]))))
    query = corpus[target] + "\n" + junk
    terms = index.terms(query)
    assert len(terms) == MAX_QUERY_TERMS
    hits = index.search(query, k=1)
    assert _same(corpus, hits[0][0], target)


def test_containment_counts_distinct_ngrams_and_short_queries_must_occur_whole():
    document = "def add(a, b):\n    return a + b\n"
    assert containment("def add(a, b):", document) == 1.0
    assert containment("return a + b", document) == 1.0
    assert containment("return b + a", document) == 0.0  # 4 words: one 4-gram, not in the document
    assert containment("a + b", "b + a") == 0.0  # not unigram containment: order matters
    # 8 words, 4 distinct 5-grams, 1 present
    assert containment("def add(a, c):", document) == pytest.approx(1 / 4)
    assert containment("a = 1\na = 1\na = 1", "x") == 0.0
    with pytest.raises(ValueError):
        containment("x", "x", n=0)


def test_rebuild_is_skipped_when_complete_and_redone_when_the_count_differs(tmp_path, corpus):
    docs = list(enumerate(corpus[:20]))
    first = build_fuzzy_index(docs, tmp_path / "ix")
    assert not first["skipped"] and first["num_docs"] == 20
    assert first["text_bytes"] == sum(len(t.encode()) for _, t in docs) and first["index_bytes"] > 0
    again = build_fuzzy_index(docs, tmp_path / "ix")
    assert again["skipped"] and again["build_seconds"] == first["build_seconds"]
    # a generator has no length: without num_docs it is rebuilt, with it skipped
    assert not build_fuzzy_index(iter(docs), tmp_path / "ix")["skipped"]
    assert build_fuzzy_index(iter(docs), tmp_path / "ix", num_docs=20)["skipped"]
    more = build_fuzzy_index(docs + [(99, "print('new document')")], tmp_path / "ix")
    assert not more["skipped"] and more["num_docs"] == 21
    assert FuzzyIndex(tmp_path / "ix").search("print('new document')", k=1)[0][0] == 99


def test_a_killed_build_leaves_nothing_complete_and_does_not_break_the_next(tmp_path, corpus):
    index_dir = tmp_path / "ix"

    def dies():
        yield 0, corpus[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_fuzzy_index(dies(), index_dir)
    assert not index_dir.exists() and sorted(os.listdir(tmp_path)) == []
    with pytest.raises(FileNotFoundError):
        FuzzyIndex(index_dir)
    # what SIGKILL leaves: a half-written build beside the index, plus an index directory without its record
    partial = tmp_path / ".ix.partial"
    partial.mkdir()
    (partial / "meta.json").write_text("{not json")
    (partial / "0123.idx").write_bytes(b"\0" * 100)
    index_dir.mkdir()
    (index_dir / "meta.json").write_text("{}")
    record = build_fuzzy_index(list(enumerate(corpus[:10])), index_dir)
    assert not record["skipped"] and not partial.exists()
    assert FuzzyIndex(index_dir).search(corpus[3], k=1)[0][0] == 3


def test_the_index_holds_keys_not_text(tmp_path, corpus):
    keys = [10_000 + 7 * i for i in range(len(corpus))]  # any integer keys, not the positions
    record = build_fuzzy_index(zip(keys, corpus, strict=True), tmp_path / "ix")
    assert record["index_bytes"] < 0.5 * record["text_bytes"]
    index = FuzzyIndex(tmp_path / "ix")
    assert len(index) == len(corpus)
    target = _targets(corpus)[0]
    _, window = _window(corpus[target])
    assert index.search("\n".join(window), k=1)[0][0] == keys[target]
    # the longest line of a few documents appears nowhere in the index's files
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "ix").iterdir() if p.is_file())
    for text in corpus[::40]:
        line = max(text.splitlines(), key=len).strip()
        assert len(line) > 30 and line.encode() not in blobs


def test_an_empty_corpus_answers_nothing(tmp_path):
    record = build_fuzzy_index([], tmp_path / "ix")
    assert record["num_docs"] == 0 and record["text_bytes"] == 0
    index = FuzzyIndex(tmp_path / "ix")
    assert len(index) == 0 and index.search("def f(x): return x") == []
