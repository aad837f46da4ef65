"""Stage 01 on the real shipped data: held-out prompts never reach training, rejects are counted."""
import json

from lib.reasoning_data import prompt_key
from lib.run_config import make_run_config
from lib.stage_data import build_splits, load_splits, save_splits


def test_splits_are_disjoint_and_saved(tmp_path):
    cfg = make_run_config("smollm2_135m", dry_run=True, run_dir=str(tmp_path))
    splits = build_splits(cfg)
    assert len(splits.train) == cfg.train_rows and len(splits.heldout) == cfg.eval_rows
    assert not {prompt_key(r) for r in splits.train} & {prompt_key(r) for r in splits.heldout}
    facts = save_splits(cfg, splits)
    train, heldout = load_splits(cfg)
    assert [r["id"] for r in train] == [r["id"] for r in splits.train] and len(heldout) == cfg.eval_rows
    manifest = json.loads((tmp_path / "01_data" / "manifest.json").read_text())
    assert manifest["facts"] == facts and manifest["produced"]["train"] == "01_data/train.jsonl"


def test_tool_call_rows_are_counted_not_hidden(tmp_path):
    cfg = make_run_config("llama32_3b_thinking8k", dry_run=True, run_dir=str(tmp_path))
    splits = build_splits(cfg)
    counts = splits.report()["train_rejects"]
    assert counts and all(n > 0 for n in counts.values())
    assert any("tool_call" in reason for reason in counts)
