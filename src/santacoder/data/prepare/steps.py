"""The prepare pipeline's own datatrove steps: read a corpus with this project's rules, write token shards, and
write the manifest once every task is done.

Each step is a ``PipelineStep`` whose ``run(data, rank, world_size)`` is a generator over datatrove ``Document``s;
the executor (local or SLURM) runs the list once per task. A task is the unit of resumption: datatrove marks it
complete only after its whole pipeline ran, and reruns an incomplete one from its start, so every output here is
written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from datatrove.data import Document as DatatroveDocument
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from santacoder.data.corpus import Corpus, is_validation
from santacoder.data.shards import ShardWriter
from santacoder.text.tokenizer import CodeTokenizer, FIMTokens

log = logging.getLogger(__name__)


class CorpusReader(PipelineStep):
    """Reads one source (a directory of code, or JSONL / JSONL.gz / Parquet in The Stack's layout) with the rules
    of training's own reader (``santacoder.data.corpus``: bad files and rows skipped one by one, counted by reason,
    examples named). Task ``rank`` reads every ``world_size``-th file of the source's sorted list; documents keep
    their name (the train/validation split's key) as id and their path, language, repository, license and stars
    as metadata."""

    name = "santacoder corpus"
    type = "📖 - READER"

    def __init__(self, source: str, extensions: list[str], max_doc_bytes: int):
        super().__init__()
        self.source, self.extensions, self.max_doc_bytes = source, list(extensions), max_doc_bytes

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data  # an earlier source's documents first: several readers chain
        corpus = Corpus(self.source, self.extensions, self.max_doc_bytes)
        for path in corpus.files[rank::world_size]:
            for doc in corpus.read_file(path):
                self.stat_update("documents")
                yield DatatroveDocument(text=doc.text, id=doc.name, metadata={**doc.meta, "source": str(corpus.source)})
        for reason, count in sorted(corpus.skipped.counts.items()):
            self.stat_update(f"skipped_{reason}", value=count)
        if corpus.skipped.total:
            log.warning("task %d skipped %d documents of %s: %s", rank, corpus.skipped.total, corpus.source,
                        corpus.skipped.summary())  # fmt: skip


class TokenShardWriter(PipelineStep):
    """Tokenizes the documents in batches (as training's in-run path does: the same ids) and writes this task's
    shard of the prepared directory (``santacoder.data.shards``): each document to the train or the validation
    split by a hash of its name, so the split does not depend on the number of tasks."""

    name = "santacoder token shards"
    type = "💽 - WRITER"
    progress_every_s = 30.0  # a progress line per task at most this often: documents, MB and tokens per second

    def __init__(self, out: str, tokenizer: str, fim_tokens: dict, val_fraction: float, batch_bytes: int):
        super().__init__()
        self.out, self.tokenizer_file, self.fim_tokens = out, tokenizer, fim_tokens
        self.val_fraction, self.batch_bytes = val_fraction, batch_bytes

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tokenizer = CodeTokenizer.from_file(self.tokenizer_file, FIMTokens(**self.fim_tokens))
        writer = ShardWriter(Path(self.out), rank, tokenizer)
        self._progress = _Progress(rank, self.progress_every_s)
        try:
            batch, size = [], 0
            for doc in data or ():
                batch.append(doc)
                size += len(doc.text.encode("utf-8"))
                if size >= self.batch_bytes:
                    self._write(batch, tokenizer, writer)
                    batch, size = [], 0
            self._write(batch, tokenizer, writer)
            summary = writer.close()
            self._progress.report(final=True)
        except BaseException:
            writer.discard()
            raise
        for split, counts in summary.items():
            self.stat_update(f"{split}_documents", value=counts["num_docs"])
            self.stat_update(f"{split}_tokens", value=counts["num_tokens"])
        return
        yield  # a generator that yields nothing: the pipeline's last step

    def _write(self, batch: list[DatatroveDocument], tokenizer: CodeTokenizer, writer: ShardWriter) -> None:
        if not batch:
            return
        for doc, ids in zip(batch, tokenizer.encode_batch([d.text for d in batch]), strict=True):
            split = "val" if is_validation(doc.id, self.val_fraction) else "train"
            meta = doc.metadata
            writer.add(split, ids, {
                "id": doc.id, "source": meta.get("source"), "repo": meta.get("repo"), "path": meta.get("path"),
                "license": meta.get("license"), "language": meta.get("language"), "stars": meta.get("stars"),
                "bytes": len(doc.text.encode("utf-8")),
            })  # fmt: skip
            self.stat_update("bytes", value=len(doc.text.encode("utf-8")))
            self._progress.add(len(doc.text.encode("utf-8")), len(ids) + 1)
        self._progress.report()


class _Progress:
    """Documents, MB and tokens of one task so far, logged with their rates."""

    def __init__(self, rank: int, every_s: float):
        self.rank, self.every_s = rank, every_s
        self.start = self.last = time.monotonic()
        self.docs = self.bytes = self.tokens = 0

    def add(self, n_bytes: int, n_tokens: int) -> None:
        self.docs, self.bytes, self.tokens = self.docs + 1, self.bytes + n_bytes, self.tokens + n_tokens

    def report(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < self.every_s:
            return
        self.last, elapsed = now, max(now - self.start, 1e-9)
        log.info("task %d%s: %d documents, %.1f MB, %d tokens (%.0f docs/s, %.2f MB/s, %.0f tokens/s)", self.rank,
                 " done" if final else "", self.docs, self.bytes / 1e6, self.tokens, self.docs / elapsed,
                 self.bytes / 1e6 / elapsed, self.tokens / elapsed)  # fmt: skip


class ManifestWriter(PipelineStep):
    """One task, run after every shard task completed: ``manifest.json`` (``santacoder.data.prepare.manifest``),
    the file whose presence says that the prepared directory is complete."""

    name = "santacoder manifest"
    type = "📝 - MANIFEST"

    def __init__(self, out: str, settings: dict):
        super().__init__()
        self.out, self.settings = out, settings

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from santacoder.data.prepare.manifest import write_prepared_manifest

        write_prepared_manifest(Path(self.out), self.settings)
        return
        yield
