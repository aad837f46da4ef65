"""Judging a teacher's reply: split it into think and answer, then keep it or name the one reason it is rejected.

Usage: ``verdict = judge_completion(completion, reference="4", verify=reply_matches_reference)``
(``verdict["kept"]``, ``verdict["reject_reason"]``, ``verdict["think"]``, ``verdict["final_answer"]``)

A reply is split by `lib.think`, the splitter the data stage uses, so a teacher trace is kept exactly when the
data stage would accept it, and a reject carries the same reason string (`lib.think`'s, `lib.rejects`'). The
reasons only a live teacher can cause are defined here, once.
"""
from __future__ import annotations

from typing import Callable

from lib.rejects import ANSWER_MISMATCH, RejectError
from lib.think import (EMPTY_ANSWER, EMPTY_THINK, NOT_ONE_THINK_BLOCK, TAG_INSIDE, UNCLOSED_THINK, check_reply,
                       split_think_block)
from lib.teacher.client import Completion

Verify = Callable[[str, str], "bool | None"]

# Reasons only a teacher reply can have (the server stopped it, or no verdict could be reached).
LENGTH_CUT = "cut at max_tokens"  # finish_reason "length": the thought did not fit
NOT_STOPPED = "ended without finish_reason stop"  # e.g. "content_filter", or no finish_reason at all
UNVERIFIED = "answer could not be verified"  # the verifier returned None: neither a match nor a mismatch
FAILED_REQUEST = "request failed"  # no reply after the retries: the id is in the failure log, retried next run

REJECT_REASONS = (LENGTH_CUT, NOT_STOPPED, UNCLOSED_THINK, NOT_ONE_THINK_BLOCK, TAG_INSIDE, EMPTY_THINK,
                  EMPTY_ANSWER, ANSWER_MISMATCH, UNVERIFIED, FAILED_REQUEST)
# Files written before the reasons were unified (snake_case, teacher-only): read back under today's names, so a
# resumed output never counts one reason under two names.
LEGACY_REASONS = {"length_cut": LENGTH_CUT, "not_stopped": NOT_STOPPED, "unclosed_think": UNCLOSED_THINK,
                  "stray_think_tag": NOT_ONE_THINK_BLOCK, "empty_think": EMPTY_THINK, "empty_answer": EMPTY_ANSWER,
                  "wrong_answer": ANSWER_MISMATCH, "unverified": UNVERIFIED, "failed_request": FAILED_REQUEST}



def split_reasoning(content: str, reasoning_content: str | None) -> tuple[str | None, str | None, str | None]:
    """(think, answer, reject reason or None) of a reply, stripped; pure.

    A non-empty `reasoning_content` is the think and the content the answer. Otherwise the content is one
    think block whose `<think>` may be missing (R1-style templates put it in the prompt) and whose `</think>`
    must appear exactly once. When only the answer is empty the think is still returned: a record keeps it.
    """
    if reasoning_content and reasoning_content.strip():
        think, answer = reasoning_content, content
    else:
        try:
            think, answer = split_think_block(content, opened_by_prompt=True)
        except RejectError as err:
            return None, None, err.reason
    try:
        think, answer = check_reply(think, answer)
    except RejectError as err:
        return (think.strip() if err.reason == EMPTY_ANSWER else None), None, err.reason
    return think, answer, None


def judge_completion(completion: Completion, reference: str | None, verify: Verify | None) -> dict:
    """The verdict fields of a record: think, final_answer, verified, kept, reject_reason.

    `verify` is called only when the prompt has a reference (and a verifier is given); only True keeps.
    """
    verdict = {"think": None, "final_answer": None, "verified": None, "kept": False, "reject_reason": None}
    think, answer, problem = split_reasoning(completion.content, completion.reasoning_content)
    verdict.update(think=think, final_answer=answer)
    if completion.finish_reason != "stop":  # a cut thought is the most common failure: report it as such
        problem = LENGTH_CUT if completion.finish_reason == "length" else NOT_STOPPED
    if problem is None and reference is not None and verify is not None:
        result = verify(reference, answer)
        verdict["verified"] = None if result is None else bool(result)  # numpy/sympy booleans become plain bools
        if verdict["verified"] is not True:
            problem = ANSWER_MISMATCH if verdict["verified"] is False else UNVERIFIED
    verdict.update(kept=problem is None, reject_reason=problem)
    return verdict
