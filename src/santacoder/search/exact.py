"""The exact tier of attribution: a suffix array (infini-gram) over the token ids the model trained on.

One index per shard split directory, in infini-gram's on-disk layout for one shard (suffix ``.0``), so
``InfiniGramEngine`` opens it as it is (data-at-scale.md, 3.2 and 3.4)::

    tokenized.0   the tokens, uint16: every document as <|endoftext|> followed by its ids
    offset.0      uint64, one per document: the byte offset of its <|endoftext|> (the engine skips that first
                  token of a document, so the documents come back whole)
    metadata.0    one JSON line per document: where it came from (id, repo, path, license, language), the shard
                  and its index in the shard
    metaoff.0     uint64, one per document: the byte offset of its line in metadata.0
    table.0       the suffix array, from infini-gram's ``rust_indexing`` (make-part, merge, concat)
    index.json    written last: what was indexed (the source's meta.json hash, tokens, documents) and the costs

Two sources:

- a prepared shard (``P/shards/<r>/<split>``, ``santacoder.data.shards``) already has that token layout:
  tokenized.0 is a hard link to its tokens.bin (a copy across filesystems). A link also survives a rerun of
  prepare, which renames a new tokens.bin into place: the index keeps the tokens that its table sorts.
- an in-run token store (``santacoder.data.token_store``: d1 eod d2 eod ... dn eod) is copied as eod d1 eod ...
  eod dn: its final eod moves to the front, so every document has its separator before it and none after.

Decisions:

- uint16 only. infini-gram 2.6.0's engine reads 'u32', but its ``rust_indexing`` with ``--token-width 4`` sorts
  with a bucket per possible id and aborts allocating 32 GiB, so a uint32 shard (vocabulary > 65,536) is refused.
- An empty shard (0 tokens) gets an index.json marked empty and no engine files: the engine cannot map an empty
  file (its pointer width is ceil(log2(bytes) / 8)). ``ExactIndex`` leaves it out; it matches nothing.
- A build writes into a temporary directory beside ``index_dir`` and renames it into place with index.json
  inside, so a killed build leaves no index that looks complete, only a temporary that the next build removes.
  A rebuild of the same shard (same meta.json) is skipped.
- Queries read the index in one of two ways. infini-gram's defaults are made for an index on disk, larger than
  memory (its hosted indexes hold trillions of tokens): every step of every binary search asks the kernel to read
  ahead (``madvise``) and the 400 start positions of a snippet are searched by 400 threads at once, so the disk
  serves many reads together. An index that fits in memory stays in the page cache, where those calls only
  contend for the process's memory map. The engine also starts a thread per position and per shard, each a few
  microseconds of work: on a virtual machine, waking another core for each costs more than the work, so in memory
  the engine's threads run on the calling thread's core. On 2 cores at 158.6M tokens a 400-token snippet took
  124 ms the first way and 14 ms the second (``python -m santacoder.bench.attribution --shards 1``). ``ExactIndex``
  reads the second way when the index takes at most half the machine's memory, the first way otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import infini_gram
import numpy as np

from santacoder.data.cache_files import remove_stale_temporaries, temporary_prefix
from santacoder.data.shards import shard_problem
from santacoder.data.token_store import store_problem
from santacoder.durable import fsync_dir, make_publishable
from santacoder.errors import ConfigError

__all__ = ["DocHit", "ExactIndex", "Span", "build_exact_index"]

FORMAT = 1  # of index.json
INDEX_RECORD = "index.json"
RUST_INDEXING = Path(infini_gram.__file__).parent / "rust_indexing"
TOKEN_WIDTH = 2  # bytes per token: uint16, the only width rust_indexing 2.6.0 sorts (module docstring)
# Bytes each make-part reads past its end, so suffixes near the cut compare correctly; merge trims them again.
# The value indexing.py uses.
HACKSIZE = 100_000
MAX_DOCS_PER_SPAN = 10  # documents looked up per span: OLMoTrace shows up to 10
COPY_CHUNK = 16 * 2**20


# -- building -------------------------------------------------------------------------------------------------


def build_exact_index(
    shard_dir: Path, index_dir: Path, *, mem_bytes: int = 2**30, cpus: int = 2, documents: list[dict] | None = None
) -> dict:
    """Index one shard split directory (a prepared shard or an in-run token store) into ``index_dir``; the
    summary recorded in ``index_dir/index.json``. Skipped, returning the recorded summary, when ``index_dir``
    already holds a complete index of the same shard. ``mem_bytes`` sizes the parts sorted at once
    (rust_indexing needs ~10 bytes per byte of a part) and ``cpus`` the parts sorted in parallel. ``documents``:
    each document's metadata, in store order, for a store that keeps none (an in-run store)."""
    shard_dir, index_dir = Path(shard_dir).absolute(), Path(index_dir).absolute()
    # the metadata first: an index of the same meta.json (which holds the checksums) is skipped without reading
    # the tokens; a build checks the contents too, since it reads every token anyway
    source = _read_source(shard_dir, check_contents=False)
    existing = _existing_index(index_dir)
    if existing is not None and existing["source_meta_sha256"] == source["source_meta_sha256"]:
        return existing
    source = _read_source(shard_dir, check_contents=True)
    ours = (index_dir / INDEX_RECORD).exists()  # a damaged or older index of ours is rebuilt, anything else kept
    if index_dir.is_dir() and not ours and any(index_dir.iterdir()):
        raise ConfigError(f"{str(index_dir)!r} exists and is not an exact index: refusing to replace it")

    index_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(index_dir.parent)  # what killed builds left; a running build's temporary stays
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(index_dir), dir=index_dir.parent))
    try:
        make_publishable(tmp)
        started = time.perf_counter()
        summary = {"format": FORMAT, **source, "token_width": TOKEN_WIDTH}
        if source["num_tokens"] == 0:
            summary.update(empty=True, tokenized="none", parts=0, table_bytes=0)
        else:
            summary.update(empty=False, tokenized=_write_tokens(shard_dir, source["kind"], tmp))
            _write_offsets(shard_dir, tmp)
            _write_metadata(shard_dir, source, tmp, documents)
            summary.update(parts=_build_table(tmp, mem_bytes, cpus), table_bytes=(tmp / "table.0").stat().st_size)
        summary["build_seconds"] = round(time.perf_counter() - started, 3)
        # every file, a hard-linked tokenized.0 included (its bytes are the shard's, not new ones)
        summary["index_bytes"] = sum(p.stat().st_size for p in tmp.iterdir())
        (tmp / INDEX_RECORD).write_text(json.dumps(summary, indent=2) + "\n")
        fsync_dir(tmp)
        _put_in_place(tmp, index_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _read_source(shard_dir: Path, check_contents: bool) -> dict:
    """What is being indexed, once the shard passes its checks (``check_contents``: the checksums and each
    document's leading eod too): kind ("prepared" or "store"), the hash of its meta.json (its identity: it holds
    the checksums of the files), num_tokens, num_docs, dtype, eod_id. A ConfigError in one line otherwise."""
    prepared = (shard_dir / "docs.jsonl").is_file()
    check = shard_problem if prepared else store_problem
    problem = check(shard_dir, check_contents=check_contents)
    if problem:
        raise ConfigError(f"cannot index shard {str(shard_dir)!r}: {problem}")
    raw = (shard_dir / "meta.json").read_bytes()
    meta = json.loads(raw)
    if np.dtype(meta["dtype"]) != np.uint16:
        raise ConfigError(
            f"cannot index shard {str(shard_dir)!r}: its tokens are {meta['dtype']} (a vocabulary above 65,536) and "
            "infini-gram 2.6.0's rust_indexing sorts uint16 tokens only"
        )
    if "eod_id" not in meta:
        raise ConfigError(f"cannot index shard {str(shard_dir)!r}: meta.json has no eod_id")
    return {
        "kind": "prepared" if prepared else "store",
        "source": str(shard_dir),
        "source_meta_sha256": hashlib.sha256(raw).hexdigest(),
        "num_tokens": int(meta["num_tokens"]),
        "num_docs": int(meta["num_docs"]),
        "dtype": "uint16",
        "eod_id": int(meta["eod_id"]),
    }


def _existing_index(index_dir: Path) -> dict | None:
    """The summary of the complete index in ``index_dir`` (any shard's), or None."""
    try:
        summary = json.loads((index_dir / INDEX_RECORD).read_text())
        if summary.get("format") != FORMAT:
            return None
        if not summary["empty"] and (index_dir / "table.0").stat().st_size != summary["table_bytes"]:
            return None
        return summary
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_tokens(shard_dir: Path, kind: str, tmp: Path) -> str:
    """tokenized.0; how it was made ("hardlink" or "copy")."""
    target = tmp / "tokenized.0"
    if kind == "prepared":  # the layout already: link it, or copy it where a link cannot reach
        try:
            os.link(shard_dir / "tokens.bin", target)
            return "hardlink"
        except OSError:
            shutil.copyfile(shard_dir / "tokens.bin", target)
            return "copy"
    # an in-run store: d1 eod ... dn eod becomes eod d1 eod ... eod dn (same length), streamed
    eod = np.array([json.loads((shard_dir / "meta.json").read_text())["eod_id"]], dtype=np.uint16).tobytes()
    remaining = (shard_dir / "tokens.bin").stat().st_size - TOKEN_WIDTH
    with open(shard_dir / "tokens.bin", "rb") as src, open(target, "wb") as dst:
        dst.write(eod)
        while remaining > 0:
            chunk = src.read(min(COPY_CHUNK, remaining))
            dst.write(chunk)
            remaining -= len(chunk)
    return "copy"


def _write_offsets(shard_dir: Path, tmp: Path) -> None:
    """offset.0: the byte offset of each document's separator. For a prepared shard that is off[k], its leading
    eod; for a copied store, off[k] too: the eod before document k is the prepended one (k = 0) or the one that
    ended document k - 1, which sits at off[k] - 1 in the store and so at off[k] in the copy."""
    offsets = np.load(shard_dir / "doc_offsets.npy")
    (offsets[:-1].astype(np.uint64) * TOKEN_WIDTH).tofile(tmp / "offset.0")


def _write_metadata(shard_dir: Path, source: dict, tmp: Path, documents: list[dict] | None = None) -> None:
    """metadata.0 and metaoff.0: one JSON line per document, and where each line starts."""
    if documents is not None and len(documents) != source["num_docs"]:
        raise ConfigError(
            f"cannot index {str(shard_dir)!r}: {len(documents)} documents given for its {source['num_docs']}; the "
            "corpus changed since the store was built"
        )
    shard = "/".join(shard_dir.parts[-2:])  # e.g. 00003/train or store-<key>/train: which shard, readably
    fields = ("id", "repo", "path", "license", "language")
    docs = open(shard_dir / "docs.jsonl", "rb") if source["kind"] == "prepared" else None
    starts, position = [], 0
    try:
        with open(tmp / "metadata.0", "wb") as out:
            for k in range(source["num_docs"]):
                record = {}
                if docs is not None:
                    line = docs.readline()
                    if not line:
                        raise ConfigError(
                            f"cannot index shard {str(shard_dir)!r}: docs.jsonl has {k} lines, meta.json says "
                            f"{source['num_docs']} documents"
                        )
                    doc = json.loads(line)
                    record = {key: doc.get(key) for key in fields}
                elif documents is not None:
                    record = {key: documents[k].get(key) for key in fields}
                line = (json.dumps({**record, "shard": shard, "doc": k}) + "\n").encode()
                out.write(line)
                starts.append(position)
                position += len(line)
    finally:
        if docs is not None:
            docs.close()
    np.asarray(starts, dtype=np.uint64).tofile(tmp / "metaoff.0")


def _pointer_bytes(size: int) -> int:
    """Bytes per suffix-array entry: ceil(log2(size) / 8), the width that both rust_indexing and the engine use."""
    return max(1, ((size - 1).bit_length() + 7) // 8)


def _build_table(tmp: Path, mem_bytes: int, cpus: int) -> int:
    """table.0, the suffix array of tokenized.0, as indexing.py's build_sa makes it: parts sorted ``cpus`` at a
    time (``make-part``), merged (``merge``), then written as one file (``concat``). Parts are fewer when
    ``mem_bytes`` allows: each batch of ``cpus`` parts reads at most mem_bytes / 8 bytes of tokens. The number of
    parts."""
    data = tmp / "tokenized.0"
    size = data.stat().st_size
    ratio = _pointer_bytes(size)
    batches = 1
    while batches * (mem_bytes // 8) < size:
        batches *= 2
    # no part smaller than the overlap: tiny shards are one part
    jobs = max(1, min(batches * cpus, size // HACKSIZE))
    part = -(-(size // jobs) // TOKEN_WIDTH) * TOKEN_WIDTH  # whole tokens
    parts_dir, merged_dir = tmp / "parts", tmp / "merged"
    parts_dir.mkdir()
    merged_dir.mkdir()
    common = ["--ratio", str(ratio), "--token-width", str(TOKEN_WIDTH)]
    files = ["--data-file", data, "--parts-dir", parts_dir]
    for first in range(0, jobs, cpus):
        batch = range(first, min(first + cpus, jobs))
        ends = [("--start-byte", i * part, "--end-byte", min((i + 1) * part + HACKSIZE, size)) for i in batch]
        _run_all([["make-part", *files, *span, *common] for span in ends])
    threads = ["--num-threads", str(cpus)]
    _run_all([["merge", *files, "--merged-dir", merged_dir, *threads, "--hacksize", HACKSIZE, *common]])
    shutil.rmtree(parts_dir)
    outputs = ["--merged-dir", merged_dir, "--merged-file", tmp / "table.0"]
    _run_all([["concat", "--data-file", data, *outputs, *threads, *common]])
    shutil.rmtree(merged_dir)
    expected = size // TOKEN_WIDTH * ratio
    if (tmp / "table.0").stat().st_size != expected:  # a wrong table would answer wrongly, not fail
        raise RuntimeError(f"rust_indexing wrote a table.0 of {(tmp / 'table.0').stat().st_size} bytes, not {expected}")
    return jobs


def _run_all(commands: list[list]) -> None:
    """Run rust_indexing commands in parallel (absolute paths, no shell); a RuntimeError naming the first one that
    failed, with the last line it printed."""
    procs = [
        subprocess.Popen([str(RUST_INDEXING), *map(str, c)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for c in commands
    ]
    errors = [p.communicate()[1] for p in procs]  # waits for each; their stderr is a few lines
    for command, proc, err in zip(commands, procs, errors, strict=True):
        if proc.returncode != 0:
            last = (err.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"rust_indexing {command[0]} failed (exit {proc.returncode}): {last}")


def _put_in_place(tmp: Path, index_dir: Path) -> None:
    """Rename the finished ``tmp`` to ``index_dir``, replacing an older index there (moved aside first: a
    directory cannot be renamed over a non-empty one)."""
    old = None
    if index_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=temporary_prefix(index_dir), dir=index_dir.parent))
        os.replace(index_dir, old / "old")
    os.replace(tmp, index_dir)
    fsync_dir(index_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- querying -------------------------------------------------------------------------------------------------


@dataclass
class DocHit:
    """One occurrence of a span: in document ``doc_ix`` of the ``index``-th index given to ``ExactIndex``, at token
    ``position`` of the document (its ids, separator excluded)."""

    index: int
    doc_ix: int
    position: int
    metadata: dict


@dataclass
class Span:
    """``ids[start:end]`` occurs verbatim ``count`` times in the indexed documents; ``docs`` are some of them."""

    start: int
    end: int
    count: int
    docs: list[DocHit] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.end - self.start


class _Shard:
    """The files of one non-empty index that the lookups read: document offsets and metadata, memory-mapped."""

    def __init__(self, directory: Path):
        self.offsets = np.memmap(directory / "offset.0", dtype=np.uint64, mode="r")
        self.metaoff = np.memmap(directory / "metaoff.0", dtype=np.uint64, mode="r")
        self.metadata = np.memmap(directory / "metadata.0", dtype=np.uint8, mode="r")
        self.size = (directory / "tokenized.0").stat().st_size

    def locate(self, ptr: int) -> tuple[int, int]:
        """(document, token position in it) of byte ``ptr`` of tokenized.0."""
        doc = int(np.searchsorted(self.offsets, np.uint64(ptr), side="right")) - 1
        return doc, (ptr - int(self.offsets[doc])) // TOKEN_WIDTH - 1

    def meta(self, doc: int) -> dict:
        start = int(self.metaoff[doc])
        end = int(self.metaoff[doc + 1]) if doc + 1 < len(self.metaoff) else len(self.metadata)
        return json.loads(self.metadata[start:end].tobytes())

    def doc_tokens(self, doc: int) -> int:
        end = int(self.offsets[doc + 1]) if doc + 1 < len(self.offsets) else self.size
        return (end - int(self.offsets[doc])) // TOKEN_WIDTH - 1


class ExactIndex:
    """Queries over the indexes of several shards at once (one ``InfiniGramEngine``, one engine shard per index).
    Empty indexes are left out of the engine and match nothing; a hit's ``index`` is the position in
    ``index_dirs`` all the same. ``in_memory``: whether the index stays in the page cache, which decides how it is
    read (module docstring); None: when it takes at most half the machine's memory."""

    def __init__(self, index_dirs: list[Path], eod_id: int, vocab_size: int, in_memory: bool | None = None):
        from infini_gram.engine import InfiniGramEngine

        if vocab_size > 2**16:
            raise ConfigError(f"a vocabulary of {vocab_size} tokens does not fit the uint16 exact indexes")
        self.index_dirs = [Path(d).absolute() for d in index_dirs]
        self.vocab_size = vocab_size
        summaries = []
        for d in self.index_dirs:
            summary = _existing_index(d)
            if summary is None:
                raise ConfigError(f"{str(d)!r} is not a complete exact index: build it (build_exact_index)")
            if summary["eod_id"] != eod_id:
                raise ConfigError(f"{str(d)!r} separates documents with id {summary['eod_id']}, not {eod_id}")
            summaries.append(summary)
        # engine shard s -> index, and the global doc_ix of the engine's first document of each engine shard
        self._live = [i for i, s in enumerate(summaries) if not s["empty"]]
        firsts = np.cumsum([0] + [summaries[i]["num_docs"] for i in self._live])[:-1]
        self._first_doc = {index: int(first) for index, first in zip(self._live, firsts, strict=True)}
        self._shards = {i: _Shard(self.index_dirs[i]) for i in self._live}
        self.engine = None
        if in_memory is None:
            in_memory = _fits_in_memory([self.index_dirs[i] for i in self._live])
        self.in_memory = in_memory
        if self._live:
            # in memory: no read-ahead (prefetch depth 0) and one start position at a time (block size 1)
            reading = dict(ds_prefetch_depth=0, sa_prefetch_depth=0, attribution_block_size=1) if in_memory else {}
            self.engine = InfiniGramEngine(
                index_dir=[str(self.index_dirs[i]) for i in self._live],
                eos_token_id=eod_id,
                vocab_size=vocab_size,
                version=4,
                token_dtype="u16",
                **reading,
            )

    def _check(self, ids: list[int]) -> list[int]:
        ids = [int(t) for t in ids]
        if any(not 0 <= t < self.vocab_size for t in ids):
            raise ValueError(f"ids must lie in [0, {self.vocab_size})")
        return ids

    def count(self, ids: list[int]) -> int:
        """Occurrences of ``ids`` (contiguous) in all indexed documents."""
        ids = self._check(ids)
        if self.engine is None:
            return 0
        with _on_one_core(self.in_memory):
            return int(_answer(self.engine.count(ids))["count"])

    def spans(self, ids: list[int], min_len: int = 32, max_cnt: int = 1000) -> list[Span]:
        """The maximal spans of ``ids`` of at least ``min_len`` tokens found verbatim in the corpus (at most
        ``max_cnt`` times: more is boilerplate), longest first; each with up to 10 of its documents. Spans may
        overlap; nested ones are dropped by the engine. Spans cross lines (no delimiters) and may start at any
        token (``enforce_bow=False``): code has no reliable word starts in a byte-level BPE."""
        ids = self._check(ids)
        if self.engine is None or not ids:
            return []
        with _on_one_core(self.in_memory):
            result = self.engine.attribute(ids, delim_ids=[], min_len=min_len, max_cnt=max_cnt, enforce_bow=False)
        answer = _answer(result)
        spans = []
        for found in answer["spans"]:
            hits = []
            for doc in found["docs"][:MAX_DOCS_PER_SPAN]:
                index = self._live[doc["s"]]
                doc_ix, position = self._shards[index].locate(doc["ptr"])
                hits.append(DocHit(index, doc_ix, position, self._shards[index].meta(doc_ix)))
            hits.sort(key=lambda h: (h.index, h.doc_ix, h.position))
            spans.append(Span(found["l"], found["r"], int(found["count"]), hits))
        spans.sort(key=lambda s: (-s.length, s.start))
        return spans

    def document(self, index: int, doc_ix: int) -> tuple[list[int], dict]:
        """Document ``doc_ix`` of the ``index``-th index: its ids (without the separator) and its metadata."""
        if index not in self._shards:
            raise IndexError(f"index {index} is empty or not one of the {len(self.index_dirs)} given")
        shard = self._shards[index]
        if not 0 <= doc_ix < len(shard.offsets):
            raise IndexError(f"document {doc_ix} out of range for {len(shard.offsets)} documents")
        # read through the engine (global document numbers), so what it matched and what we show are one view
        length = shard.doc_tokens(doc_ix)
        found = _answer(self.engine.get_doc_by_ix(self._first_doc[index] + doc_ix, max_disp_len=max(1, length)))
        return found["token_ids"][:length], shard.meta(doc_ix)  # a list of ints already (pybind)


@contextmanager
def _on_one_core(enabled: bool):
    """While enabled, the calling thread, and so the threads it starts (the engine's), may run on one core only: the
    same one for a given thread, different ones for concurrent queries from different threads. Not on systems
    without CPU affinity (macOS): there it does nothing."""
    if not enabled or not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = os.sched_getaffinity(0)  # 0: the calling thread, on Linux
    os.sched_setaffinity(0, {sorted(allowed)[threading.get_native_id() % len(allowed)]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def _fits_in_memory(index_dirs: list[Path]) -> bool:
    """Whether the tokens and suffix arrays of ``index_dirs`` take at most half the machine's memory, so the page
    cache can keep them beside the process that queries them."""
    size = sum((d / name).stat().st_size for d in index_dirs for name in ("tokenized.0", "table.0"))
    return size <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _answer(result: dict) -> dict:
    """The engine's answer; its errors (returned, not raised) as a ValueError."""
    if "error" in result:
        raise ValueError(f"infini-gram: {result['error']}")
    return result
