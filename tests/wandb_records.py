"""Read the records of an offline W&B run (``run-<id>.wandb``) without network, as `wandb sync` would.

The file is W&B's append-only log: a 7-byte header, then LevelDB-style records (crc32, length, type) in
32 KiB blocks, each holding a serialized ``wandb_internal_pb2.Record``.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    pos, records, pending = HEADER, [], b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
        else:
            break
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def history(path: Path) -> list[dict]:
    rows = []
    for r in read_records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    return rows


def config(path: Path) -> dict:
    out = {}
    for r in read_records(path):
        if r.WhichOneof("record_type") == "config":
            out.update({item.key: json.loads(item.value_json) for item in r.config.update})
    return out


def run_id(path: Path) -> str:
    return next(r.run.run_id for r in read_records(path) if r.WhichOneof("record_type") == "run")
