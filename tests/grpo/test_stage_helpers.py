"""06's stage helpers on small real files: the GRPO source through 01's pipeline without the held-out prompts, the
base → SFT → SFT+GRPO rows, the reward curves from TRL's log."""
import pytest

from lib.data.rows import read_reasoning_rows
from lib.grpo.settings import GrpoSettings
from lib.grpo.stage import gain_over_sft, reward_curves, side_by_side, verifiable_rows
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


def _judged(correct, closed=None):
    closed = closed or [True] * len(correct)
    return [{"problem_id": f"p{i}", "correct": c, "closed_think": t} for i, (c, t) in enumerate(zip(correct, closed))]


def test_gain_over_sft_is_grpo_minus_the_sft_file_of_the_same_quant_paired_by_problem():
    sft = {"base": _judged([False] * 40), "distilled-Q8_0": _judged([True] * 20 + [False] * 20)}
    # GRPO keeps the SFT answers and gets 4 more problems right: +10 points on 40 problems
    grpo = {"grpo-Q8_0": _judged([True] * 24 + [False] * 16), "grpo-Q4_K_M": _judged([True] * 40)}
    rows = {(r["file"], r["metric"]): r for r in gain_over_sft(sft, grpo)}
    assert set(rows) == {("Q8_0", "pass@1"), ("Q8_0", "closure")}  # Q4_K_M: no SFT file of that quant to pair with
    gain = rows["Q8_0", "pass@1"]
    assert (gain["problems"], gain["SFT"], gain["SFT+GRPO"], gain["change"]["mean"]) == (40, 0.5, 0.6, 0.1)
    # paired: only the 4 changed problems vary, so the interval excludes 0 although 50 % [35-65] and
    # 60 % [45-74] (Wilson, 40 problems) overlap
    assert 0 < gain["change"]["low"] < 0.1 < gain["change"]["high"] <= 0.2
    assert rows["Q8_0", "closure"]["change"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
