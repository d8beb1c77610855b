"""Curation inside the prepare pipeline: datatrove steps that apply ``santacoder.data.curation``'s stages and
count what each one removed or changed (``StageReport``), one report file per stage and task; and the stream of
each task's curated documents, kept between the deduplication passes.

datatrove's dedup filters drop documents by their index in the task's stream, so every pass after the signatures
must see exactly the stream they were computed on. The first pass writes the documents that the document-local
stages kept (``StreamWriter``: one gzipped JSONL file per task) and the later passes read that file
(``StreamReader``) instead of reading and filtering the sources again (the comments filter alone runs at about
1 MB/s per core).
"""

from __future__ import annotations

import gzip
import json
import os
from collections import deque
from pathlib import Path

from datatrove.data import Document as DatatroveDocument
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from santacoder.data.curation.verdict import StageReport, Verdict, remove
from santacoder.durable import fsync_dir, write_bytes_atomically

REPORTS = "curation"  # under the prepared directory: curation/<order>-<stage>/<rank>.json


def write_report(report_dir: str, order: int, report: StageReport, rank: int) -> None:
    path = Path(report_dir) / f"{order:02d}-{report.stage}" / f"{rank:05d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, (json.dumps(report.to_dict(), indent=1, sort_keys=True) + "\n").encode())


def read_reports(report_dir: Path, tasks: int) -> list[dict]:
    """Every stage's reports merged over the tasks, in pipeline order."""
    merged = []
    for stage_dir in sorted(p for p in report_dir.glob("*-*") if p.is_dir()):
        reports = [json.loads((stage_dir / f"{rank:05d}.json").read_text()) for rank in range(tasks)]
        merged.append(StageReport.merge(reports))
    return merged


def _meta(doc: DatatroveDocument) -> dict:
    return {**doc.metadata, "id": doc.id}


class LocalStages(PipelineStep):
    """Document-local stages (filters, decontamination, PII) in order: a document removed by one goes no further,
    a changed text is what the next one sees."""

    name = "santacoder curation"
    type = "🔻 - FILTER"

    def __init__(self, stages: list, first_order: int, report_dir: str | None):
        super().__init__()
        self.stages, self.first_order, self.report_dir = stages, first_order, report_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        reports = [StageReport(stage.name) for stage in self.stages]
        for doc in data or ():
            for stage, report in zip(self.stages, reports, strict=True):
                meta = _meta(doc)
                verdict: Verdict = stage.decide(doc.text, meta)
                report.count(verdict, meta.get("language"), len(doc.text.encode("utf-8")), doc.id)
                if verdict.removed:
                    self.stat_update(f"removed_{stage.name}")
                    break
                if verdict.text is not None:
                    doc.text = verdict.text
            else:
                yield doc
        if self.report_dir:
            for i, report in enumerate(reports):
                write_report(self.report_dir, self.first_order + i, report, rank)


class Reported(PipelineStep):
    """A datatrove filter (the dedup stages), counted like a local stage: a document it does not pass on was
    removed with ``reason``. Filters yield a subsequence of their input in order, so the documents between two
    that came out are the removed ones."""

    name = "santacoder reported filter"
    type = "🔻 - FILTER"

    def __init__(self, step: PipelineStep, stage: str, reason: str, order: int, report_dir: str | None):
        super().__init__()
        self.step, self.stage, self.reason, self.order, self.report_dir = step, stage, reason, order, report_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        report, pending = StageReport(self.stage), deque()

        def tap():
            for doc in data or ():
                pending.append(doc)
                yield doc

        def settle(doc: DatatroveDocument, verdict: Verdict) -> None:
            report.count(verdict, doc.metadata.get("language"), len(doc.text.encode("utf-8")), doc.id)

        for kept in self.step.run(tap(), rank, world_size):
            while pending[0] is not kept:
                settle(pending.popleft(), remove(self.reason))
            settle(pending.popleft(), Verdict())
            yield kept
        while pending:
            settle(pending.popleft(), remove(self.reason))
        if self.report_dir:
            write_report(self.report_dir, self.order, report, rank)


class StreamWriter(PipelineStep):
    """Writes this task's documents to ``<folder>/<rank>.jsonl.gz`` (text, id, metadata) and passes them on. The file
    is written under a temporary name and renamed at the end, and compressed without a timestamp: a rerun of the
    task writes the same bytes."""

    name = "santacoder curated stream"
    type = "💽 - WRITER"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = stream_file(self.folder, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as out:
                for doc in data or ():
                    out.write((json.dumps({"text": doc.text, "id": doc.id, "metadata": doc.metadata}) + "\n").encode())
                    yield doc
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, path)
        fsync_dir(path.parent)


class StreamReader(PipelineStep):
    """Reads back exactly what ``StreamWriter`` wrote for this task, in the same order."""

    name = "santacoder curated stream"
    type = "📖 - READER"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with gzip.open(stream_file(self.folder, rank), "rt", encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                yield DatatroveDocument(text=row["text"], id=row["id"], metadata=row["metadata"])


def stream_file(folder: str, rank: int) -> Path:
    return Path(folder) / f"{rank:05d}.jsonl.gz"
