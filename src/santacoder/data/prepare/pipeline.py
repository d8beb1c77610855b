"""``prepare``: a corpus -> a prepared directory of token shards, on datatrove's executors.

    out/prepare.json      the settings, written at the first start (a start with others is refused)
    out/tokenizer.json    the tokenizer the shards were made with
    out/shards/<task>/    one shard per task (train/ and val/), renamed into place when the task is done
    out/logs/             datatrove's: per-task logs, statistics and completion markers (resume), one folder per pass
    out/dedup/            the deduplication passes: each task's curated stream, signatures, duplicates, clusters
    out/curation/         what each curation stage removed or changed, per stage and task (summed in the manifest)
    out/manifest.json     written last, by one task that runs after all the others

The same pipeline runs on a laptop (``executor.kind=local``: a pool of ``executor.workers`` processes) and on a
cluster (``executor.kind=slurm``: one array job of ``tasks`` tasks, then the manifest's one-task job after it).
Started again after a kill, only the tasks without a completion marker run (each from its start); the output is
byte-identical to an uninterrupted prepare.
"""

from __future__ import annotations

import logging
from pathlib import Path

from santacoder.data.corpus import Corpus
from santacoder.data.curation.dedup import CodeWords, exact_config, minhash_config
from santacoder.data.prepare.curate import Curation, build_curation
from santacoder.data.prepare.curation_steps import REPORTS, LocalStages, Reported, StreamReader, StreamWriter
from santacoder.data.prepare.manifest import record_settings
from santacoder.data.prepare.steps import CorpusReader, ManifestWriter, TokenShardWriter
from santacoder.data.shards import read_manifest
from santacoder.durable import write_bytes_atomically
from santacoder.errors import ConfigError
from santacoder.text.tokenizer import CodeTokenizer, FIMTokens

log = logging.getLogger(__name__)

FIM_TOKEN_STYLES = {"santacoder": FIMTokens(), "starcoder": FIMTokens.starcoder()}


def sources_of(source) -> list[str]:
    """``source=<path>`` or ``source=[<path>, ...]``, as a list of paths."""
    sources = [source] if isinstance(source, str | Path) else list(source or [])
    if not sources:
        raise ConfigError("source is not set: give a directory of code or .jsonl/.jsonl.gz/.parquet files (or a list)")
    return [str(Path(s).expanduser().resolve()) for s in sources]


def settings_of(cfg, tokenizer: CodeTokenizer, fim_tokens: FIMTokens) -> dict:
    """What the shards' content depends on (recorded in prepare.json; a resume must match it)."""
    sources = []
    for path in sources_of(cfg.source):
        corpus = Corpus(path, list(cfg.extensions), cfg.max_doc_bytes, setting="source")  # refuses a bad source
        sources.append({"path": path, "fingerprint": corpus.fingerprint()})
    return {
        "sources": sources,
        "extensions": list(cfg.extensions),
        "max_doc_bytes": cfg.max_doc_bytes,
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "fim_tokens": vars(fim_tokens),
        "val_fraction": cfg.val_fraction,
        "tasks": cfg.tasks,
    }


def check(cfg) -> None:
    """The values themselves, in one line each, before any work."""
    if not isinstance(cfg.tasks, int) or cfg.tasks < 1:
        raise ConfigError(f"tasks={cfg.tasks} must be a positive integer (shards, each one task's work)")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"val_fraction={cfg.val_fraction} must be between 0 and 1")
    if not isinstance(cfg.max_doc_bytes, int) or cfg.max_doc_bytes < 1:
        raise ConfigError(f"max_doc_bytes={cfg.max_doc_bytes} must be a positive integer (bytes)")
    if not cfg.get("out"):
        raise ConfigError("out is not set: give the directory to prepare into")
    if not cfg.get("tokenizer") or not Path(cfg.tokenizer).is_file():
        raise ConfigError(
            f"tokenizer={cfg.get('tokenizer')!r} is not a file: give a tokenizer.json (SantaCoder's, or a run's "
            "data/cache/tokenizer-*.json)"
        )
    if cfg.fim_tokens not in FIM_TOKEN_STYLES:
        raise ConfigError(f"fim_tokens={cfg.fim_tokens!r} must be one of {sorted(FIM_TOKEN_STYLES)}")
    if cfg.executor.kind not in ("local", "slurm"):
        raise ConfigError(f"executor.kind={cfg.executor.kind!r} must be local or slurm")


def prepare(cfg) -> dict | None:
    """Run (or resume) the pipeline; the manifest when it is complete, None when submitted to SLURM."""
    check(cfg)
    out = Path(cfg.out).expanduser().resolve()
    fim_tokens = FIM_TOKEN_STYLES[cfg.fim_tokens]
    tokenizer = CodeTokenizer.from_file(cfg.tokenizer, fim_tokens)
    settings = settings_of(cfg, tokenizer, fim_tokens)
    curation = build_curation(cfg, tokenizer, [s["path"] for s in settings["sources"]])
    settings["curation"] = curation.settings
    record_settings(out, settings)  # refuses other settings (tasks above all) for a directory already begun
    if (out / "manifest.json").is_file():
        log.info("%s is already prepared (manifest.json): nothing to do", out)
        return read_manifest(out)
    write_bytes_atomically(out / "tokenizer.json", tokenizer.tokenizer.to_str(pretty=True).encode())

    passes = _passes(cfg, out, settings, curation)
    manifest = _executor(cfg, [ManifestWriter(str(out), settings)], 1, out / "logs" / "manifest", depends=passes)
    manifest.run()
    if cfg.executor.kind == "slurm":
        log.info("submitted %d tasks and the manifest job; %s/manifest.json appears when they are done", cfg.tasks, out)
        return None
    if not (out / "manifest.json").is_file():
        raise ConfigError(f"prepare of {out} did not finish (see {out / 'logs'}); run it again: it resumes")
    return read_manifest(out)


def _passes(cfg, out: Path, settings: dict, curation: Curation):
    """The executors up to the shards, each depending on the one before; the last one is returned.

    Without deduplication, one pass of ``tasks`` tasks: read, curate, write shards. With it, the first pass reads and
    applies the document-local stages, keeps what they kept as each task's stream (``out/dedup/stream``) and
    computes the first signatures; the later passes read that stream (datatrove's dedup filters drop documents by
    their index in it), and the last one filters, redacts and writes the shards:

        read, filter, decontaminate, keep the stream, exact signatures (tasks) -> exact duplicates (1 task)
        -> stream, exact filter, MinHash signatures (tasks) -> MinHash buckets (bands tasks) -> clusters (1 task)
        -> stream, exact filter, MinHash filter, PII, write shards (tasks)
    """
    from datatrove.pipeline.dedup import (
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )  # fmt: skip
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets

    tasks, logs, reports, dedup = cfg.tasks, out / "logs", str(out / REPORTS), out / "dedup"
    stream = str(dedup / "stream")
    exact_sigs, exact_dups = str(dedup / "exact" / "sigs"), str(dedup / "exact" / "dups")
    minhash_sigs, minhash_buckets = str(dedup / "minhash" / "sigs"), str(dedup / "minhash" / "buckets")
    minhash_remove = str(dedup / "minhash" / "remove")
    exact = exact_config()
    n = curation.near_dedup
    minhash = minhash_config(n["n_grams"], n["bands"], n["rows"], n["seed"]) if n else None
    # report order: the local stages, then exact, near, and the stages after them
    exact_order = len(curation.before_dedup)
    near_order = exact_order + curation.exact_dedup
    after_order = near_order + (n is not None)

    read = [CorpusReader(source["path"], settings["extensions"], settings["max_doc_bytes"])
            for source in settings["sources"]]  # fmt: skip
    if curation.before_dedup:
        read.append(LocalStages(curation.before_dedup, 0, reports))

    def exact_filter(report_dir: str | None) -> list:
        if not curation.exact_dedup:
            return []
        step = ExactDedupFilter(exact_dups, exact)
        return [Reported(step, "exact_dedup", "exact_duplicate", exact_order, report_dir)]

    previous, last = None, read  # the last pass starts with `last`
    if curation.dedup:
        first = [*read, StreamWriter(stream)]
        if curation.exact_dedup:
            first.append(ExactDedupSignature(exact_sigs, exact))
            previous = _executor(cfg, first, tasks, logs / "dedup" / "first", depends=None)
            find = [ExactFindDedups(exact_sigs, exact_dups, exact)]
            previous = _executor(cfg, find, 1, logs / "dedup" / "exact_dups", depends=previous)
            first = None
        if minhash is not None:
            signature = MinhashDedupSignature(minhash_sigs, minhash, language=CodeWords())
            signatures = [*first, signature] if first else [StreamReader(stream), *exact_filter(None), signature]
            previous = _executor(cfg, signatures, tasks, logs / "dedup" / "minhash_sigs", depends=previous)
            buckets = [MinhashDedupBuckets(minhash_sigs, minhash_buckets, config=minhash)]
            previous = _executor(cfg, buckets, n["bands"], logs / "dedup" / "minhash_buckets", depends=previous)
            clusters = [MinhashDedupCluster(minhash_buckets, minhash_remove, config=minhash)]
            previous = _executor(cfg, clusters, 1, logs / "dedup" / "minhash_clusters", depends=previous)
        last = [StreamReader(stream), *exact_filter(reports)]
        if minhash is not None:
            near = Reported(MinhashDedupFilter(minhash_remove), "near_dedup", "near_duplicate", near_order, reports)
            last.append(near)
    if curation.after_dedup:
        last.append(LocalStages(curation.after_dedup, after_order, reports))
    last.append(TokenShardWriter(str(out), str(out / "tokenizer.json"), settings["fim_tokens"], cfg.val_fraction,
                                 cfg.batch_bytes))  # fmt: skip
    return _executor(cfg, last, tasks, logs, depends=previous)


def _executor(cfg, pipeline: list, tasks: int, logging_dir: Path, depends):
    ex = cfg.executor
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(ex.workers, tasks) if ex.workers > 0 else -1,
                                     logging_dir=str(logging_dir), depends=depends)  # fmt: skip
    from datatrove.executor import SlurmPipelineExecutor

    return SlurmPipelineExecutor(
        pipeline, tasks=tasks, time=ex.time, partition=ex.partition, cpus_per_task=ex.cpus_per_task,
        mem_per_cpu_gb=ex.mem_per_cpu_gb, job_name=ex.job_name, logging_dir=str(logging_dir), depends=depends,
        venv_path=ex.get("venv_path"), sbatch_args=dict(ex.get("sbatch_args") or {}),
    )  # fmt: skip
