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


def example_lengths(dataset):
    """(tokens, trained tokens) of each example of a `datasets.Dataset` with input_ids and labels, as int64 arrays:
    read from Arrow, not row by row (03 sizes its memory plan and progress line from them)."""
    import numpy as np
    import pyarrow.compute as pc

    table = dataset.select_columns(["input_ids", "labels"]).with_format("arrow")[:]
    lengths = np.asarray(pc.list_value_length(table.column("input_ids")), dtype=np.int64)
    labels = table.column("labels").combine_chunks()
    parents = np.asarray(pc.list_parent_indices(labels), dtype=np.int64)
    trained = np.bincount(parents[np.asarray(pc.list_flatten(labels)) != -100], minlength=len(lengths))
    return lengths, trained.astype(np.int64)
