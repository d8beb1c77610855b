"""A memory-mapped token store: every document's ids followed by ``<|endoftext|>``, in one flat file.

Layout of a store directory: ``tokens.bin`` (uint16 when the vocabulary fits, else uint32),
``doc_offsets.npy`` (int64, n_docs + 1 start offsets) and ``meta.json``, which also records a checksum of each
of the other two. Stores are written to a temporary directory, fsynced and renamed into place, so neither a crash
nor a power loss leaves a half-written store that looks complete; a file that a power loss zeroed anyway fails its
checksum.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from santacoder.data.cache_files import temporary_prefix
from santacoder.data.checksums import ChecksummedFile, checksum_of
from santacoder.data.corpus import Document, is_validation
from santacoder.durable import fsync_dir, make_publishable
from santacoder.errors import is_disk_full, out_of_space
from santacoder.text.tokenizer import CodeTokenizer

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
# Text tokenized per call. tokenizers holds ~120 bytes of RAM per byte of each document it is encoding (one per
# thread) and ~50 per byte of the call's output (measured with 0.23), so this bounds tokenization to well under
# 1 GB whatever the corpus (documents are at most data.max_doc_bytes), and is still hundreds of files per call.
BATCH_BYTES = 4 * 2**20
# Files whose content meta.json vouches for with a checksum.
CHECKED_FILES = ("tokens.bin", "doc_offsets.npy")


def token_dtype(tokenizer: CodeTokenizer) -> type:
    """The smallest unsigned type that holds every id of ``tokenizer``: half the disk and page cache of uint32 for
    any vocabulary up to 65,536 tokens (SantaCoder's 49,157)."""
    return np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32


class TokenStore:
    """Read side of one split. Pickles by path, so DataLoader workers open their own memory map."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "meta.json").read_text())
        self._tokens: np.memmap | None = None

    @property
    def tokens(self) -> np.memmap:
        if self._tokens is None:
            self._tokens = np.memmap(self.directory / "tokens.bin", dtype=self.meta["dtype"], mode="r")
        return self._tokens

    @property
    def doc_offsets(self) -> np.ndarray:
        """Where each document starts (n_docs + 1 offsets): for store checks, held-out documents and
        attribution, which read the store document by document (training reads it as one stream)."""
        return np.load(self.directory / "doc_offsets.npy")

    @property
    def num_tokens(self) -> int:
        return int(self.meta["num_tokens"])

    @property
    def num_docs(self) -> int:
        return int(self.meta["num_docs"])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokens": None}


def store_problem(
    directory: str | Path,
    tokenizer: CodeTokenizer | None = None,
    *,
    check_contents: bool = True,
    checked: tuple[str, ...] = CHECKED_FILES,
) -> str | None:
    """Why the store of one split cannot be trusted (missing or unreadable files, sizes that disagree with
    ``meta.json``, offsets out of order, another tokenizer's ids, content that fails its checksum), or None when
    it is whole. ``check_contents`` reads every file of ``checked`` (the tokens once, streaming) to compare the
    checksums: done once per job, by the process that prepares the data; without it, the metadata and offsets
    only."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
        num_tokens, num_docs, dtype = int(meta["num_tokens"]), int(meta["num_docs"]), np.dtype(meta["dtype"])
        offsets = np.load(directory / "doc_offsets.npy")
        size = (directory / "tokens.bin").stat().st_size
        checksums = dict(meta.get("checksums", {}))
    except FileNotFoundError as e:
        return f"{Path(e.filename).name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:  # truncated JSON or .npy, wrong fields
        return f"its metadata is unreadable ({type(e).__name__}: {e})"
    if size != num_tokens * dtype.itemsize:
        return f"tokens.bin holds {size} bytes, meta.json says {num_tokens} tokens of {dtype.itemsize} bytes"
    if offsets.shape != (num_docs + 1,) or offsets[0] != 0 or offsets[-1] != num_tokens or (np.diff(offsets) < 0).any():
        return "doc_offsets.npy does not match meta.json"
    if tokenizer is not None and meta.get("tokenizer") != tokenizer.fingerprint():
        return f"it was written by another tokenizer ({meta.get('tokenizer')}, not {tokenizer.fingerprint()})"
    # Stores written before checksums were recorded have none: they pass on the checks above, so existing caches
    # keep working.
    for name in (n for n in checked if n in checksums and check_contents):
        try:
            actual = checksum_of(directory / name)
        except OSError as e:
            return f"{name} is unreadable ({type(e).__name__}: {e})"
        if actual != checksums[name]:
            return f"{name} is damaged: its content does not match the checksum in meta.json"
    return None


def build_token_stores(
    documents: Iterable[Document],
    tokenizer: CodeTokenizer,
    out_dir: str | Path,
    val_fraction: float,
    batch_bytes: int = BATCH_BYTES,
) -> dict[str, TokenStore]:
    """Tokenize ``documents`` once into a train and a validation store under ``out_dir``, ``batch_bytes`` of
    text (UTF-8) per tokenizer call: the memory bound."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(out_dir), dir=out_dir.parent))
    make_publishable(tmp)
    dtype = token_dtype(tokenizer)
    writers: dict[str, _SplitWriter] = {}
    try:
        writers.update({s: _SplitWriter(tmp / s, dtype) for s in SPLITS})
        batch: list[Document] = []
        size = 0
        for doc in documents:
            batch.append(doc)
            size += len(doc.text.encode("utf-8"))
            if size >= batch_bytes:
                _write_batch(batch, tokenizer, writers, val_fraction)
                batch, size = [], 0
        _write_batch(batch, tokenizer, writers, val_fraction)
        for split, writer in writers.items():
            writer.close({"split": split, "tokenizer": tokenizer.fingerprint(), "eod_id": tokenizer.eod_id})
        fsync_dir(tmp)  # the split directories, so the rename below never publishes a store whose files are lost
        try:
            os.replace(tmp, out_dir)  # atomic: readers see no store or a complete one
            fsync_dir(out_dir.parent)  # the rename itself
        except OSError:
            if not all((out_dir / s / "meta.json").exists() for s in SPLITS):
                raise
            shutil.rmtree(tmp)  # another process finished the same store first; its content is the same
    except BaseException as e:
        for writer in writers.values():
            writer.file.discard()
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):
            raise out_of_space(
                e, "the token store", out_dir.parent, "free space there or set data.cache_dir to a larger disk"
            ) from e
        raise
    stores = {s: TokenStore(out_dir / s) for s in SPLITS}
    log.info(
        "token store %s: train %d docs / %d tokens, val %d docs / %d tokens",
        out_dir,
        stores["train"].num_docs,
        stores["train"].num_tokens,
        stores["val"].num_docs,
        stores["val"].num_tokens,
    )
    return stores


def _write_batch(batch: list[Document], tokenizer: CodeTokenizer, writers: dict, val_fraction: float) -> None:
    if not batch:
        return
    for doc, ids in zip(batch, tokenizer.encode_batch([d.text for d in batch]), strict=True):
        split = "val" if is_validation(doc.name, val_fraction) else "train"
        writers[split].add(ids + [tokenizer.eod_id])


class _SplitWriter:
    def __init__(self, directory: Path, dtype: type):
        directory.mkdir(parents=True)
        self.directory = directory
        self.dtype = dtype
        self.file = ChecksummedFile(directory / "tokens.bin")
        self.offsets = [0]

    def add(self, ids: list[int]) -> None:
        self.file.write(np.asarray(ids, dtype=self.dtype).tobytes())
        self.offsets.append(self.offsets[-1] + len(ids))

    def close(self, meta: dict) -> None:
        checksums = {"tokens.bin": self.file.close()}
        with ChecksummedFile(self.directory / "doc_offsets.npy") as f:
            np.save(f, np.asarray(self.offsets, dtype=np.int64))
            checksums["doc_offsets.npy"] = f.close()
        meta = {
            **meta,
            "dtype": np.dtype(self.dtype).name,
            "num_tokens": self.offsets[-1],
            "num_docs": len(self.offsets) - 1,
            "checksums": checksums,
        }
        with open(self.directory / "meta.json", "w") as f:
            f.write(json.dumps(meta, indent=2))
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.directory)
