"""Read what an offline W&B run wrote: its .wandb file is a LevelDB-style log
(a 7-byte ':W&B' header, then 32 KiB blocks of records, each with a 7-byte
header: crc32c, length, type) of protobuf ``Record`` messages."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, chunks = HEADER, []
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer: padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left_in_block - HEADER
            continue
        chunks.append(data[pos : pos + length])
        pos += length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def run_info(run_dir: Path) -> dict:
    """{'run': the run record, 'history': [dict per log call], 'summary': dict}."""
    (log,) = Path(run_dir).glob("run-*.wandb")
    info = {"run": None, "history": [], "summary": {}, "config": {}}
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info["run"] = record.run
            info["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "history":
            info["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                    for i in record.history.item})
        elif kind == "summary":
            info["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                    for i in record.summary.update})
        elif kind == "config":
            info["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
    return info
