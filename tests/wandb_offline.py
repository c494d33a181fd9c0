"""Read an offline W&B run back from its transaction log (``run-<id>.wandb``), for tests.

The log is a 7-byte header (``:W&B``, magic, version) followed by LevelDB-log-style blocks of 32 KiB: each chunk has
a 7-byte header (CRC32C, little-endian length, type FULL=1/FIRST=2/MIDDLE=3/LAST=4) and a piece of one serialized
``wandb_internal_pb2.Record``; a block tail shorter than a chunk header is padding. The records are parsed with
wandb's own protobuf classes. Offline runs of current wandb versions write no ``wandb-summary.json``/``config.yaml``,
so this log is where logged values live.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


@dataclass
class OfflineRun:
    path: Path
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def _records(data: bytes) -> list[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log")
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pos += HEADER
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
            pending = b""
    return out


def _put(target: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = json.loads(item.value_json)


def read_run(log_path: str | Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun(Path(log_path))
    for raw in _records(Path(log_path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.name, run.group, run.job_type = r.display_name, r.run_group, r.job_type
            for item in r.config.update:
                _put(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _put(run.config, item)
        elif kind == "summary":
            for item in record.summary.update:
                _put(run.summary, item)
        elif kind == "history":
            row: dict = {}
            for item in record.history.item:
                _put(row, item)
            run.history.append(row)
    return run


def read_runs(wandb_dir: str | Path, wait_s: float = 30.0) -> list[OfflineRun]:
    """Every offline run under ``wandb_dir`` (the directory holding ``offline-run-*`` folders), once each one's
    summary is on disk: ``run.finish()`` can return before wandb's service has flushed the transaction log (seen
    a few times in some 40 runs on a loaded machine), so this waits up to ``wait_s`` for it."""
    deadline = time.monotonic() + wait_s
    while True:
        runs = [read_run(p) for p in sorted(Path(wandb_dir).glob("**/offline-run-*/run-*.wandb"))]
        if (runs and all(r.summary for r in runs)) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)
