"""06's stage helpers on small real files: the GRPO source through 01's pipeline without the held-out prompts, the
base → SFT → SFT+GRPO rows, the reward curves from TRL's log."""
import pytest

from lib.data.rows import read_reasoning_rows
from lib.grpo.settings import GrpoSettings
from lib.grpo.stage import reward_curves, side_by_side, verifiable_rows
from lib.jsonl import write_jsonl
from lib.modes import make_run_config
from lib.paths import DATA_DIR
from lib.run_config import StaleStage, write_manifest

SOURCE = DATA_DIR / "arithmetic" / "test.jsonl.gz"


def test_verifiable_rows_leave_out_the_held_out_prompts_and_count_them(tmp_path):
    cfg = make_run_config("smollm2_135m_arithmetic", dry_run=True, run_dir=str(tmp_path))
    first, _ = read_reasoning_rows(SOURCE, "gsm8k", limit=2)
    heldout = tmp_path / "01_data" / "heldout.jsonl"
    write_jsonl(heldout, first[1:2])  # the source's second problem is one of 01's held-out prompts
    write_manifest(cfg, "01_data", {}, {"heldout": heldout})
    settings = GrpoSettings(dataset_path=str(SOURCE), dataset_format="gsm8k", prompts=3)
    rows, source, counts = verifiable_rows(cfg, settings)
    held_question = first[1]["messages"][0]["content"]
    assert source == str(SOURCE) and held_question not in [r["messages"][0]["content"] for r in rows]
    assert counts["rows read"] >= counts["kept by 01's pipeline"] == len(rows) + counts["removed: a held-out prompt"]
    assert counts["removed: a held-out prompt"] == 1 and counts["without a reference answer"] == 0
    assert len(rows) == 2 * settings.prompts - 1  # twice the prompts asked for are read, less the held-out one


def _results(cfg, tmp_path, results):
    prompts = tmp_path / "05_eval_edge" / "prompts.jsonl"
    cfg.stage_dir("05_eval_edge")
    prompts.write_text("{}\n")
    (tmp_path / "05_eval_edge" / "results.json").write_text("{}")
    write_manifest(cfg, "05_eval_edge", {"prompts": prompts}, {"results": tmp_path / "05_eval_edge" / "results.json"},
                   {"results": results})
    return prompts


def test_side_by_side_puts_base_then_sft_then_grpo_without_ablations_or_budgets(tmp_path):
    cfg = make_run_config("smollm2_135m_arithmetic", dry_run=True, run_dir=str(tmp_path))
    before = [{"label": "base", "think_budget": None}, {"label": "distilled-Q8_0", "think_budget": None},
              {"label": "distilled-Q8_0", "think_budget": 16},
              {"label": "distilled-Q8_0-no-repeat-penalty", "think_budget": None}]
    prompts = _results(cfg, tmp_path, before)
    grpo = [{"label": "grpo-Q8_0", "think_budget": None}]
    assert [r["label"] for r in side_by_side(cfg, {"results": grpo})] == ["base", "distilled-Q8_0", "grpo-Q8_0"]
    prompts.write_text("{}\n{}\n")  # 05's prompts written anew since its results: 06 refuses to mix them
    with pytest.raises(StaleStage, match="05_eval_edge"):
        side_by_side(cfg, {"results": grpo})


def test_reward_curves_keep_logged_steps_with_a_reward_and_name_each_series():
    log = [{"step": 1, "reward": 1.5, "rewards/correctness/mean": 1.0, "rewards/format/mean": 1.0,
            "rewards/overlong/mean": 0.0, "completions/mean_length": 43.0, "completions/clipped_ratio": 0.0},
           {"step": 1, "train_runtime": 9.0},  # TRL's summary entry: no reward, not a point
           {"step": 2, "reward": 0.5, "kl": 0.01}]
    curves = reward_curves(log)
    assert [c["step"] for c in curves] == [1, 2]
    assert curves[0] == {"step": 1, "reward": 1.5, "correctness": 1.0, "format": 1.0, "overlong": 0.0, "kl": None,
                         "length": 43.0, "clipped": 0.0}
    assert curves[1]["kl"] == 0.01 and curves[1]["correctness"] is None
