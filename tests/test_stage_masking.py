"""Stage 02 on the shipped data and the family's real tokenizer: policies, turn-type views, stats."""
import dataclasses

import pytest

from lib.masking import IGNORE_INDEX, MaskingError, trained_text
from lib.params import with_overrides
from lib.run_config import make_run_config
from lib.stage_data import build_splits
from lib.stage_masking import (
    example_browser, mask_histograms, mask_rows, tokenizer_for, trained_fraction_table, turn_type_examples,
)


def _masked(tmp_path, recipe="smollm2_135m", **overrides):
    cfg = make_run_config(recipe, dry_run=True, run_dir=str(tmp_path))
    if overrides:
        cfg = dataclasses.replace(cfg, recipe=with_overrides(cfg.recipe, **overrides))
    rows = build_splits(cfg).train
    tokenizer = tokenizer_for(cfg)
    return cfg, rows, tokenizer


def test_overlong_examples_are_refused_or_dropped_and_counted_never_cut(tmp_path):
    cfg, rows, tok = _masked(tmp_path)  # rows that fit the recipe's 512; 02 is then asked for 100 (its safety net)
    cfg = dataclasses.replace(cfg, recipe=with_overrides(cfg.recipe, max_length=100, overlong_policy="raise"))
    with pytest.raises(MaskingError, match=r"tokens > max_length 100 .*overlong_policy: drop"):
        mask_rows(cfg, rows, tok)
    cfg = dataclasses.replace(cfg, recipe=with_overrides(cfg.recipe, overlong_policy="drop"))
    masked = mask_rows(cfg, rows, tok)
    assert masked.stats["dropped_overlong"] == len(masked.dropped_overlong) > 0
    assert len(masked.examples) + len(masked.dropped_overlong) == len(rows)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    for example in masked.examples:  # every kept example still ends its trained reply with the end-of-turn token
        assert len(example.input_ids) <= 100
        assert [lab for lab in example.labels if lab != IGNORE_INDEX][-1] == eot


def test_turn_type_examples_show_single_and_two_turn_masks(tmp_path):
    cfg, rows, tok = _masked(tmp_path)
    views = turn_type_examples(cfg, rows, tok)
    assert list(views) == ["single turn (as trained)", "two turns, assistant_turns: all",
                           "two turns, assistant_turns: last"]
    single, both, last = (trained_text(v, tok) for v in views.values())
    assert both.endswith(last) and both.startswith(single) and both.count("<|im_end|>") == 2
    assert last.count("<|im_end|>") == 1


def test_plain_format_recipe_has_only_the_single_turn_view(tmp_path):
    cfg, rows, tok = _masked(tmp_path, recipe="nanbeige4_3b_coldstart")
    assert list(turn_type_examples(cfg, rows, tok)) == ["single turn (as trained)"]


def test_stats_table_histograms_and_browser(tmp_path):
    cfg, rows, tok = _masked(tmp_path)
    masked = mask_rows(cfg, rows, tok)
    table = trained_fraction_table(masked, limit=3).data
    assert table.count("\n| ") == 3 and f"and {len(masked.examples) - 3} more" in table
    assert f"| {masked.ids[0]} | {len(masked.examples[0].input_ids)} | {masked.examples[0].n_trained} |" in table
    path = mask_histograms(masked, tmp_path / "h.png", cfg.recipe.max_length, "t")
    assert path.stat().st_size > 1000
    browser = example_browser(masked, tok)
    slider, view = browser.children
    assert slider.max == len(masked.examples) - 1 and masked.ids[0] in view.value
    slider.value = 2
    assert masked.ids[2] in view.value
