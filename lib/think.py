"""The `<think>…</think>` convention: the tags, how a reply is cut into reasoning and answer, and the reasons it
cannot be.

Usage: ``think, answer = check_reply(*split_think_block("<think>2+2=4</think>The answer is 4."))``
``think, rest = think_and_answer(generated_text)``  (judging a model's output: never raises)

Two readers of replies, one rule each, same tags and reasons:
- a trace to train on (data stage, teacher) must be exactly one block, then a non-empty answer: `split_think_block`
  + `check_reply` raise `RejectError` with a reason from this module;
- a model's generated text (evaluation) is judged as it is: `think_and_answer` finds the first closed block.
"""
from __future__ import annotations

import re

from lib.rejects import RejectError

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

EMPTY_THINK = "empty think"
EMPTY_ANSWER = "empty answer after </think>"
TAG_INSIDE = "assistant turn has a <think> or </think> tag inside its reasoning or answer"
UNCLOSED_THINK = "unclosed <think>"
NOT_ONE_THINK_BLOCK = "assistant content needs exactly one <think>…</think> block"
THINK_NOT_FIRST = "assistant content must start with its <think>…</think> block"

_THINK_BLOCK = re.compile(r"^\s*<think>(.*?)</think>(.*)$", re.DOTALL)


def split_think_block(text: str, opened_by_prompt: bool = False) -> tuple[str, str]:
    """(reasoning, answer), unstripped, of `<think>…</think>answer`; RejectError when the text is not that.

    `opened_by_prompt`: the chat template wrote `<think>` into the generation prompt (DeepSeek-R1 style), so the
    reply may start without it; it must still close exactly once.
    """
    if opened_by_prompt:
        body = text.lstrip()
        body = body[len(THINK_OPEN):] if body.startswith(THINK_OPEN) else body
        closes = body.count(THINK_CLOSE)
        if closes == 0:
            raise RejectError(UNCLOSED_THINK)
        if closes > 1:
            raise RejectError(NOT_ONE_THINK_BLOCK, f"{closes} {THINK_CLOSE}")
        think, answer = body.split(THINK_CLOSE)
        return think, answer
    opens, closes = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    if opens == 1 and closes == 0:
        raise RejectError(UNCLOSED_THINK)
    if opens != 1 or closes != 1:
        raise RejectError(NOT_ONE_THINK_BLOCK, f"{opens} {THINK_OPEN}, {closes} {THINK_CLOSE}")
    match = _THINK_BLOCK.match(text)
    if not match:
        raise RejectError(THINK_NOT_FIRST)
    return match.group(1), match.group(2)


def check_reply(think: str, answer: str, think_field: str = "", answer_field: str = "") -> tuple[str, str]:
    """(think, answer) stripped, after the checks every trained reply passes: both non-empty, and no think tag
    inside either (the rendered reply must hold exactly one `<think>` and one `</think>`). The field names, when
    given, become the reject detail."""
    think, answer = think.strip(), answer.strip()
    if not think:
        raise RejectError(EMPTY_THINK, think_field)
    if not answer:
        raise RejectError(EMPTY_ANSWER, answer_field)
    for field, text in ((think_field, think), (answer_field, answer)):
        if THINK_OPEN in text or THINK_CLOSE in text:
            raise RejectError(TAG_INSIDE, field)
    return think, answer


def think_and_answer(text: str) -> tuple[str | None, str]:
    """(reasoning of the first closed block or None, the text after its `</think>` or the whole text)."""
    start = text.find(THINK_OPEN)
    end = text.find(THINK_CLOSE, start + len(THINK_OPEN) if start >= 0 else 0)
    if start < 0 or end < 0:
        return None, text
    return text[start + len(THINK_OPEN):end].strip(), text[end + len(THINK_CLOSE):]


def assistant_text(think: str, answer: str) -> str:
    """The trained assistant content in the DeepSeek-R1 convention: think block, blank line, answer."""
    return f"{THINK_OPEN}\n{think.strip()}\n{THINK_CLOSE}\n\n{answer.strip()}"
