"""Read any source in any schema into canonical rows and their rejects, in one call.

Usage: ``rows, rejects = read_reasoning_rows("data/gsm8k/train.jsonl.gz", "gsm8k")``
"""
from __future__ import annotations

from pathlib import Path

from lib.data.schemas import check_schema, convert_rows
from lib.data.sources import iter_records
from lib.rejects import Reject


def source_id_prefix(path_or_name: str | Path) -> str:
    """Ids of rows without their own: `<file or dataset name before its first dot>-<row number>` (train-000017)."""
    return Path(str(path_or_name)).name.split(".")[0]


def read_reasoning_rows(path: str | Path, dataset_format: str, limit: int = 0, id_prefix: str = "",
                        split: str = "train", config: str = "", field_mapping: dict | None = None) -> tuple[list, list]:
    """Read any source `lib.data.sources` reads, in `dataset_format` (a `lib.data.schemas` schema or "auto");
    return (canonical rows, rejects).

    `limit` > 0 stops after that many *kept* rows. Every row read is either kept or rejected with a reason.
    Row ids default to `<file name before its first dot>-<row number>`.
    """
    check_schema(dataset_format, field_mapping)
    prefix = id_prefix or source_id_prefix(path)
    rows, rejects = [], []
    for _, item in convert_rows(iter_records(str(path), split, config), dataset_format, field_mapping, prefix):
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        rows.extend(example for example in item if not isinstance(example, Reject))
        rejects.extend(example for example in item if isinstance(example, Reject))
        if limit and len(rows) >= limit:
            return rows[:limit], rejects
    return rows, rejects
