"""Stage selection, notebook pairs in sync, failing notebooks kept, and the run report."""
import json
import shutil

import pytest

from lib.notebook_sync import pair_problems
from lib.paths import NOTEBOOKS_DIR
from lib.report import render_markdown
from lib.runner import STAGES, StageFailed, record_timing, run_recipe, select_stages


def test_select_stages():
    assert select_stages(None) == list(STAGES)
    assert select_stages("03,01") == ["01_data", "03_train"]
    with pytest.raises(ValueError, match="stages are"):
        select_stages("07")


@pytest.mark.parametrize("stage", STAGES)
def test_committed_notebook_pairs_are_in_sync_and_clean(stage):
    assert pair_problems(NOTEBOOKS_DIR / f"{stage}.py") == []


def test_a_drifted_pair_is_reported(tmp_path):
    for suffix in (".py", ".ipynb"):
        shutil.copy(NOTEBOOKS_DIR / f"01_data{suffix}", tmp_path / f"01_data{suffix}")
    script = tmp_path / "01_data.py"
    script.write_text(script.read_text() + "\n# %%\nprint('new cell')\n")
    assert any("differ" in p for p in pair_problems(script))


def test_a_failing_stage_exits_with_the_executed_notebook_kept(tmp_path):
    # 02 without 01 in an empty run folder fails in its first code cell with a message naming 01
    with pytest.raises(StageFailed) as caught:
        run_recipe("smollm2_135m", dry_run=True, stages="02", run_dir=str(tmp_path), log=lambda _: None)
    assert "01_data" in str(caught.value)
    assert caught.value.notebook.is_file()
    assert "run notebook 01_data" in caught.value.notebook.read_text()


def test_report_markdown_from_stage_facts():
    report = {"timings": {"01_data": 60.0, "03_train": 540.0},
              "stages": {"01_data": {"train_rows": 640, "heldout_rows": 50, "train_audit": {
                  "schema": "gsm8k", "rows_read": 648, "rejected_per_reason": {"contaminated": 8}}},
                         "05_eval_edge": {"prompts": 50, "k": 4, "results": [
                  {"label": "distilled-Q8_0", "benchmark": "heldout", "problems": 50, "closure_rate": 0.96,
                   "pass@1": {"mean": 0.04, "low": 0.0, "high": 0.1}, "truncation_rate": 0.02, "loop_rate": 0.0,
                   "think_tokens": {"p50": 80.5}, "tokens_per_second": 61.2, "peak_rss_mib": 410.0}]}}}
    text = render_markdown("smollm2_135m", report)
    assert "Wall time: 10.0 min" in text
    assert ("Data: 640 training rows (gsm8k, 648 rows read), 50 held-out prompts; rejected or "
            "removed: {'contaminated': 8}") in text
    assert "| distilled-Q8_0 | heldout (50) | 4 % [0–10] | 96% | 2% | 0% | 80.5 | 61.2 | 410.0 |" in text


def test_report_sets_the_cpu_memory_plan_next_to_the_measured_peak():
    train = {"mode": "trained", "backend": "transformers+peft", "steps": 160, "train_seconds": 570.5,
             "first_loss": 1.4, "last_loss": 0.888, "trainable_params": 4884480,
             "cpu_memory": {"largest_micro_batch_tokens": 1299, "plan_gib": 4.185, "peak_rss_gib": 4.928,
                            "plan_error": -0.151}}
    text = render_markdown("smollm2_135m", {"timings": {}, "stages": {"03_train": train}})
    assert ("Memory (CPU): largest micro-batch 1,299 tokens, planned 4.18 GiB, measured peak RSS 4.93 GiB "
            "(plan -15.1 %)") in text


def test_report_names_the_merge_check_that_ran():
    from lib.report import merge_line

    logits = {"strategy": "in_memory", "check": "logits", "max_logit_difference": 0.0052, "tolerance": 0.026,
              "tolerance_rule": "max(0.001, 1·sqrt(layers)·eps(bfloat16)·max|logits|)"}
    assert merge_line(logits) == ("Merge (in_memory): max |logit difference| = 5.20e-03 (tolerance 2.60e-02: "
                                  "max(0.001, 1·sqrt(layers)·eps(bfloat16)·max|logits|))")
    tensors = {"strategy": "sharded", "check": "per_tensor", "tensors_checked": 8, "max_difference_over_bound": 0.5,
               "dtype": "bfloat16"}
    assert merge_line(tensors) == "Merge (sharded): 8 merged tensors re-derived, max difference 0.50 of one bfloat16 rounding"


def test_jupytext_config_pairs_every_notebook_with_a_percent_script():
    # JupyterLab and `jupytext --sync` read jupytext.toml: without it, saving the .ipynb would not update the .py
    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

    config = load_jupytext_configuration_file(find_jupytext_configuration_file(str(NOTEBOOKS_DIR)))
    assert "ipynb,py:percent" in config.formats
    assert "tags" in config.cell_metadata_filter


def test_a_partial_rerun_updates_its_stage_timing_and_keeps_the_others(tmp_path):
    path = tmp_path / "timings.json"
    record_timing(path, "03_train", 700.0)
    record_timing(path, "01_data", 2.0)
    assert record_timing(path, "03_train", 650.5) == {"01_data": 2.0, "03_train": 650.5}
    assert list(json.loads(path.read_text())) == ["01_data", "03_train"]


def test_a_live_run_names_each_code_cell_and_passes_on_what_it_prints(tmp_path):
    """`python -m lib run` (live): a line per code cell started, with the cell's first line of code, then the cell's
    own printed lines, in order; no "<IPython.core.display… object>" placeholders of displays."""
    lines = []
    run_recipe("smollm2_135m", dry_run=True, stages="01", run_dir=str(tmp_path), log=lines.append, live=True)
    cells = [line for line in lines if " · cell " in line]
    assert cells[0].startswith("[smollm2_135m dry-run] 01_data · cell 2/") and 'model = "smollm2_135m"' in cells[0]
    assert any(line.endswith("# injected parameters") for line in cells)
    assert any("cfg = make_run_config(" in line or "from IPython.display import display" in line for line in cells)
    assert not any("IPython.core.display" in line for line in lines)


def test_cell_log_maps_papermill_cell_numbers_past_the_injected_parameters():
    import logging

    import nbformat

    from lib.runner import CellLog

    cells = [nbformat.v4.new_markdown_cell("# title"), nbformat.v4.new_code_cell("model = 'x'"),
             nbformat.v4.new_code_cell("# why\n\nrun(model)\nmore()")]
    cells[1].metadata["tags"] = ["parameters"]
    lines = []
    handler = CellLog("[x] 01", cells, lines.append)
    for number in (1, 2, 3, 4):
        handler.emit(logging.LogRecord("papermill", logging.INFO, "", 0, f"Executing Cell {number}----", None, None))
    handler.emit(logging.LogRecord("papermill", logging.INFO, "", 0, "<IPython.core.display.HTML object>", None, None))
    assert lines == ["[x] 01 · cell 2/4: model = 'x'", "[x] 01 · cell 3/4: # injected parameters",
                     "[x] 01 · cell 4/4: run(model)"]


def _manifest(folder, stage, facts, config=None):
    (folder / stage).mkdir(parents=True)
    (folder / stage / "manifest.json").write_text(json.dumps({"stage": stage, "config": config or {}, "facts": facts}))


def test_tiny_report_says_what_06_proved_only_where_06_ran(tmp_path):
    from lib.report import tiny_report

    _manifest(tmp_path, "03_train", {"steps": 2, "first_loss": 10.5, "last_loss": 10.4}, {"recipe": "r"})
    _manifest(tmp_path, "04_merge_export", {"max_logit_difference": 1e-5, "sizes": [
        {"file": "r-F16.gguf", "real_bytes": 9}, {"file": "r-Q8_0.gguf", "real_bytes": 5}]})
    _manifest(tmp_path, "05_eval_edge", {"results": [{"label": "base"}, {"label": "distilled-Q8_0"},  # 2 benchmarks
                                                     {"label": "base"}, {"label": "distilled-Q8_0"}]})
    report = tiny_report(tmp_path)
    assert report["grpo"] is None and report["all_gguf_written"] and report["judged"] == ["base", "distilled-Q8_0"]
    _manifest(tmp_path, "06_grpo", {"steps": 2, "start_from": "sft", "merge": {"max_logit_difference": 2e-5},
                                    "results": [{"label": "grpo-Q8_0"}]})
    assert tiny_report(tmp_path)["grpo"] == {"steps": 2, "start_from": "sft", "merge_max_logit_difference": 2e-5,
                                             "judged": ["grpo-Q8_0"]}
