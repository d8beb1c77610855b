"""Read a code corpus: a directory of source files, or JSONL / JSONL.gz / Parquet files with a ``content``
column (The Stack's layout). Documents come out in a deterministic order with a stable name each."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import sysconfig
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from santacoder.errors import ConfigError

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__", ".git", "node_modules", ".venv"}


def default_source() -> Path:
    """The running interpreter's standard library: real Python code present on every machine."""
    return Path(sysconfig.get_paths()["stdlib"])


@dataclass
class Document:
    name: str  # stable identity (relative path, or file:row): decides the train/validation split
    text: str
    # where it came from, for attribution and per-language counts: path, language, and from The Stack's columns
    # when a table has them, repo, license and stars (None where unknown)
    meta: dict = field(default_factory=dict)


# languages by file extension (a source file's, or a table row's `ext`), as The Stack names them in lower case
LANGUAGES = {".py": "python", ".java": "java", ".js": "javascript", ".ts": "typescript", ".c": "c", ".h": "c",
             ".cpp": "c++", ".cc": "c++", ".hpp": "c++", ".go": "go", ".rs": "rust", ".rb": "ruby", ".php": "php",
             ".cs": "c#", ".scala": "scala", ".kt": "kotlin", ".sh": "shell", ".lua": "lua"}  # fmt: skip
# The Stack's columns kept as metadata: (its column, our key)
STACK_COLUMNS = (("max_stars_repo_name", "repo"), ("max_stars_repo_path", "path"), ("max_stars_count", "stars"),
                 ("max_stars_repo_licenses", "license"), ("lang", "language"), ("ext", "ext"))  # fmt: skip


def language_of(path: str, lang: str | None = None, ext: str | None = None) -> str | None:
    """A document's language: a table's ``lang`` column, else its ``ext`` column, else the file's extension."""
    if isinstance(lang, str) and lang:
        return lang.lower()
    suffix = f".{ext.lstrip('.')}" if isinstance(ext, str) and ext else Path(path).suffix
    return LANGUAGES.get(suffix.lower())


def row_meta(row: dict, name: str) -> dict:
    """The metadata of a table row: The Stack's columns where present (licenses as one string)."""
    meta = {ours: row.get(theirs) for theirs, ours in STACK_COLUMNS}
    if isinstance(meta["license"], list):
        meta["license"] = ",".join(str(x) for x in meta["license"])
    meta["path"] = meta["path"] if isinstance(meta["path"], str) else name
    meta["language"] = language_of(meta["path"], meta.pop("language"), meta.pop("ext"))
    return meta


# Why a document was skipped; each reason is counted (SkipCounts) and reported in one warning line.
SKIP_REASONS = {
    "unreadable": "unreadable",
    "not_utf8": "not UTF-8",
    "surrogates": "lone surrogates (not encodable as UTF-8)",
    "binary": "binary (NUL bytes)",
    "too_large": "larger than data.max_doc_bytes",
    "bad_json": "not a JSON object",
    "no_content": "no string 'content'",
    "truncated": "file truncated (rows before the cut kept)",
}
EXAMPLES = 3
# What to do when every document was skipped for a reason (said in the error that an unusable corpus ends with).
REMEDIES = {
    "unreadable": "check the files' permissions, and that each .jsonl.gz is gzip and each .parquet is whole",
    "not_utf8": "code must be UTF-8 text; re-encode the files",
    "bad_json": "each .jsonl line must be one JSON object",
    "no_content": "table rows need a string 'content' column (The Stack's layout)",
    "too_large": "raise data.max_doc_bytes (tokenizing holds ~120 bytes of RAM per byte of a document)",
    "truncated": "the compressed file ends early; download it again",
}


@dataclass
class SkipCounts:
    """Documents (files or rows) that could not be used, by reason, with a few examples (``file:line``);
    logged, never fatal: one bad row never costs the good rows around it."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"{where} ({SKIP_REASONS[reason]})")

    def __getattr__(self, reason: str) -> int:  # skipped.not_utf8 etc.
        if reason in SKIP_REASONS:
            return self.counts.get(reason, 0)
        raise AttributeError(reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        parts = ", ".join(f"{n} {SKIP_REASONS[r]}" for r, n in sorted(self.counts.items()))
        return f"{parts}; e.g. {', '.join(self.examples)}"


def is_binary(data: bytes) -> bool:
    """Code is text: a NUL byte in the first 8 KiB marks a binary file (git's heuristic)."""
    return b"\0" in data[:8192]


class Corpus:
    """The documents under ``source`` (a directory or a table file; None: the standard library) whose file names
    end with one of ``extensions`` (e.g. ``(".py", ".java", ".js")``, SantaCoder's languages). Documents larger
    than ``max_doc_bytes`` (UTF-8; None: no limit) are skipped before they are read whole."""

    def __init__(
        self,
        source: str | Path | None,
        extensions: tuple[str, ...] | list[str],
        max_doc_bytes: int | None = None,
        setting: str = "data.source",  # the setting that named the source, for the messages
    ):
        self.setting = setting
        self.source = Path(source).expanduser() if source else default_source()
        self.extensions = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
        self.max_doc_bytes = max_doc_bytes
        self.skipped = SkipCounts()
        self._fingerprint: str | None = None
        if not self.source.exists():
            raise ConfigError(
                f"{self.setting}={str(self.source)!r} does not exist; point it at a directory of code "
                "or a .jsonl/.jsonl.gz/.parquet file with a 'content' column"
            )
        self.files = self._list_files()
        if not self.files:
            raise ConfigError(
                f"{self.setting}={str(self.source)!r} holds no files with extensions {list(self.extensions)} "
                f"and no {'/'.join(TABLE_SUFFIXES)} files: the corpus is empty"
            )

    def _list_files(self) -> list[Path]:
        if self.source.is_file():
            if not self._is_table(self.source):
                return [self.source] if self.source.suffix in self.extensions else []
            return [self.source]
        files, unlisted = [], []
        for directory, subdirs, names in os.walk(self.source, onerror=unlisted.append):
            subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS]
            for name in names:
                path = Path(directory, name)
                if (path.suffix in self.extensions or self._is_table(path)) and path.is_file():
                    files.append(path)
        if unlisted:
            first = unlisted[0]
            where = f"{first.filename} ({first.strerror})"
            if not files:  # not "empty": the user must know it is a permission (or I/O) problem
                raise ConfigError(
                    f"{self.setting}={str(self.source)!r} cannot be read: {where}; give this user read and execute "
                    f"permission on it (chmod -R u+rX) or point {self.setting} elsewhere"
                )
            log.warning(
                "could not list %d directories of %s, their files are left out: e.g. %s",
                len(unlisted),
                self.source,
                where,
            )
        return sorted(files)

    @staticmethod
    def _is_table(path: Path) -> bool:
        return path.name.endswith(TABLE_SUFFIXES)

    def fingerprint(self) -> str:
        """Changes whenever a file is added, removed or modified (path, size and mtime of every file).
        Computed once per Corpus: a large corpus has many files to stat."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        h = hashlib.sha256(str(self.source.resolve()).encode())
        h.update(repr(self.extensions).encode())
        if self.max_doc_bytes is not None:  # the limit decides which documents are in the corpus
            h.update(f"max_doc_bytes={self.max_doc_bytes}".encode())
        for path in self.files:
            st = path.stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def __iter__(self) -> Iterator[Document]:
        self.skipped = SkipCounts()
        used = 0
        for path in self.files:
            for doc in self.read_file(path):
                used += 1
                yield doc
        if self.skipped.total:
            log.warning("skipped %d documents of %s: %s", self.skipped.total, self.source, self.skipped.summary())
        if not used:
            self._refuse_unusable()

    def read_file(self, path: Path) -> Iterator[Document]:
        """The documents of one of ``self.files``, bad ones skipped and counted in ``self.skipped``: a source
        file is one document, a table one per usable row. (``prepare`` gives each task every n-th file.)"""
        name = str(path.relative_to(self.source)) if self.source.is_dir() else path.name
        if path.name.endswith(".parquet"):
            yield from self._read_parquet(path, name)
        elif self._is_table(path):
            yield from self._read_jsonl(path, name)
        else:
            yield from filter(None, [self._read_source_file(path, name)])

    def _refuse_unusable(self) -> None:
        """Every file or row was skipped: say why, and what to do, instead of a later 'corpus too small'."""
        remedies = [REMEDIES[r] for r in sorted(self.skipped.counts) if r in REMEDIES]
        raise ConfigError(
            f"{self.setting}={str(self.source)!r} has no usable document: all were skipped "
            f"({self.skipped.summary() if self.skipped.total else 'every file is empty'})"
            + (f"; {'; '.join(remedies)}" if remedies else "")
        )

    def _too_large(self, size: int) -> bool:
        return self.max_doc_bytes is not None and size > self.max_doc_bytes

    def _read_source_file(self, path: Path, name: str) -> Document | None:
        try:
            if self._too_large(path.stat().st_size):  # never read whole: a 200 MB file is not code to learn
                self.skipped.add("too_large", name)
                return None
            data = path.read_bytes()
        except OSError:
            self.skipped.add("unreadable", name)
            return None
        if is_binary(data):
            self.skipped.add("binary", name)
            return None
        try:
            return Document(name, data.decode("utf-8"), {"path": name, "language": language_of(name)})
        except UnicodeDecodeError:
            self.skipped.add("not_utf8", name)
            return None

    def _read_jsonl(self, path: Path, name: str) -> Iterator[Document]:
        """Row by row, in bytes: a bad row (bytes, JSON, type, surrogates) is skipped and counted alone; a
        truncated .gz keeps every row before the cut."""
        opener = gzip.open if path.name.endswith(".gz") else open
        try:
            with opener(path, "rb") as f:
                for number, raw in enumerate(self._lines(f), start=1):
                    where = f"{name}:{number}"
                    if raw is None:
                        self.skipped.add("too_large", where)
                        continue
                    doc = self._jsonl_row(raw, where, f"{name}:{number - 1}")
                    if doc is not None:
                        yield doc
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            self.skipped.add("truncated" if isinstance(e, EOFError) else "unreadable", name)
        except OSError:
            self.skipped.add("unreadable", name)

    def _lines(self, f) -> Iterator[bytes | None]:
        """The file's lines, or None for a line too long to hold a document of ``max_doc_bytes`` (JSON escapes
        take at most 6 bytes per byte of text), which is read past in pieces, never held whole."""
        if self.max_doc_bytes is None:
            yield from f
            return
        limit = 6 * self.max_doc_bytes + 65536
        while line := f.readline(limit):
            if len(line) < limit or line.endswith(b"\n"):
                yield line
                continue
            while (rest := f.readline(limit)) and not rest.endswith(b"\n"):
                pass
            yield None

    def _jsonl_row(self, raw: bytes, where: str, doc_name: str) -> Document | None:
        if not raw.strip():
            return None
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.skipped.add("not_utf8", where)
            return None
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            self.skipped.add("bad_json", where)
            return None
        content = row.get("content") if isinstance(row, dict) else None
        if not isinstance(content, str):
            self.skipped.add("no_content" if isinstance(row, dict) else "bad_json", where)
            return None
        try:
            content.encode("utf-8")  # JSON allows "\ud800"; the tokenizer cannot take it
        except UnicodeEncodeError:
            self.skipped.add("surrogates", where)
            return None
        if "\0" in content:
            self.skipped.add("binary", where)
            return None
        if self._too_large(len(content.encode("utf-8"))):
            self.skipped.add("too_large", where)
            return None
        # named by row index from 0, as before: splits stay as they were
        return Document(doc_name, content, row_meta(row, doc_name))

    def _read_parquet(self, path: Path, name: str) -> Iterator[Document]:
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
            if "content" not in table.schema_arrow.names:
                raise ConfigError(
                    f"parquet file {str(path)!r} has no 'content' column (columns: {table.schema_arrow.names})"
                )
            columns = ["content"] + [c for c, _ in STACK_COLUMNS if c in table.schema_arrow.names]
            row = 0
            for batch in table.iter_batches(columns=columns, batch_size=256):
                for record in batch.to_pylist():
                    content = record["content"]
                    if not isinstance(content, str):
                        self.skipped.add("no_content", f"{name}:{row}")
                    elif self._too_large(len(content.encode("utf-8"))):
                        self.skipped.add("too_large", f"{name}:{row}")
                    else:
                        yield Document(f"{name}:{row}", content, row_meta(record, f"{name}:{row}"))
                    row += 1
        except (OSError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            self.skipped.add("unreadable", name)


def is_validation(name: str, val_fraction: float) -> bool:
    """Deterministic train/validation split by document name (stable when the corpus grows)."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction
