"""Keeping rules: a reply is split by lib.think and rejected with the data stage's reason strings."""
from __future__ import annotations

import pytest

from lib.rejects import ANSWER_MISMATCH
from lib.teacher.client import Completion
from lib.teacher.verdicts import (LENGTH_CUT, NOT_STOPPED, REJECT_REASONS, UNVERIFIED, judge_completion,
                                  split_reasoning)
from lib.think import EMPTY_ANSWER, EMPTY_THINK, NOT_ONE_THINK_BLOCK, TAG_INSIDE, UNCLOSED_THINK
from tests.teacher.fakes import MODEL, last_number_matches


def _completion(content: str, finish_reason: str = "stop", reasoning_content: str | None = None) -> Completion:
    return Completion(content=content, reasoning_content=reasoning_content, finish_reason=finish_reason, usage=None,
                      model=MODEL)


@pytest.mark.parametrize("completion, reference, verify_result, reason", [
    (_completion("<think>\nsteps\n</think>\n\nThe answer is 4."), "4", None, None),
    (_completion("steps without the opening tag</think>The answer is 4."), "4", None, None),
    (_completion("<think>steps</think>The answer is 4.", "length"), "4", None, LENGTH_CUT),
    (_completion("<think>steps</think>The answer is 4.", "content_filter"), "4", None, NOT_STOPPED),
    (_completion("<think>steps and steps, never closed"), "4", None, UNCLOSED_THINK),
    (_completion("<think>a</think>b</think>4"), "4", None, NOT_ONE_THINK_BLOCK),
    (_completion("<think>a</think>The answer is 4. <think>"), "4", None, TAG_INSIDE),
    (_completion("<think>  </think>The answer is 4."), "4", None, EMPTY_THINK),
    (_completion("<think>steps</think>  \n"), "4", None, EMPTY_ANSWER),
    (_completion("<think>steps</think>The answer is 5."), "4", None, ANSWER_MISMATCH),
    (_completion("<think>steps</think>The answer is 4."), "4", "undecided", UNVERIFIED),
    (_completion("The answer is 4.", reasoning_content="steps"), "4", None, None),
    (_completion("", reasoning_content="steps"), "4", None, EMPTY_ANSWER),
    (_completion("The answer is 4. </think>", reasoning_content="steps"), "4", None, TAG_INSIDE),
    (_completion("<think>steps</think>Any answer."), None, None, None),
])
def test_keeping_rules(completion, reference, verify_result, reason):
    verify = (lambda ref, text: None) if verify_result == "undecided" else last_number_matches
    verdict = judge_completion(completion, reference, verify)
    assert verdict["reject_reason"] == reason and (reason is None or reason in REJECT_REASONS)
    assert verdict["kept"] is (reason is None)
    if reason is None:
        assert verdict["think"] == "steps" or verdict["think"] == "steps without the opening tag"
        assert verdict["verified"] is (None if reference is None else True)


def test_only_an_empty_answer_keeps_the_partial_think():
    assert split_reasoning("<think> steps </think>  ", None) == ("steps", None, EMPTY_ANSWER)
    assert split_reasoning("", "  steps ") == ("steps", None, EMPTY_ANSWER)
    assert split_reasoning("<think>steps, never closed", None) == (None, None, UNCLOSED_THINK)
    assert split_reasoning("<think> </think>4", None) == (None, None, EMPTY_THINK)


def test_the_verifier_is_asked_only_with_a_reference_and_plain_bools_are_recorded():
    asked = []
    kept = judge_completion(_completion("<think>s</think>4"), None, lambda ref, text: asked.append(ref))
    assert asked == [] and kept["kept"] and kept["verified"] is None

    class NumpyLikeTrue:  # math-verify can hand back numpy / sympy booleans
        def __bool__(self):
            return True

    verdict = judge_completion(_completion("<think>s</think>4"), "4", lambda ref, text: NumpyLikeTrue())
    assert verdict["verified"] is True and verdict["final_answer"] == "4"


def test_reject_reasons_are_the_shared_strings_and_each_is_listed_once():
    assert len(set(REJECT_REASONS)) == len(REJECT_REASONS)
    assert {UNCLOSED_THINK, NOT_ONE_THINK_BLOCK, TAG_INSIDE, EMPTY_THINK, EMPTY_ANSWER, ANSWER_MISMATCH} <= \
        set(REJECT_REASONS)
    assert all(" " in reason for reason in REJECT_REASONS)  # plain English, not snake_case identifiers
