"""The prepared directory's two records, both free of timestamps so that a prepare resumed after a kill ends
byte-identical to an uninterrupted one:

- ``prepare.json``, written at the first start: the settings the shards are made with (sources and their
  fingerprints, tokenizer, split, tasks). A later start with other settings is refused in one line: a shard's
  content depends on them, the number of tasks above all (task ``r`` reads every ``tasks``-th file).
- ``manifest.json``, written last, once every task is complete: the shards of each split with their counts, the
  counts per language and per task, the documents skipped by reason, and a fingerprint of the whole.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from santacoder.data.prepare.curation_steps import REPORTS, read_reports
from santacoder.data.shards import read_manifest, write_manifest
from santacoder.durable import write_bytes_atomically
from santacoder.errors import ConfigError

SETTINGS_FILE = "prepare.json"
SPLITS = ("train", "val")


def record_settings(out: Path, settings: dict) -> None:
    """Write ``prepare.json`` at the first start; refuse, in one line, a start whose settings differ."""
    path = out / SETTINGS_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differ:
            first = differ[0]
            raise ConfigError(
                f"{first}={settings.get(first)!r} but {str(out)!r} was prepared with {first}={saved.get(first)!r} "
                f"(differing: {', '.join(differ)}); its shards depend on these settings: resume with the same "
                f"ones, or prepare into another out directory"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, _dumps(settings).encode())


def write_prepared_manifest(out: Path, settings: dict) -> dict:
    """Sum the shards' own records (each shard's ``meta.json``) into ``manifest.json``."""
    tasks = settings["tasks"]
    splits, languages, per_task = {}, {}, []
    for split in SPLITS:
        shards = [f"shards/{rank:05d}/{split}" for rank in range(tasks)]
        metas = []
        for shard in shards:
            meta_file = out / shard / "meta.json"
            if not meta_file.is_file():
                raise ConfigError(f"{str(out / shard)!r} is missing: a task did not finish; run prepare again")
            metas.append(json.loads(meta_file.read_text()))
        splits[split] = {
            "num_docs": sum(m["num_docs"] for m in metas),
            "num_tokens": sum(m["num_tokens"] for m in metas),
            "shards": shards,
        }
        for rank, meta in enumerate(metas):
            if len(per_task) <= rank:
                per_task.append({})
            per_task[rank][split] = {"num_docs": meta["num_docs"], "num_tokens": meta["num_tokens"]}
            for lang, counts in meta.get("languages", {}).items():
                total = languages.setdefault(str(lang), {}).setdefault(split, {"docs": 0, "tokens": 0, "bytes": 0})
                for key in total:
                    total[key] += counts.get(key, 0)
    manifest = {
        "format": 1,
        "tokenizer": settings["tokenizer_fingerprint"],
        "tasks": tasks,
        "splits": splits,
        "languages": dict(sorted(languages.items())),
        "per_task": per_task,
        "skipped": skipped_counts(out, tasks),
        # what each curation stage removed or changed, per language, in pipeline order (empty without curation)
        "curation": read_reports(out / REPORTS, tasks) if (out / REPORTS).is_dir() else [],
        "settings": settings,
    }
    manifest["fingerprint"] = hashlib.sha256(_dumps(manifest).encode()).hexdigest()[:16]
    write_manifest(out, manifest)
    return manifest


def skipped_counts(out: Path, tasks: int) -> dict[str, int]:
    """Documents the readers skipped, by reason, from datatrove's per-task statistics."""
    counts: dict[str, int] = {}
    for rank in range(tasks):
        stats_file = out / "logs" / "stats" / f"{rank:05d}.json"
        if not stats_file.is_file():
            continue
        for step in json.loads(stats_file.read_text()):
            for label, stat in step.get("stats", {}).items():
                if label.startswith("skipped_"):
                    reason = label.removeprefix("skipped_")
                    counts[reason] = counts.get(reason, 0) + int(stat["total"] if isinstance(stat, dict) else stat)
    return dict(sorted(counts.items()))


def is_prepared(out: Path) -> bool:
    try:
        read_manifest(out)
    except ConfigError:
        return False
    return True


def _dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
