"""The Hydra task of prepare.py (and `santacoder prepare`): one line and exit status 1 for bad input."""

from __future__ import annotations

import json
import logging

from santacoder.data.curation.verdict import summarize
from santacoder.data.prepare.pipeline import prepare
from santacoder.errors import ConfigError, stop

log = logging.getLogger(__name__)


def main(cfg) -> dict | None:
    try:
        manifest = prepare(cfg)
    except ConfigError as e:
        stop(str(e), log, "prepare stopped")
    if manifest is not None:
        for report in manifest.get("curation", []):
            log.info("curation %s", summarize(report))
        summary = {split: {k: v for k, v in s.items() if k != "shards"} for split, s in manifest["splits"].items()}
        log.info("prepared %s: %s; skipped %s", cfg.out, json.dumps(summary), json.dumps(manifest["skipped"]))
    return manifest
