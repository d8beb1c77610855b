"""Prepared directories for tests, as the prepare pipeline leaves them (shards written by ShardWriter, a manifest
written last), from lists of documents."""

import json
from pathlib import Path

from santacoder.data.corpus import Document, is_validation
from santacoder.data.shards import ShardWriter, write_manifest
from santacoder.data.token_store import SPLITS

VAL_FRACTION = 0.1


def write_prepared(out: Path, tasks: list[list[Document]], tokenizer, val_fraction: float = VAL_FRACTION) -> dict:
    """What the prepare pipeline leaves: the tokenizer, shard ``r`` holding ``tasks[r]``'s documents (split by name,
    as the in-run path does), and a manifest listing the shards in task order."""
    for rank, documents in enumerate(tasks):
        with ShardWriter(out, rank, tokenizer) as writer:
            for doc, ids in zip(documents, tokenizer.encode_batch([d.text for d in documents]), strict=True):
                split = "val" if is_validation(doc.name, val_fraction) else "train"
                meta = {"id": doc.name, "path": doc.name, "language": Path(doc.name).suffix[1:], "bytes": len(doc.text)}
                writer.add(split, ids, meta)
    tokenizer.save(out / "tokenizer.json")
    manifest = {"format": 1, "tokenizer": tokenizer.fingerprint(), "fingerprint": f"test-{out.name}",
                "tasks": len(tasks), "splits": {}}  # fmt: skip
    for split in SPLITS:
        dirs = [f"shards/{rank:05d}/{split}" for rank in range(len(tasks))]
        metas = [json.loads((out / d / "meta.json").read_text()) for d in dirs]
        manifest["splits"][split] = {"num_tokens": sum(m["num_tokens"] for m in metas),
                                     "num_docs": sum(m["num_docs"] for m in metas), "shards": dirs}  # fmt: skip
    write_manifest(out, manifest)
    return manifest


def documents(n: int) -> list[Document]:
    return [Document(f"m{i}.py", f"def f{i}(x):\n    return x * {i} + {'y' * (i % 5)!r}\n") for i in range(n)]
