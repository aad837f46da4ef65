"""`python -m lib data check PATH [--recipe R] [--format F]`: audit a reasoning-trace file, print one JSON object.

Usage: ``python -m lib data check data/samples/triplets_gsm8k_50.jsonl --recipe smollm2_135m``

Reads PATH (JSONL/JSON/Parquet/CSV or a dataset folder/name) in any supported schema and reports rows read,
kept, rejected per reason (with the first line numbers), duplicates, contamination, answer verification, token
lengths with the recipe's tokenizer and chat template, and how many examples its max_length would cut. Nothing is
dropped for length here: the check reports what the recipe's `overlong_policy` would have to deal with.
Exit 0 when the file could be read (whatever its content), 2 with a one-line reason when it could not.
"""
from __future__ import annotations

import dataclasses
import json
import sys

from lib.data_pipeline import DataPolicy, run_pipeline
from lib.reasoning_data import source_id_prefix


def data_check(path: str, recipe_name: str = "", dataset_format: str = "", split: str = "train",
               config: str = "", rejects_path: str = "", verify_answers: bool = True) -> dict:
    """The report `data check` prints (see module doc); raises on set-up errors (file, recipe, format)."""
    from lib.data_schemas import convert_rows
    from lib.data_sources import iter_records

    recipe = None
    if recipe_name:
        from lib.params import load_recipe

        recipe = load_recipe(recipe_name)
        policy = DataPolicy.from_recipe(recipe)
    else:
        policy = DataPolicy()
    # the file's schema is its own (auto-detected unless --format): the recipe lends its tokenizer, template and
    # filters, and its field mapping only when the check names the recipe's own format
    schema = dataset_format or "auto"
    policy = dataclasses.replace(policy, schema=schema,
                                 field_mapping=policy.field_mapping if policy.schema == schema else {},
                                 verify_answers=policy.verify_answers and verify_answers)
    mask_fn, end_tokens = _length_audit_tools(recipe)
    rejects_file = open(rejects_path, "w", encoding="utf-8") if rejects_path else None
    try:
        def keep_reject(reject):
            rejects_file.write(json.dumps(reject.__dict__, ensure_ascii=False) + "\n")

        records = iter_records(path, split, config)
        converted = convert_rows(records, policy.schema, policy.field_mapping, source_id_prefix(path))
        result = run_pipeline(converted, policy, mask_fn, end_tokens, on_reject=keep_reject if rejects_file else None,
                              keep_rows=False, apply_length_policy=False, source=path)
    finally:
        if rejects_file:
            rejects_file.close()
    report = result.report.as_dict()
    report.pop("length_policy")
    report["recipe"] = recipe.name if recipe else None
    if recipe:
        report["tokenizer"] = f"fixtures/tokenizers/{recipe.tokenizer_fixture} ({recipe.chat_format} format)"
        report["overlong_policy"] = recipe.overlong_policy
        report["would_truncate"] = report["lengths"]["over_max_length"]
    else:
        report["lengths"] = None
        report["note"] = "pass --recipe R for token lengths with R's tokenizer and chat template"
    return report


def _length_audit_tools(recipe):
    """(mask_fn, end tokens) for the recipe's fixture tokenizer; (None, []) without a recipe: no length audit."""
    if recipe is None:
        return None, []
    from lib.masking import end_of_turn_tokens
    from lib.stage_masking import mask_all
    from lib.tokenizer_loading import load_fixture_tokenizer

    tokenizer = load_fixture_tokenizer(recipe.tokenizer_fixture)
    return (lambda rows: mask_all(rows, tokenizer, recipe)), end_of_turn_tokens(tokenizer)


def main(args) -> int:
    """Entry point for `python -m lib data check` (argparse namespace from lib.__main__)."""
    try:
        report = data_check(args.path, args.recipe or "", args.format or "", args.split, args.config or "",
                            args.rejects or "", not args.no_verify)
    except (OSError, ValueError, ImportError) as err:
        message = str(err) if str(args.path) in str(err) else f"{args.path}: {err}"
        print(f"error: {message}".splitlines()[0], file=sys.stderr)
        return 2
    print(json.dumps(report, ensure_ascii=False, default=str))
    return 0
