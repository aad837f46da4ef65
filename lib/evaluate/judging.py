"""One generated reply → did it think, did it close the thought, what did it answer, is that right, does it loop.

Usage: ``judge_sample("<think>…</think> The answer is 72.", "72")``
→ ``{"opened_think": True, "closed_think": True, "answer_text": " The answer is 72.", "answer_key": "72",
"correct": True, "loop": None}``

The answer is the text after `</think>`; a reply that opened a thought and never closed it has no answer (its
numbers are reasoning, not a claim); a reply that never opened one is all answer (a base model's). Right or wrong
is math-verify's judgement, the rule the data stage verifies traces with (`lib.data.filters.reply_matches_reference`):
`\\frac12` is 0.5, a `\\boxed{}` answer is found, "The answer is 1,200." is 1200.
"""
from __future__ import annotations

from lib.data.filters import final_answer_text, parse_timeouts, reply_matches_reference
from lib.evaluate.checks import passes
from lib.evaluate.loops import find_loop
from lib.think import THINK_OPEN, think_and_answer


def reply_text(generated: str, prompt_opens_think: bool) -> str:
    """The reply a user sees: what the model generated, behind the `<think>` its generation prompt wrote when the
    template opens the block itself (DeepSeek-R1-Distill); judged as such, its opening and closing count."""
    if prompt_opens_think and not generated.lstrip().startswith(THINK_OPEN):
        return f"{THINK_OPEN}\n{generated}"
    return generated


def answer_part(reply: str) -> tuple[bool, bool, str]:
    """(opened a thought, closed it, the answer text: after `</think>`, "" when never closed, all when never
    opened)."""
    think, after = think_and_answer(reply)
    opened, closed = THINK_OPEN in reply, think is not None
    return opened, closed, after if closed else ("" if opened else reply)


def part_lengths(generated: str, prompt_opens_think: bool, count_tokens) -> dict:
    """{"think_tokens", "answer_tokens"} of a generation, counted by `count_tokens` (text -> tokens of the model
    that wrote it); 0 for a part that is not there."""
    reply = reply_text(generated, prompt_opens_think)
    think, answer = think_and_answer(reply)[0], answer_part(reply)[2].strip()
    return {"think_tokens": count_tokens(think) if think else 0, "answer_tokens": count_tokens(answer) if answer else 0}


def answer_key(answer: str) -> str | None:
    """What the answer states, in a form two samples that agree share (for majority voting): math-verify's
    reading of it when it finds maths (a number in one canonical form: 72, 72.0 and 72.00 are "72"), else its
    final answer text in lower case; None when there is none."""
    if not answer.strip():
        return None
    from math_verify import parse  # sympy underneath: imported where answers are judged

    parsed = parse(answer, **parse_timeouts())
    if parsed:
        key = str(parsed[0])
        try:
            number = float(key)
        except (ValueError, OverflowError):
            return key
        return str(int(number)) if number.is_integer() else repr(number)
    final = " ".join(final_answer_text(answer).lower().split()).strip(" .")
    return final or None


def judge_sample(generated: str, reference: str | None, prompt_opens_think: bool = False,
                 checks: list | None = None) -> dict:
    """The judgement of one generation (pure but for math-verify): by `checks` (rules, `lib.evaluate.checks`) when
    the problem has them, else against `reference` with math-verify; `correct` is None with neither."""
    reply = reply_text(generated, prompt_opens_think)
    opened, closed, answer = answer_part(reply)
    if checks:
        correct = bool(answer.strip()) and passes(checks, answer)
    else:
        correct = None if reference is None else bool(answer.strip()) and reply_matches_reference(reference, answer)
    return {"opened_think": opened, "closed_think": closed, "answer_text": answer, "answer_key": answer_key(answer),
            "correct": correct, "loop": find_loop(reply)}
