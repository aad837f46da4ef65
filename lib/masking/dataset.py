"""The masked training set on disk: what 02_masking writes and 03_train reads, one row per example.

Usage: ``write_masked(path, ids, examples)``; ``dataset = read_masked(path)``  (a `datasets.Dataset` of
``id, input_ids, labels``, which TRL's trainers take as is, without re-tokenising)

Parquet: typed int32 lists, compact, read back without parsing; written atomically (`lib.paths.atomic_path`).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lib.paths import atomic_path

_SCHEMA = pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])


def write_masked(path: Path, ids: list[str], examples) -> Path:
    """Write `(id, input_ids, labels)` of each example to Parquet at `path`, atomically."""
    path = Path(path)
    table = pa.table({"id": ids, "input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]},
                     schema=_SCHEMA)
    with atomic_path(path) as partial:
        pq.write_table(table, partial)
    return path


def read_masked(path: Path):
    """The masked examples as a `datasets.Dataset` with columns id, input_ids, labels."""
    from datasets import Dataset

    return Dataset(pq.read_table(path))
