"""Behaviour kept across the lib/ restructure (one folder per stage, masks built once in 02).

`tests/golden/restructure_before.json` was written by the code *before* the move, from the same inputs:
- per recipe, a short sha256 of each masked example `(id, input_ids, labels)` of the dry-run sample (and of the
  CPU demo's 640 real training rows), plus the held-out ids;
- per file in tests/fixtures/data, the kept ids and reject counts per reason of the data stage (data check).
The code after the move must give the same. One difference is by design: 01 no longer measures token lengths, so
`train_rows` caps rows *before* 02's length policy. A recipe whose policy drops examples from its first rows
(`llama32_1b_kd`: drop at 128 tokens) now trains a prefix of what it trained before: the same examples, fewer.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lib.data.pipeline import DataPolicy, run_pipeline
from lib.data.rows import source_id_prefix
from lib.data.schemas import convert_rows
from lib.data.sources import iter_records
from lib.data.stage import build_splits, save_splits
from lib.masking.dataset import read_masked
from lib.masking.stage import mask_rows, read_rows, save_masked
from lib.modes import make_run_config
from lib.paths import PROJECT_ROOT

GOLDEN = json.loads((Path(__file__).parent / "golden" / "restructure_before.json").read_text())
FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "data"
RENAMED_REASONS: dict[str, str] = {}  # old reason -> new reason (none renamed in the data stage)


def masked_hashes(recipe: str, dry_run: bool, tmp_path) -> tuple[list[str], list[str], int]:
    """(per-example hashes of what 03 will train on, held-out ids, examples dropped for length) after the move."""
    cfg = make_run_config(recipe, dry_run, str(tmp_path))
    splits = build_splits(cfg)
    save_splits(cfg, splits)
    masked = mask_rows(cfg.recipe, read_rows(cfg), cfg.mode.tokenizer())
    save_masked(cfg, masked)
    saved = read_masked(tmp_path / "02_masking" / "masked.parquet")  # exactly what 03 reads
    hashes = [hashlib.sha256(json.dumps([row_id, ids, labels]).encode()).hexdigest()[:16]
              for row_id, ids, labels in zip(saved["id"], saved["input_ids"], saved["labels"])]
    return hashes, [row["id"] for row in splits.heldout], masked.stats["dropped_overlong"]


@pytest.mark.parametrize("recipe", sorted(k.removesuffix(" dry-run") for k in GOLDEN["masked"] if "dry-run" in k))
def test_dry_run_masks_are_the_ones_before_the_move(recipe, tmp_path):
    before = GOLDEN["masked"][f"{recipe} dry-run"]
    hashes, heldout, dropped = masked_hashes(recipe, True, tmp_path)
    assert heldout == before["heldout_ids"]
    if dropped:  # by design (module docstring): the rows that fit are the first ones that fitted before
        assert recipe == "llama32_1b_kd" and hashes == before["sha256"][:len(hashes)] and len(hashes) >= 1
    else:
        assert hashes == before["sha256"]


@pytest.mark.slow
def test_the_demo_trains_on_exactly_the_640_examples_it_trained_on_before(tmp_path):
    before = GOLDEN["masked"]["smollm2_135m"]
    hashes, heldout, dropped = masked_hashes("smollm2_135m", False, tmp_path)
    assert dropped == 0 and len(hashes) == 640
    assert hashes == before["sha256"] and heldout == before["heldout_ids"]


@pytest.mark.parametrize("name", sorted(GOLDEN["data_check"]))
def test_data_stage_keeps_and_rejects_what_it_did_before(name):
    before = GOLDEN["data_check"][name]
    path = FIXTURES / name
    converted = convert_rows(iter_records(str(path)), "auto", {}, source_id_prefix(path))
    result = run_pipeline(converted, DataPolicy(), source=str(path))
    assert [row["id"] for row in result.kept] == before["kept_ids"]
    expected = {RENAMED_REASONS.get(reason, reason): n for reason, n in before["rejected_per_reason"].items()}
    assert dict(result.report.rejected.most_common()) == expected
    assert result.report.rows_read == before["rows_read"]
