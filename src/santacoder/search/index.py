"""``santacoder index <run dir | prepared dir> [--out DIR]``: the attribution index of the tokens a model trained on.

For each token store training read (the train split: a run's in-run store or the train shards of its prepared
data, found through the run's saved config; or a prepared directory's train shards), an exact index (a suffix
array, ``santacoder.search.exact``) and a fuzzy one (BM25 over the documents' code words, storing only their
numbers, ``santacoder.search.fuzzy``)::

    DIR/index.json           written last: the tokenizer's fingerprint, and the shards in order
    DIR/tokenizer.json       the tokenizer of every id indexed (snippets are tokenized with it)
    DIR/exact/<k>/           shard k's suffix array (index.json inside once complete)
    DIR/fuzzy/<k>/           shard k's BM25 index (fuzzy.json inside once complete)

Shard by shard, each skipped when already complete: a build killed midway, started again, redoes only the shard
it was in. Memory is bounded by ``mem_bytes`` (the suffix array is sorted in parts of that size).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from santacoder.durable import write_bytes_atomically
from santacoder.errors import ConfigError
from santacoder.search.exact import build_exact_index
from santacoder.search.fuzzy import build_fuzzy_index
from santacoder.text.tokenizer import CodeTokenizer

log = logging.getLogger(__name__)

RECORD = "index.json"
FORMAT = 1


def trained_stores(source: Path) -> tuple[list[tuple[Path, list[dict] | None]], Path]:
    """The token stores a run (``.hydra/config.yaml``) or a prepared directory (``manifest.json``) holds, with the
    tokenizer file of their ids."""
    source = Path(source).expanduser()
    if (source / "manifest.json").is_file():
        manifest = json.loads((source / "manifest.json").read_text())
        return [(source / shard, None) for shard in manifest["splits"]["train"]["shards"]], source / "tokenizer.json"
    if (source / ".hydra" / "config.yaml").is_file():
        from hydra.utils import instantiate

        from santacoder.conf.run_config import load_run_config

        datamodule = instantiate(load_run_config(source).data)
        stores = datamodule.trained_token_dirs()
        missing = [str(store) for store, _ in stores if not (store / "meta.json").is_file()]
        if missing:
            raise ConfigError(
                f"the token store of run {str(source)!r} is not at {missing[0]} (another data.cache_dir, or it was "
                "removed): run train.py with the run's data settings again to rebuild it, or index the prepared data"
            )
        return stores, datamodule.tokenizer_file()
    raise ConfigError(
        f"{str(source)!r} is neither a training run (no .hydra/config.yaml) nor a prepared directory (no "
        "manifest.json): give one of them"
    )


def build_index(source: Path, out: Path | None = None, *, mem_bytes: int = 2**30, cpus: int = 2) -> dict:
    """Index what ``source`` trained on (module docstring) into ``out`` (default ``<source>/index``)."""
    source = Path(source).expanduser()
    out = Path(out).expanduser() if out is not None else source / "index"
    stores, tokenizer_file = trained_stores(source)
    tokenizer = CodeTokenizer.from_file(tokenizer_file)
    if len(tokenizer) > 2**16:
        raise ConfigError(f"the tokenizer has {len(tokenizer):,} tokens: the exact index takes uint16 ids only")
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(out / "tokenizer.json", tokenizer.tokenizer.to_str(pretty=True).encode())
    shards = []
    for k, (store, documents) in enumerate(stores):
        exact = build_exact_index(store, out / "exact" / f"{k:05d}", mem_bytes=mem_bytes, cpus=cpus,
                                  documents=documents)  # fmt: skip
        fuzzy = build_fuzzy_index(_texts(store, tokenizer), out / "fuzzy" / f"{k:05d}",
                                  num_docs=exact["num_docs"])  # fmt: skip
        log.info("indexed shard %d of %d (%s): %d documents, %d tokens", k + 1, len(stores), store,
                 exact["num_docs"], exact["num_tokens"])  # fmt: skip
        shards.append({"store": str(store), "exact": f"exact/{k:05d}", "fuzzy": f"fuzzy/{k:05d}",
                       "num_docs": exact["num_docs"], "num_tokens": exact["num_tokens"],
                       "exact_bytes": exact.get("table_bytes", 0), "fuzzy_bytes": fuzzy.get("index_bytes", 0),
                       "seconds": exact.get("build_seconds", 0) + fuzzy.get("build_seconds", 0)})  # fmt: skip
    record = {
        "format": FORMAT,
        "source": str(source),
        "tokenizer": tokenizer.fingerprint(),
        "eod_id": tokenizer.eod_id,
        "vocab_size": len(tokenizer),
        "shards": shards,
        "num_tokens": sum(s["num_tokens"] for s in shards),
        "num_docs": sum(s["num_docs"] for s in shards),
    }
    write_bytes_atomically(out / RECORD, (json.dumps(record, indent=2) + "\n").encode())
    return record


def _texts(store: Path, tokenizer: CodeTokenizer):
    """(document number, text) of a store, decoded from its ids: what the fuzzy tier indexes."""
    meta = json.loads((store / "meta.json").read_text())
    if not meta["num_tokens"]:
        return
    offsets = np.load(store / "doc_offsets.npy")
    tokens = np.memmap(store / "tokens.bin", dtype=meta["dtype"], mode="r")
    prepared = (store / "docs.jsonl").is_file()  # prepared: eod, ids; in-run: ids, eod
    for k in range(len(offsets) - 1):
        ids = tokens[offsets[k] + 1 : offsets[k + 1]] if prepared else tokens[offsets[k] : offsets[k + 1] - 1]
        yield k, tokenizer.decode(ids.tolist())


def read_index_record(index_dir: Path) -> dict:
    path = Path(index_dir).expanduser() / RECORD
    try:
        record = json.loads(path.read_text())
        record["shards"], record["eod_id"]  # noqa: B018 (present)
    except FileNotFoundError:
        raise ConfigError(
            f"{str(index_dir)!r} holds no attribution index ({RECORD} is missing): build one with "
            "`santacoder index <run dir | prepared dir>`"
        ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{str(path)!r} is damaged ({e!r}): build the index again") from None
    if record.get("format", 0) > FORMAT:
        raise ConfigError(f"{str(path)!r} is of a newer format ({record['format']}): upgrade santacoder")
    return record
