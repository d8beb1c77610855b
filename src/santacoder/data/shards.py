"""Prepared data: the token shards that the ``prepare`` pipeline writes, one per task, and training reads lazily.

This module is the format: its writer (``ShardWriter``, ``write_manifest``), its reader (``read_manifest``,
``PreparedSplit``) and its check (``shard_problem``); the pipeline that calls the writer lives in
``santacoder.data.prepare``. Layout of a prepared directory ``P``::

    P/tokenizer.json                 the tokenizer of every id below
    P/shards/<rank:05d>/<split>/     one shard per pipeline task and split ("train", "val"):
        tokens.bin                   each document as <|endoftext|> followed by its ids (uint16 when the vocabulary
                                     fits, else uint32): a shard starts with <|endoftext|> and has none at its end,
                                     so a suffix array (infini-gram) can index the file in place, documents parted
                                     by the separator
        doc_offsets.npy              int64, num_docs + 1 entries: document k is tokens[off[k]:off[k+1]], off[k] its eod
        docs.jsonl                   one JSON object per document, in order: id, source, repo, path, license,
                                     language, bytes (null where unknown, any other metadata given after them),
                                     token_offset (off[k]) and num_tokens (off[k+1] - off[k], its eod included)
        meta.json                    split, num_tokens, num_docs, dtype, eod_id, tokenizer (fingerprint), languages
                                     ({language or "unknown": {docs, tokens, bytes}}), checksums of the three files
    P/manifest.json                  written last, once every task is done: format, tokenizer, fingerprint (of the
                                     whole prepared data), tasks, and per split num_tokens, num_docs, shards (in order)

A split that received no document is a shard like any other, with an empty tokens.bin (0 tokens, offsets [0]).

Training reads a split as one virtual sequence with the layout of the in-run token store
(``santacoder.data.token_store``: d1 eod d2 eod ... dn eod): the shards concatenated in manifest order, without
the leading eod, with one eod at the end. So the same documents in the same order give the same samples either way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from santacoder.data.cache_files import remove_stale_temporaries, temporary_prefix
from santacoder.data.checksums import ChecksummedFile
from santacoder.data.corpus import Document
from santacoder.data.token_store import SPLITS, store_problem, token_dtype
from santacoder.durable import fsync_dir, make_publishable, write_bytes_atomically
from santacoder.errors import ConfigError, is_disk_full, out_of_space
from santacoder.text.tokenizer import CodeTokenizer

FORMAT = 1  # of manifest.json; a reader refuses a newer one
MANIFEST = "manifest.json"
SHARD_FILES = ("tokens.bin", "doc_offsets.npy", "docs.jsonl")  # each with its checksum in meta.json
DOC_FIELDS = ("id", "source", "repo", "path", "license", "language", "bytes")
# Memory maps a reader keeps open at once: each holds a file descriptor, and a corpus can have more shards than a
# process may open files. Training reads the shards in random order, so the least recently used one is closed.
MAX_OPEN_SHARDS = 64


# -- the manifest ---------------------------------------------------------------------------------------------


def write_manifest(prepared_dir: str | Path, manifest: dict) -> None:
    """Write ``P/manifest.json`` whole or not at all (temporary file, fsync, rename, fsync of ``P``): its presence
    says that every shard is complete, so it is written last."""
    problem = _manifest_problem(manifest)
    if problem:
        raise ValueError(f"not a manifest of format {FORMAT}: {problem}")
    write_bytes_atomically(Path(prepared_dir) / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def read_manifest(prepared_dir: str | Path) -> dict:
    """``P/manifest.json``; a ConfigError in one line when it is missing (prepare not run or not finished),
    unreadable, or of a newer format than this reader's."""
    path = Path(prepared_dir).expanduser() / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{str(path.parent)!r} is not a prepared directory or its prepare has not finished (no {MANIFEST}): "
            "run prepare again (it resumes)"
        ) from None
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{str(path)!r} is unreadable ({type(e).__name__}: {e}); delete it and run prepare again (it resumes)"
        ) from None
    version = manifest.get("format") if isinstance(manifest, dict) else None
    if isinstance(version, int) and version > FORMAT:
        raise ConfigError(
            f"{str(path)!r} is of format {version}, newer than this santacoder reads ({FORMAT}): upgrade santacoder"
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise ConfigError(f"{str(path)!r} is not a valid manifest ({problem}); delete it and run prepare again")
    return manifest


def _manifest_problem(manifest: object) -> str | None:
    """What the readers need of a manifest and it lacks, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    for key, kind in (("format", int), ("tokenizer", str), ("fingerprint", str), ("tasks", int), ("splits", dict)):
        if not isinstance(manifest.get(key), kind):
            return f"{key} is not a{'n' if kind is int else ''} {kind.__name__}"
    for split in SPLITS:
        entry = manifest["splits"].get(split)
        if not isinstance(entry, dict):
            return f"splits.{split} is missing"
        if not all(isinstance(entry.get(k), int) for k in ("num_tokens", "num_docs")):
            return f"splits.{split} lacks num_tokens or num_docs"
        shards = entry.get("shards")
        if not shards or not isinstance(shards, list) or not all(isinstance(s, str) for s in shards):
            return f"splits.{split}.shards is not a list of shard directories"
    return None


# -- writing one task's shard ---------------------------------------------------------------------------------


class ShardWriter:
    """Writes the shard of pipeline task ``rank`` into ``P/shards/<rank:05d>``: ``add`` each document to its split,
    then ``close``, or ``discard`` on failure. As a context manager it closes when the block ends and discards when
    the block raises.

    Everything is written, hashed on the way, into a hidden temporary directory in ``P/shards`` and renamed into
    place by ``close``: a killed task leaves no shard that looks complete, only litter that the next writer removes
    (``santacoder.data.cache_files``); a rerun task replaces its older shard whole.
    """

    def __init__(self, prepared_dir: str | Path, rank: int, tokenizer: CodeTokenizer):
        self.shards = Path(prepared_dir) / "shards"
        self.final = self.shards / f"{rank:05d}"
        self.shards.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.shards)  # killed tasks' temporaries; a running task's stay
        hidden = "." + temporary_prefix(self.final)
        self.tmp = Path(tempfile.mkdtemp(prefix=hidden, suffix=".partial", dir=self.shards))
        make_publishable(self.tmp)
        self._replaced = self.shards / f"{hidden}replaced"  # the older shard, between two renames
        self.tokenizer = tokenizer
        self._splits: dict[str, _SplitShard] = {}
        try:
            for split in SPLITS:
                self._splits[split] = _SplitShard(self.tmp / split, tokenizer)
        except BaseException:
            self.discard()
            raise

    def add(self, split: str, ids: Sequence[int], doc: dict) -> None:
        """Append a document: ``<|endoftext|>`` + ``ids`` to the split's tokens, ``doc`` (its metadata: the keys
        of ``DOC_FIELDS``, null where absent, and any others) as its line of docs.jsonl."""
        if split not in self._splits:
            raise ValueError(f"split {split!r} is not one of {SPLITS} (or the shard is closed)")
        self._splits[split].add(ids, doc)

    def close(self) -> dict[str, dict]:
        """Make the shard durable and put it in place; per split: num_docs, num_tokens and languages."""
        try:
            summary = {split: shard.close() for split, shard in self._splits.items()}
            fsync_dir(self.tmp)  # the split directories, before the rename publishes them
            if self.final.exists():  # a rerun of this task: the older shard goes once the new one is in place
                shutil.rmtree(self._replaced, ignore_errors=True)
                os.replace(self.final, self._replaced)
            os.replace(self.tmp, self.final)
            fsync_dir(self.shards)
            shutil.rmtree(self._replaced, ignore_errors=True)
        except BaseException as e:
            self.discard()
            if is_disk_full(e):
                raise out_of_space(
                    e, f"shard {self.final.name}", self.shards, "free space there and run prepare again (it resumes)"
                ) from e
            raise
        self._splits = {}
        return summary

    def discard(self) -> None:
        """Remove what this writer wrote (a no-op after ``close``)."""
        for shard in self._splits.values():
            shard.discard()
        self._splits = {}
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


class _SplitShard:
    """One split of a shard being written: tokens, offsets and document lines, each file hashed as it is written."""

    def __init__(self, directory: Path, tokenizer: CodeTokenizer):
        directory.mkdir()
        self.directory = directory
        self.tokenizer = tokenizer
        self.dtype = token_dtype(tokenizer)
        self.tokens = ChecksummedFile(directory / "tokens.bin")
        self.docs = ChecksummedFile(directory / "docs.jsonl")
        self.offsets = [0]
        self.languages: dict[str, dict[str, int]] = {}

    def add(self, ids: Sequence[int], doc: dict) -> None:
        row = np.empty(len(ids) + 1, dtype=np.int64)
        row[0], row[1:] = self.tokenizer.eod_id, ids
        if row.min() < 0 or row.max() >= len(self.tokenizer):  # would wrap around in uint16 without a word
            raise ValueError(f"document {doc.get('id')!r} has ids outside the tokenizer's {len(self.tokenizer)}")
        self.tokens.write(row.astype(self.dtype).tobytes())
        start = self.offsets[-1]
        self.offsets.append(start + len(row))
        record = {key: doc.get(key) for key in DOC_FIELDS}
        record.update({k: v for k, v in doc.items() if k not in DOC_FIELDS})
        record.update(token_offset=start, num_tokens=len(row))
        self.docs.write((json.dumps(record) + "\n").encode())
        counts = self.languages.setdefault(str(doc.get("language") or "unknown"), {"docs": 0, "tokens": 0, "bytes": 0})
        counts["docs"] += 1
        counts["tokens"] += len(row)
        counts["bytes"] += int(doc.get("bytes") or 0)

    def close(self) -> dict:
        checksums = {"tokens.bin": self.tokens.close(), "docs.jsonl": self.docs.close()}
        with ChecksummedFile(self.directory / "doc_offsets.npy") as f:
            np.save(f, np.asarray(self.offsets, dtype=np.int64))
            checksums["doc_offsets.npy"] = f.close()
        summary = {"num_docs": len(self.offsets) - 1, "num_tokens": self.offsets[-1], "languages": self.languages}
        meta = {
            "split": self.directory.name,
            "num_tokens": summary["num_tokens"],
            "num_docs": summary["num_docs"],
            "dtype": np.dtype(self.dtype).name,
            "eod_id": self.tokenizer.eod_id,
            "tokenizer": self.tokenizer.fingerprint(),
            "languages": dict(sorted(self.languages.items())),
            "checksums": checksums,
        }
        with ChecksummedFile(self.directory / "meta.json") as f:
            f.write(json.dumps(meta, indent=2).encode())
            f.close()
        return summary

    def discard(self) -> None:
        self.tokens.discard()
        self.docs.discard()


# -- checking a shard -----------------------------------------------------------------------------------------


def shard_problem(
    shard_split_dir: str | Path, tokenizer: CodeTokenizer | None = None, check_contents: bool = True
) -> str | None:
    """Why one split of a shard cannot be trusted (missing or unreadable files, sizes or offsets that disagree with
    meta.json, another tokenizer, a document that does not start with <|endoftext|>, content that fails its
    checksum), or None when it is whole. ``check_contents`` reads the files once, streaming (checksums, and the
    first token of every document); without it, the metadata and offsets only."""
    directory = Path(shard_split_dir)
    problem = store_problem(directory, tokenizer, check_contents=check_contents, checked=SHARD_FILES)
    if problem:
        return problem
    meta = json.loads((directory / "meta.json").read_text())  # store_problem read it
    missing = [name for name in SHARD_FILES if name not in meta.get("checksums", {})]
    if missing:  # unlike the in-run stores, shards always had them: a shard without is not one of ours
        return f"meta.json has no checksum of {', '.join(missing)}"
    if not (directory / "docs.jsonl").is_file():
        return "docs.jsonl is missing"
    eod_id = meta.get("eod_id")
    if tokenizer is not None and eod_id != tokenizer.eod_id:
        return f"its <|endoftext|> is id {eod_id}, the tokenizer's is {tokenizer.eod_id}"
    offsets = np.load(directory / "doc_offsets.npy")
    if (np.diff(offsets) < 1).any():
        return "doc_offsets.npy has an empty document (each one starts with <|endoftext|>)"
    if check_contents and len(offsets) > 1:
        tokens = np.memmap(directory / "tokens.bin", dtype=meta["dtype"], mode="r")
        bad = np.flatnonzero(tokens[offsets[:-1]] != eod_id)
        if bad.size:
            return f"document {int(bad[0])} does not start with <|endoftext|> (id {eod_id})"
    return None


# -- reading a split for training -----------------------------------------------------------------------------


class PreparedSplit:
    """One split of a prepared directory as training reads it: ``num_tokens``, ``num_docs``, and ``tokens``, whose
    slices ``tokens[start:stop]`` read the virtual sequence d1 eod d2 eod ... dn eod over every shard of the split
    (module docstring). Read through the manifest (given, or read from ``prepared_dir``); a shard whose metadata
    disagrees with it is refused in one line."""

    def __init__(self, prepared_dir: str | Path, split: str, manifest: dict | None = None):
        self.directory = Path(prepared_dir).expanduser()
        manifest = manifest if manifest is not None else read_manifest(self.directory)
        entry = manifest["splits"][split]
        self.split = split
        self.num_tokens = int(entry["num_tokens"])
        self.num_docs = int(entry["num_docs"])
        self.shards = [self.directory / shard for shard in entry["shards"]]
        sizes, dtypes, eods = [], set(), set()
        for shard in self.shards:
            meta = _shard_meta(shard)
            sizes.append(int(meta["num_tokens"]))
            dtypes.add(meta["dtype"])
            eods.add(int(meta["eod_id"]))
        if len(dtypes) != 1 or len(eods) != 1:
            raise ConfigError(
                f"the {split} shards of {str(self.directory)!r} disagree on their dtype {sorted(dtypes)} or "
                f"<|endoftext|> id {sorted(eods)}: they are not one prepare's; prepare the data again"
            )
        if sum(sizes) != self.num_tokens:
            raise ConfigError(
                f"the {split} shards of {str(self.directory)!r} hold {sum(sizes)} tokens, {MANIFEST} says "
                f"{self.num_tokens}: they changed since it was written; prepare the data again"
            )
        self.tokens = ShardedTokens([s / "tokens.bin" for s in self.shards], sizes, dtypes.pop(), eods.pop())


def held_out_documents(prepared_dir: str | Path, tokenizer: CodeTokenizer) -> Iterator[Document]:
    """The validation split's documents, decoded from their token ids, with their docs.jsonl metadata: the
    held-out files of prepared data, for evaluations that need text (eval.py's fim_single_line source=corpus)."""
    split = PreparedSplit(prepared_dir, "val")
    for shard in split.shards:
        meta = json.loads((shard / "meta.json").read_text())
        if not meta["num_tokens"]:  # a task's empty split (no file to map)
            continue
        offsets = np.load(shard / "doc_offsets.npy")
        tokens = np.memmap(shard / "tokens.bin", dtype=meta["dtype"], mode="r")
        with open(shard / "docs.jsonl", encoding="utf-8") as lines:
            for k, line in enumerate(lines):
                doc = json.loads(line)
                ids = tokens[offsets[k] + 1 : offsets[k + 1]].tolist()  # without the leading <|endoftext|>
                text = tokenizer.decode_bytes(ids).decode("utf-8", errors="replace")
                yield Document(str(doc["id"]), text, doc)


def _shard_meta(shard: Path) -> dict:
    """A shard's meta.json, once its tokens.bin has the size it says (a stat: no data read)."""
    try:
        meta = json.loads((shard / "meta.json").read_text())
        size = (shard / "tokens.bin").stat().st_size
        expected = int(meta["num_tokens"]) * np.dtype(meta["dtype"]).itemsize
        int(meta["eod_id"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem = f"{Path(e.filename).name} is missing" if isinstance(e, FileNotFoundError) else f"{e!r}"
        raise ConfigError(f"shard {str(shard)!r} is unreadable ({problem}); prepare the data again") from None
    if size != expected:
        raise ConfigError(
            f"shard {str(shard)!r} is damaged (tokens.bin holds {size} bytes, meta.json says {expected}); "
            "prepare the data again"
        )
    return meta


class ShardedTokens:
    """The virtual token sequence of a split, sliced as ``tokens[start:stop]`` (or indexed) into a NumPy array of
    the shards' dtype; a slice may span any number of shards.

    Holds O(shards) state: each shard's file and where it starts in the concatenation of the shards. A shard is
    memory-mapped when a slice first reaches it (at most ``MAX_OPEN_SHARDS`` at once), so memory stays flat
    however large the corpus. Pickles without its memory maps: each DataLoader worker opens its own."""

    def __init__(self, files: list[Path], sizes: list[int], dtype: str, eod_id: int):
        self.files = files
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self.dtype = np.dtype(dtype)
        self.eod_id = eod_id
        self._maps: OrderedDict[int, np.memmap] = OrderedDict()

    def __len__(self) -> int:
        # the concatenation loses its leading eod and gains one at the end: as many tokens as the shards hold
        return int(self.starts[-1])

    def __getitem__(self, key: int | slice) -> np.ndarray:
        n = len(self)
        if not isinstance(key, slice):
            index = int(key) + n if int(key) < 0 else int(key)
            if not 0 <= index < n:
                raise IndexError(f"token {key} out of range for {n} tokens")
            return self[index : index + 1][0]
        start, stop, step = key.indices(n)
        if step != 1:
            raise IndexError("only contiguous slices of the token sequence are supported")
        stop = max(start, stop)
        # virtual position p is position p + 1 of the concatenation; position n - 1 is the eod appended at the end
        pieces = self._read(start + 1, min(stop + 1, n))
        if stop == n and start < stop:
            pieces.append(np.array([self.eod_id], dtype=self.dtype))
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=self.dtype)

    def _read(self, begin: int, end: int) -> list[np.ndarray]:
        """Positions [begin, end) of the shards' concatenation, one piece per shard it spans."""
        pieces = []
        while begin < end:
            # the last shard starting at or before `begin`: never an empty one, which starts where the next does
            k = int(np.searchsorted(self.starts, begin, side="right")) - 1
            upto = min(end, int(self.starts[k + 1]))
            base = int(self.starts[k])
            pieces.append(self._shard(k)[begin - base : upto - base])
            begin = upto
        return pieces

    def _shard(self, k: int) -> np.memmap:
        tokens = self._maps.get(k)
        if tokens is None:
            tokens = self._maps[k] = np.memmap(self.files[k], dtype=self.dtype, mode="r")
            if len(self._maps) > MAX_OPEN_SHARDS:
                self._maps.popitem(last=False)  # unmapped once no slice of it is alive
        else:
            self._maps.move_to_end(k)
        return tokens

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": OrderedDict()}
