"""The exact attribution tier (santacoder.search.exact): infini-gram indexes over prepared shards and in-run token
stores, built offline with rust_indexing, answering which training document a piece of code comes from."""

from __future__ import annotations

import json
import math
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers_access import NOBODY, as_ordinary_user
from helpers_prepared import VAL_FRACTION, write_prepared
from santacoder.data.corpus import Document, default_source, is_validation
from santacoder.data.token_store import build_token_stores
from santacoder.errors import ConfigError
from santacoder.search.exact import ExactIndex, _on_one_core, build_exact_index

pytest.importorskip("infini_gram.engine")

EXCERPT_FILE = "json/decoder.py"  # in the train split (checked below): the reference's example


def _stdlib_documents() -> list[Document]:
    """~30 standard-library files: the json package and small top-level modules, in a fixed order."""
    root = default_source()
    paths = sorted((root / "json").glob("*.py"))
    paths += [p for p in sorted(root.glob("*.py")) if 4_000 < p.stat().st_size < 20_000][: 30 - len(paths)]
    return [Document(str(p.relative_to(root)), p.read_text(encoding="utf-8")) for p in paths]


def _excerpt(text: str, lines: int = 20) -> str:
    rows = text.splitlines(keepends=True)
    middle = len(rows) // 2
    return "".join(rows[middle : middle + lines])


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    docs = _stdlib_documents()
    assert EXCERPT_FILE in [d.name for d in docs] and not is_validation(EXCERPT_FILE, VAL_FRACTION)
    return docs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tokenizer, corpus) -> tuple[Path, list[Path]]:
    """A prepared directory of two shards, and an index of each shard's train split."""
    out = tmp_path_factory.mktemp("prepared")
    write_prepared(out, [corpus[::2], corpus[1::2]], tokenizer)
    shards = [out / "shards" / f"{r:05d}" / "train" for r in range(2)]
    indexes = [out / "index" / f"{r:05d}" for r in range(2)]
    for shard, index in zip(shards, indexes, strict=True):
        build_exact_index(shard, index)
    return out, indexes


@pytest.fixture(scope="module")
def exact(prepared, tokenizer) -> ExactIndex:
    return ExactIndex(prepared[1], tokenizer.eod_id, len(tokenizer))


def _text_of(corpus: list[Document], name: str) -> str:
    return next(d.text for d in corpus if d.name == name)


def test_excerpt_leads_to_its_file(exact, tokenizer, corpus):
    ids = tokenizer.encode(_excerpt(_text_of(corpus, EXCERPT_FILE)))
    spans = exact.spans(ids)
    assert spans, "a verbatim excerpt of a training file must match"
    best = spans[0]
    # all of it but a token or two at either end, which tokenize differently cut out of their file (with the
    # 512-token BPE, the first line's indentation merges with the newline before it in the file)
    assert best.start <= 2 and best.end >= len(ids) - 2 and best.length >= 0.95 * len(ids)
    assert best.count >= 1 and best.docs
    hit = best.docs[0]
    assert hit.metadata["path"] == EXCERPT_FILE and hit.metadata["language"] == "py"
    assert hit.index == [d.name for d in corpus].index(EXCERPT_FILE) % 2  # the shard its document went to
    doc_ids, meta = exact.document(hit.index, hit.doc_ix)
    assert meta == hit.metadata
    assert doc_ids[hit.position : hit.position + best.length] == ids[best.start : best.end]
    assert exact.count(ids[len(ids) // 2 - 20 : len(ids) // 2 + 20]) >= 1


def test_invented_code_matches_no_long_span(exact, tokenizer):
    rng = random.Random(0)

    def name() -> str:
        return "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(5, 10)))

    text = "".join(f"def {name()}({name()}, {name()}):\n    return {name()}({name()}) * {rng.randint(2, 999)}\n"
                   for _ in range(12))  # fmt: skip
    ids = tokenizer.encode(text)
    assert len(ids) > 100
    assert exact.spans(ids) == []
    assert exact.count(ids[:40]) == 0


def test_reading_from_disk_answers_as_reading_from_memory(prepared, tokenizer, corpus):
    """The two ways of reading an index (read-ahead and many threads, or neither) give the same answers."""
    memory = ExactIndex(prepared[1], tokenizer.eod_id, len(tokenizer), in_memory=True)
    disk = ExactIndex(prepared[1], tokenizer.eod_id, len(tokenizer), in_memory=False)
    assert memory.in_memory and not disk.in_memory
    assert ExactIndex(prepared[1], tokenizer.eod_id, len(tokenizer)).in_memory  # a small index fits: chosen by size
    # an excerpt of a file, and two files run together: several spans, one across the documents' boundary
    glued = _text_of(corpus, EXCERPT_FILE)[:1500] + corpus[3].text[:1500]
    for text in (_excerpt(_text_of(corpus, EXCERPT_FILE)), glued):
        ids = tokenizer.encode(text)
        spans = memory.spans(ids, min_len=8)
        assert spans and spans == disk.spans(ids, min_len=8)
        middle = ids[len(ids) // 4 : len(ids) // 4 + 24]  # its ends may tokenize otherwise than in the file
        assert memory.count(middle) == disk.count(middle) >= 1


def test_document_is_the_shard_slice(prepared, exact):
    out, _ = prepared
    shard = out / "shards" / "00001" / "train"
    meta = json.loads((shard / "meta.json").read_text())
    tokens = np.fromfile(shard / "tokens.bin", dtype=meta["dtype"])
    offsets = np.load(shard / "doc_offsets.npy")
    lines = (shard / "docs.jsonl").read_text().splitlines()
    for k in (0, len(offsets) // 2, len(offsets) - 2):  # first, middle and last document
        ids, metadata = exact.document(1, k)
        assert ids == tokens[offsets[k] + 1 : offsets[k + 1]].tolist()
        assert metadata["path"] == json.loads(lines[k])["path"] and metadata["doc"] == k
        assert metadata["shard"] == "00001/train"


def test_index_layout_and_summary(prepared):
    out, indexes = prepared
    summary = json.loads((indexes[0] / "index.json").read_text())
    shard = out / "shards" / "00000" / "train"
    meta = json.loads((shard / "meta.json").read_text())
    assert summary["kind"] == "prepared" and summary["tokenized"] == "hardlink"
    assert (summary["num_tokens"], summary["num_docs"]) == (meta["num_tokens"], meta["num_docs"])
    assert (indexes[0] / "tokenized.0").stat().st_ino == (shard / "tokens.bin").stat().st_ino
    offsets = np.fromfile(indexes[0] / "offset.0", dtype=np.uint64)
    assert offsets.tolist() == (np.load(shard / "doc_offsets.npy")[:-1] * 2).tolist()
    # one pointer per token, of ceil(log2(bytes of tokens) / 8) bytes: 3 here, 4 up to 4 GiB of tokens
    assert summary["table_bytes"] == meta["num_tokens"] * math.ceil(math.log2(meta["num_tokens"] * 2) / 8)
    assert not [p for p in indexes[0].parent.iterdir() if ".tmp-" in p.name]


def test_in_run_store_answers_the_same_excerpt(tmp_path, tokenizer, corpus):
    stores = build_token_stores(iter(corpus), tokenizer, tmp_path / "store-key", VAL_FRACTION)
    # little memory: the suffix array is sorted in several parts, then merged
    summary = build_exact_index(stores["train"].directory, tmp_path / "index", mem_bytes=2**16)
    assert summary["kind"] == "store" and summary["tokenized"] == "copy" and summary["parts"] >= 2
    exact = ExactIndex([tmp_path / "index"], tokenizer.eod_id, len(tokenizer))
    # counts agree with a brute-force scan of the tokens (across the parts' boundaries too)
    tokens = np.fromfile(tmp_path / "index" / "tokenized.0", dtype=np.uint16)
    windows = np.lib.stride_tricks.sliding_window_view(tokens, 6)
    for start in np.random.default_rng(0).integers(0, len(tokens) - 6, size=30):
        gram = tokens[start : start + 6]
        assert exact.count(gram.tolist()) == int((windows == gram).all(axis=1).sum())
    text = _text_of(corpus, EXCERPT_FILE)
    ids = tokenizer.encode(_excerpt(text))
    best = exact.spans(ids)[0]
    assert best.start <= 2 and best.end >= len(ids) - 2
    hit = best.docs[0]
    doc_ids, meta = exact.document(hit.index, hit.doc_ix)
    assert doc_ids == tokenizer.encode(text)  # the whole document, no separator on either side
    assert meta == {"shard": "store-key/train", "doc": hit.doc_ix}
    last = stores["train"].num_docs - 1  # the store's final eod moved to the front: the last document is whole too
    train = [d for d in corpus if not is_validation(d.name, VAL_FRACTION)]
    assert exact.document(0, last)[0] == tokenizer.encode(train[-1].text)


def test_rebuild_is_skipped_and_killed_builds_are_cleaned(tmp_path, prepared):
    out, _ = prepared
    shard, index = out / "shards" / "00000" / "train", tmp_path / "index"
    first = build_exact_index(shard, index)
    inode = (index / "table.0").stat().st_ino
    assert build_exact_index(shard, index) == first and (index / "table.0").stat().st_ino == inode

    # a build killed halfway left its temporary (named after a process that no longer runs) and junk in it
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    litter = tmp_path / f"other.tmp-{socket.gethostname()}-{gone.pid}-abc123"
    litter.mkdir()
    (litter / "table.0").write_bytes(b"junk")
    with open(index / "table.0", "r+b") as f:  # and an index damaged since (a truncated table) is rebuilt
        f.truncate(10)
    again = build_exact_index(shard, index)
    assert not litter.exists()
    assert again["table_bytes"] == first["table_bytes"] and (index / "table.0").stat().st_ino != inode


def test_damaged_shard_is_refused(tmp_path, prepared):
    out, _ = prepared
    shard = tmp_path / "00000" / "train"
    shard.parent.mkdir()
    subprocess.run(["cp", "-r", str(out / "shards" / "00000" / "train"), str(shard)], check=True)
    with open(shard / "tokens.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(ConfigError) as caught:
        build_exact_index(shard, tmp_path / "index")
    message = str(caught.value)
    assert "\n" not in message and str(shard) in message and "tokens.bin" in message
    assert not (tmp_path / "index").exists()


def _raw_store(directory: Path, ids: list[int], offsets: list[int], dtype: str, eod_id: int) -> Path:
    """An in-run store written by hand (no checksums, as older stores have)."""
    directory.mkdir(parents=True)
    np.asarray(ids, dtype=dtype).tofile(directory / "tokens.bin")
    np.save(directory / "doc_offsets.npy", np.asarray(offsets, dtype=np.int64))
    meta = {"dtype": dtype, "num_tokens": len(ids), "num_docs": len(offsets) - 1, "eod_id": eod_id}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def test_uint32_shard_is_refused(tmp_path):
    store = _raw_store(tmp_path / "big" / "train", [70_000, 5, 0], [0, 3], "uint32", 0)
    with pytest.raises(ConfigError, match="uint32"):
        build_exact_index(store, tmp_path / "index")


def test_empty_shard_matches_nothing(tmp_path, prepared, tokenizer, corpus):
    eod = tokenizer.eod_id
    empty = build_exact_index(_raw_store(tmp_path / "e" / "train", [], [0], "uint16", eod), tmp_path / "ie")
    assert empty["empty"] and empty["num_tokens"] == 0
    alone = ExactIndex([tmp_path / "ie"], eod, len(tokenizer))
    ids = tokenizer.encode(_excerpt(_text_of(corpus, EXCERPT_FILE)))
    assert alone.count(ids[:10]) == 0 and alone.spans(ids) == []
    # beside a real index, hits still name the real one by its place in the list
    shard = [d.name for d in corpus].index(EXCERPT_FILE) % 2
    both = ExactIndex([tmp_path / "ie", prepared[1][shard]], eod, len(tokenizer))
    best = both.spans(ids)[0]
    assert best.docs[0].index == 1 and best.docs[0].metadata["path"] == EXCERPT_FILE
    assert both.document(1, best.docs[0].doc_ix)[1]["path"] == EXCERPT_FILE


def test_foreign_directory_is_not_replaced(tmp_path, prepared):
    out, _ = prepared
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not an index")
    with pytest.raises(ConfigError, match="not an exact index"):
        build_exact_index(out / "shards" / "00000" / "train", foreign)
    assert (foreign / "notes.txt").exists()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this system")
def test_in_memory_queries_run_on_one_core_and_give_the_cores_back():
    allowed = os.sched_getaffinity(0)
    with _on_one_core(True):
        inside = os.sched_getaffinity(0)
    assert len(inside) == 1 and inside <= allowed
    assert os.sched_getaffinity(0) == allowed
    with _on_one_core(False):
        assert os.sched_getaffinity(0) == allowed


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this system")
def test_an_ordinary_user_narrows_and_gets_back_the_cores_too():
    """Narrowing a thread's own affinity needs no privilege: the same for a user without root."""
    if os.geteuid() != 0:
        pytest.skip("the suite runs as an ordinary user already: the test above is that user's")
    code = (
        "import os; from santacoder.search.exact import _on_one_core; allowed = os.sched_getaffinity(0)\n"
        "with _on_one_core(True): inside = os.sched_getaffinity(0)\n"
        "print(os.getuid(), len(inside), inside <= allowed, os.sched_getaffinity(0) == allowed)"
    )
    done = as_ordinary_user([sys.executable, "-c", code], Path("/"), timeout=60)
    assert done.stdout.split() == [str(NOBODY), "1", "True", "True"], done.stderr[-2000:]
