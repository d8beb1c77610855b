"""Read the records of an offline W&B run (``run-<id>.wandb``) without network, as `wandb sync` would.

The file is W&B's append-only log: a 7-byte header, then LevelDB-style records (crc32, length, type) in
32 KiB blocks, each holding a serialized ``wandb_internal_pb2.Record``.
"""

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    data = path.read_bytes()
    if len(data) < HEADER:  # not flushed yet
        return []
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


def complete_records(path: Path, timeout: float = 60.0) -> list:
    """The records once the log holds the run's ``exit`` record. ``run.finish()`` can return before W&B's service
    has flushed the log (it buffers 32 KiB blocks and closes the file on its own thread): seen on a loaded CI
    machine as a log with no history at all."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            assert records, f"{path} holds no records {timeout:.0f} s after the run finished"
            return records
        time.sleep(0.2)


def history(path: Path) -> list[dict]:
    rows = []
    for r in complete_records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    return rows


def config(path: Path) -> dict:
    out = {}
    for r in complete_records(path):
        if r.WhichOneof("record_type") == "config":
            out.update({item.key: json.loads(item.value_json) for item in r.config.update})
    return out


def run_id(path: Path) -> str:
    return next(r.run.run_id for r in complete_records(path) if r.WhichOneof("record_type") == "run")
