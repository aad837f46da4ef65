"""The masked training set on disk: what 02_masking writes and 03_train reads, one row per example.

Usage: ``write_masked(path, ids, examples)``; ``dataset = read_masked(path)``  (a `datasets.Dataset` of
``id, input_ids, labels``, which TRL's trainers take as is, without re-tokenising)

Parquet: typed int32 lists, compact, read back without parsing; written atomically (temporary file + rename).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_SCHEMA = pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])


def write_masked(path: Path, ids: list[str], examples) -> Path:
    """Write `(id, input_ids, labels)` of each example to Parquet at `path`, atomically."""
    path = Path(path)
    table = pa.table({"id": ids, "input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]},
                     schema=_SCHEMA)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_masked(path: Path):
    """The masked examples as a `datasets.Dataset` with columns id, input_ids, labels."""
    from datasets import Dataset

    return Dataset(pq.read_table(path))
