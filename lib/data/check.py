"""`python -m lib data check PATH [--recipe R] [--format F]`: audit a reasoning-trace file, print one JSON object.

Usage: ``python -m lib data check data/samples/triplets_gsm8k_50.jsonl --recipe smollm2_135m``
(the command adds the token lengths with `lib.masking.check.run_data_check`; this module is the data part)

Reads PATH (JSONL/JSON/Parquet/CSV or a dataset folder/name) in any supported schema and reports rows read,
kept, rejected per reason (with the first line numbers), duplicates, contamination, answer verification, token
lengths with the recipe's tokenizer and chat template, and how many examples its max_length would cut. Nothing is
dropped for length here: the check reports what the recipe's `overlong_policy` would have to deal with.
Exit 0 when the file could be read (whatever its content), 2 with a one-line reason when it could not.
"""
from __future__ import annotations

import dataclasses
import json

from lib.data.pipeline import DataPolicy, DataReport, run_pipeline
from lib.data.rows import source_id_prefix
from lib.data.schemas import convert_rows
from lib.data.sources import iter_records
from lib.recipe import Recipe


def data_check(path: str, recipe: Recipe | None = None, dataset_format: str = "", split: str = "train",
               config: str = "", rejects_path: str = "", verify_answers: bool = True, on_kept=None) -> DataReport:
    """The data part of the report `data check` prints (see module doc); raises on set-up errors (file, format).

    `recipe` lends its filters (and its field mapping when the check names the recipe's own format); `on_kept`
    sees every kept row (masking's length audit streams through it).
    """
    policy = DataPolicy.from_recipe(recipe) if recipe else DataPolicy()
    # the file's schema is its own (auto-detected unless --format)
    schema = dataset_format or "auto"
    policy = dataclasses.replace(policy, schema=schema,
                                 field_mapping=policy.field_mapping if policy.schema == schema else {},
                                 verify_answers=policy.verify_answers and verify_answers)
    rejects_file = open(rejects_path, "w", encoding="utf-8") if rejects_path else None
    try:
        def keep_reject(reject):
            rejects_file.write(json.dumps(reject.__dict__, ensure_ascii=False) + "\n")

        records = iter_records(path, split, config)
        converted = convert_rows(records, policy.schema, policy.field_mapping, source_id_prefix(path))
        result = run_pipeline(converted, policy, on_reject=keep_reject if rejects_file else None, on_kept=on_kept,
                              keep_rows=False, source=path)
    finally:
        if rejects_file:
            rejects_file.close()
    return result.report
