"""lib.masking.build_masked_examples: the batched path gives exactly the examples of build_masked_example."""
from __future__ import annotations

import pytest

from lib.models import shared_fixture_tokenizer
from lib.masking.templates import MaskingError, build_masked_example, build_masked_examples

# Canonical replies (think block, blank line, answer): every family's template keeps them verbatim.
A1 = "<think>\nFirst add 2 and 2.\n</think>\n\nThe answer is 4."
A2 = "<think>\nDouble 4: 8.\n</think>\n\nThe answer is 8."
SYSTEM = {"role": "system", "content": "Keep it short."}
SINGLE = [{"role": "user", "content": "what is 2+2?"}, {"role": "assistant", "content": A1}]
MULTI = SINGLE + [{"role": "user", "content": "and doubled?"}, {"role": "assistant", "content": A2}]
CONVERSATIONS = [SINGLE, [SYSTEM, *SINGLE], MULTI, [SYSTEM, *MULTI], MULTI + SINGLE]
KWARGS = {"llama3_2": {"date_string": "26 Jul 2024"}}


def _fields(example):
    return (example.input_ids, example.labels, example.text, example.offsets, example.trained_char_ranges,
            example.untrained_turns)


@pytest.mark.parametrize("family", ["llama3_2", "mistral_v3", "qwen2_5", "qwen3", "smollm2"])
@pytest.mark.parametrize("turns", ["all", "last"])
def test_batched_examples_equal_one_at_a_time(family, turns):
    tok = shared_fixture_tokenizer(family)
    single = [build_masked_example(m, tok, KWARGS.get(family), turns) for m in CONVERSATIONS]
    for batch_size in (2, 256):  # a partial last batch, and everything in one call
        batched = build_masked_examples(CONVERSATIONS, tok, KWARGS.get(family), turns, batch_size=batch_size)
        assert [_fields(e) for e in batched] == [_fields(e) for e in single]


def test_batched_errors_are_the_single_path_errors():
    tok = shared_fixture_tokenizer("smollm2")
    with pytest.raises(MaskingError, match="^sample b: no assistant turn to train$"):
        build_masked_examples([SINGLE, SINGLE[:1]], tok, sample_ids=["a", "b"])
    with pytest.raises(ValueError, match="1 sample ids for 2 conversations"):
        build_masked_examples([SINGLE, SINGLE], tok, sample_ids=["a"])
    assert build_masked_examples([], tok) == []
