"""Read back what an offline W&B run wrote (its run-ID.wandb file of protobuf records)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def read_run(path: Path, wait_s: float = 60) -> dict[str, Any]:
    """{"config": {...}, "history": [{key: value}], "summary": {...}, "run": {id, group, name,
    job_type}} of a finished run's .wandb file. wandb's service process writes the file after
    `finish()` returns: read it again until it holds the run's exit record (at most wait_s)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            records = _parsed(path)
        except Exception:  # a record cut short while it is being written
            records = []
        if any(rec.WhichOneof("record_type") == "exit" for rec in records):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {wait_s} s")
        time.sleep(0.05)
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "run": {}}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out["run"] = {"id": r.run_id, "group": r.run_group, "name": r.display_name,
                          "job_type": r.job_type}
        if kind in ("config", "run"):  # the config comes with the run record, updates after
            items = (rec.config if kind == "config" else rec.run.config).update
            out["config"].update({i.key: json.loads(i.value_json) for i in items})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.summary.update})
    return out


def _parsed(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    records = []
    for data in _records(path.read_bytes()):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        records.append(rec)
    return records


def _records(raw: bytes, header: int = 7, block: int = 32 * 1024):
    """The payloads of a LevelDB-log-format file (W&B's .wandb): after a 7-byte header, 32 KiB
    blocks of chunks [crc32 4][length 2][type 1][data], type 1 whole, 2/3/4 first/middle/last."""
    pos, pending = header, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        length = int.from_bytes(raw[pos + 4:pos + 6], "little")
        kind = raw[pos + 6]
        data = raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):
            yield pending
            pending = b""
