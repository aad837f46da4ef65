"""Stage 02 on the shipped data and the family's real tokenizer: length policies, the saved masked set, views."""
import json

import pytest

from lib.data.stage import build_splits, save_splits
from lib.display import example_browser, length_plot, trained_fraction_table
from lib.masking.dataset import read_masked
from lib.masking.lengths import OVERLONG, OverlongError
from lib.masking.stage import mask_rows, read_rows, save_masked, turn_type_examples
from lib.masking.templates import IGNORE_INDEX, MaskingError, trained_text
from lib.modes import config_for, make_run_config
from lib.recipe import load_recipe, with_overrides


def _rows(tmp_path, recipe="smollm2_135m"):
    """(config, 01's saved training rows, the fixture tokenizer) of a dry-run."""
    cfg = make_run_config(recipe, dry_run=True, run_dir=str(tmp_path))
    save_splits(cfg, build_splits(cfg))
    return cfg, read_rows(cfg), cfg.mode.tokenizer()


def test_overlong_examples_are_refused_or_dropped_and_counted_never_cut(tmp_path):
    cfg, rows, tok = _rows(tmp_path)
    short = with_overrides(cfg.recipe, max_length=150, overlong_policy="raise")  # the 16 rows run 122-395 tokens
    with pytest.raises(OverlongError, match=r"longer than max_length 150 .*overlong_policy: drop"):
        mask_rows(short, rows, tok)
    masked = mask_rows(with_overrides(short, overlong_policy="drop"), rows, tok)
    dropped = [r for r in masked.rejects if r.reason == OVERLONG]
    assert masked.stats["dropped_overlong"] == len(dropped) > 0 and masked.examples
    assert len(masked.examples) + len(dropped) == len(rows) == len(masked.lengths)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    for example in masked.examples:  # every kept example still ends its trained reply with the end-of-turn token
        assert len(example.input_ids) <= 150
        assert [lab for lab in example.labels if lab != IGNORE_INDEX][-1] == eot


def test_fit_policy_chooses_max_length_and_03_reads_it_with_the_masked_set(tmp_path):
    cfg, rows, tok = _rows(tmp_path)
    fit = config_for(with_overrides(cfg.recipe, overlong_policy="fit", fit_percentile=50.0), True, str(tmp_path))
    masked = mask_rows(fit.recipe, rows, tok)
    facts = save_masked(fit, masked)
    lengths = sorted(masked.lengths.values())
    assert facts["max_length"] % 64 == 0 and facts["max_length"] >= lengths[len(lengths) // 2 - 1]
    assert facts["max_length"] < cfg.recipe.max_length and len(masked.examples) < len(lengths)
    assert facts["rejected_per_reason"][OVERLONG] == len(lengths) - len(masked.examples)
    assert set(facts["memory_at_max_length"]["total_gib"]) == {"recipe max_length 512",
                                                               f"fitted max_length {facts['max_length']}"}
    manifest = json.loads((tmp_path / "02_masking" / "manifest.json").read_text())
    assert manifest["facts"]["max_length"] == facts["max_length"]
    saved = read_masked(tmp_path / manifest["produced"]["masked"])
    assert saved["id"] == masked.ids
    assert saved["input_ids"] == [e.input_ids for e in masked.examples]
    assert saved["labels"] == [e.labels for e in masked.examples]
    rejects = [json.loads(line) for line in (tmp_path / "02_masking" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == len(lengths) - len(masked.examples) and rejects[0]["reason"] == OVERLONG
    assert rows[rejects[0]["line"] - 1]["id"] == rejects[0]["id"]  # the line is the row's line in 01's train.jsonl


def test_rows_the_template_cannot_mask_are_rejects_then_too_many_stop_the_stage(tmp_path):
    cfg, rows, tok = _rows(tmp_path)
    bad = {**rows[1], "messages": [{"role": "user", "content": "<|im_start|>hi"}, rows[1]["messages"][-1]]}
    masked = mask_rows(cfg.recipe, [rows[0], bad, *rows[2:]], tok)
    assert [(r.line, r.reason) for r in masked.rejects] == [(2, "chat template cannot mask")]
    assert masked.stats["cannot_mask"] == 1 and len(masked.examples) == len(rows) - 1
    with pytest.raises(MaskingError, match=r"2 of 3 rows .* cannot be masked .*max_reject_fraction 0.2"):
        mask_rows(cfg.recipe, [rows[0], bad, bad], tok)


def test_turn_type_examples_show_single_and_two_turn_masks(tmp_path):
    cfg, rows, tok = _rows(tmp_path)
    views = turn_type_examples(cfg.recipe, rows, tok)
    assert list(views) == ["single turn (as trained)", "two turns, assistant_turns: all",
                           "two turns, assistant_turns: last"]
    single, both, last = (trained_text(v, tok) for v in views.values())
    assert both.endswith(last) and both.startswith(single) and both.count("<|im_end|>") == 2
    assert last.count("<|im_end|>") == 1


def test_plain_format_recipe_has_only_the_single_turn_view(tmp_path):
    cfg, rows, tok = _rows(tmp_path, recipe="nanbeige4_3b_coldstart")
    assert list(turn_type_examples(cfg.recipe, rows, tok)) == ["single turn (as trained)"]


def test_stats_table_length_plot_and_browser(tmp_path):
    cfg, rows, tok = _rows(tmp_path)
    masked = mask_rows(cfg.recipe, rows, tok)
    table = trained_fraction_table(masked.examples, masked.ids, limit=3).data
    assert table.count("\n| ") == 3 and f"and {len(masked.examples) - 3} more" in table
    assert f"| {masked.ids[0]} | {len(masked.examples[0].input_ids)} | {masked.examples[0].n_trained} |" in table
    length_plot(list(masked.lengths.values()), [0.5] * len(masked.examples), 512, 512, tmp_path / "h.png", "t")
    assert (tmp_path / "h.png").stat().st_size > 1000
    browser = example_browser(masked.examples, masked.ids, tok)
    slider, view = browser.children
    assert slider.max == len(masked.examples) - 1 and masked.ids[0] in view.value
    slider.value = 2
    assert masked.ids[2] in view.value


def test_a_recipe_with_an_unknown_schema_stops_when_the_run_starts():
    with pytest.raises(ValueError, match=r"dataset_format / dataset_fields: .*no_such_schema"):
        config_for(with_overrides(load_recipe("smollm2_135m"), dataset_format="no_such_schema"), True)


def test_a_recipe_that_drops_every_example_stops_with_the_numbers(tmp_path):
    cfg, rows, tok = _rows(tmp_path)
    with pytest.raises(MaskingError, match=r"no training example left: 16 rows from 01, 0 the template cannot mask, "
                                           r"16 longer than max_length 8 \(overlong_policy drop\)"):
        mask_rows(with_overrides(cfg.recipe, max_length=8, overlong_policy="drop"), rows, tok)
