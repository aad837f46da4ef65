"""Token-length audit and the length policy (lib.masking.lengths, lib.data.pipeline) on real tokenizers.

The guarantee tested here: every kept training example has its `</think>`, its answer and its end-of-turn token
inside the trained tokens, whatever the policy (nothing is ever cut).
"""
from __future__ import annotations

import pytest

from lib.data.rows import read_reasoning_rows
from lib.masking.lengths import (CANNOT_MASK, OVERLONG, LengthAudit, OverlongError, decide_max_length,
                                 incomplete_reply, length_summary, measure)
from lib.masking.masker import mask_all
from lib.masking.stage import mask_rows
from lib.masking.templates import IGNORE_INDEX, MaskingError, end_of_turn_tokens, trained_text
from lib.models import load_fixture_tokenizer
from lib.recipe import load_recipe, with_overrides


def test_length_summary_counts_what_max_length_would_cut():
    summary = length_summary([100, 200, 300, 400], max_length=250)
    assert summary["over_max_length"] == 2 and summary["share_over_max_length"] == 0.5
    assert summary["max"] == 400 and summary["p50"] == 250
    assert length_summary([], 10)["examples"] == 0


def test_raise_names_the_count_and_both_ways_out():
    with pytest.raises(OverlongError, match=r"1 of 3 examples measured are longer than max_length 250 \(r; "
                                            r"longest 300"):
        decide_max_length([100, 200, 300], 250, "raise", recipe_name="r")
    assert decide_max_length([100, 200], 250, "raise").over == 0


def test_drop_keeps_max_length_and_counts_the_longer_ones():
    decision = decide_max_length([100, 200, 300], 250, "drop")
    assert (decision.max_length, decision.over) == (250, 1)


@pytest.mark.parametrize("recipe_max, expected", [(4096, 1024), (512, 1024)])
def test_fit_takes_the_percentile_rounded_up_to_64_above_or_below_the_recipe(recipe_max, expected):
    lengths = list(range(1, 1001)) + [5000]  # p99 inside the bulk (991), one outlier
    decision = decide_max_length(lengths, recipe_max, "fit", percentile=99)
    assert decision.max_length == expected and decision.over == 1 and decision.recipe_max_length == recipe_max


@pytest.fixture(scope="module")
def smollm2():
    return load_fixture_tokenizer("smollm2")


def gsm8k_rows(n):
    rows, _ = read_reasoning_rows("data/gsm8k/train.jsonl.gz", "gsm8k", limit=n)
    return rows


@pytest.mark.parametrize("policy", ["drop", "fit"])
@pytest.mark.parametrize("fixture, chat_format", [("smollm2", "template"), ("llama3_2", "template"),
                                                  ("mistral_v3", "template"), ("qwen3", "template"),
                                                  ("mistral_v3", "plain")])
def test_every_kept_example_trains_its_think_close_answer_and_end_of_turn(policy, fixture, chat_format):
    """Real GSM8K rows, real tokenizers, a max_length that cuts through the distribution."""
    tokenizer = load_fixture_tokenizer(fixture)
    recipe = with_overrides(load_recipe("smollm2_135m"), max_length=160, overlong_policy=policy, fit_percentile=60.0,
                            chat_format=chat_format, chat_template_kwargs={"date_string": "26 Jul 2024"}
                            if fixture == "llama3_2" else {},
                            plain_format="Question: {problem}\nAnswer: <think>\n{thinking}\n</think>\n\n{solution}")
    rows = gsm8k_rows(60)
    masked = mask_rows(recipe, rows, tokenizer)
    assert masked.examples and masked.stats["dropped_overlong"] > 0  # the policy had work to do
    by_id = {row["id"]: row for row in rows}
    for row_id, example in zip(masked.ids, masked.examples):
        row = by_id[row_id]
        assert len(example.input_ids) <= masked.decision.max_length
        text = trained_text(example, tokenizer)
        assert "</think>" in text and row["messages"][-1]["answer"] in text
        last_trained = max(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
        assert tokenizer.convert_ids_to_tokens(example.input_ids[last_trained]) in end_of_turn_tokens(tokenizer)
        assert incomplete_reply(example, row, end_of_turn_tokens(tokenizer), masked.decision.max_length) is None
    assert len(masked.examples) + len(masked.rejects) == len(rows)  # every row accounted for
    assert {r.reason for r in masked.rejects} == {OVERLONG}


def test_incomplete_reply_names_what_is_missing(smollm2):
    recipe = load_recipe("smollm2_135m")
    row = gsm8k_rows(1)[0]
    example = mask_all([row], smollm2, recipe)[0]
    ends = end_of_turn_tokens(smollm2)
    assert incomplete_reply(example, row, ends, 10) == f"{len(example.input_ids)} tokens > max_length 10"
    start, end = example.trained_char_ranges[-1]
    cut = type(example)(example.input_ids, example.labels, example.text, example.offsets, [(start, end - 12)])
    assert incomplete_reply(cut, row, ends, 4096) in ("the answer is not trained",
                                                      "the end-of-turn token is not trained")
    masked_answer = list(example.labels)
    masked_answer[-3] = IGNORE_INDEX
    broken = type(example)(example.input_ids, masked_answer, example.text, example.offsets,
                           example.trained_char_ranges)
    assert incomplete_reply(broken, row, ends, 4096) == "a token inside the reply is masked"


def test_a_row_the_template_cannot_mask_is_a_reject_not_a_crash(smollm2):
    recipe = load_recipe("smollm2_135m")
    rows = gsm8k_rows(3)
    rows[1]["messages"][-1]["answer"] += " <|im_end|>"  # special-token text inside a reply
    results = measure(rows, lambda batch: mask_all(batch, smollm2, recipe))
    assert isinstance(results[1], MaskingError) and not isinstance(results[0], MaskingError)
    audit = LengthAudit(lambda batch: mask_all(batch, smollm2, recipe), end_of_turn_tokens(smollm2))
    for line, row in enumerate(rows, 1):
        audit.add(line, row)
    audit.finish()
    assert [(r.line, r.reason) for r in audit.rejects] == [(2, CANNOT_MASK)]
    assert "<|im_end|>" in audit.rejects[0].detail and [line for line, *_ in audit.measured] == [1, 3]


class CountingRows(list):
    """A list that records how far it was iterated."""

    read = 0

    def __iter__(self):
        for row in super().__iter__():
            self.read += 1
            yield row


def test_policy_raise_stops_masking_at_the_first_chunk_holding_an_overlong_example(smollm2):
    recipe = with_overrides(load_recipe("smollm2_135m"), max_length=100, overlong_policy="raise")
    rows = CountingRows(gsm8k_rows(600))
    with pytest.raises(OverlongError, match="examples measured are longer than max_length 100"):
        mask_rows(recipe, rows, smollm2)
    assert rows.read == 256  # one chunk masked, not all 600


def test_plain_format_refuses_multi_turn_rows_and_special_token_text():
    """A base-model pattern has one problem and one reply: anything else would train a reply on the wrong prompt."""
    tokenizer = load_fixture_tokenizer("mistral_v3")
    recipe = with_overrides(load_recipe("nanbeige4_3b_coldstart"), max_length=4096)
    good = gsm8k_rows(1)[0]
    multi = {**good, "id": "multi", "messages": [{"role": "system", "content": "SYS"}, *good["messages"]]}
    with pytest.raises(MaskingError, match="plain_format takes one user turn and one reply; this row has system"):
        mask_all([multi], tokenizer, recipe)
    eos_inside = {**good, "id": "eos", "messages": [good["messages"][0], {**good["messages"][1],
                                                                         "answer": "ans </s> more"}]}
    with pytest.raises(MaskingError, match="contains the special token '</s>' as text"):
        mask_all([eos_inside], tokenizer, recipe)
    assert mask_all([good], tokenizer, recipe)[0].n_trained > 0
