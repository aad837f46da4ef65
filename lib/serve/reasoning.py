"""The reasoning apart from the answer, as llama.cpp's ``--reasoning-format deepseek`` returns them: the text of the
`<think>` block in ``reasoning_content``, what follows `</think>` in ``content``.

Usage: ``reasoning, content = split_reasoning(text)``;  streaming: ``stream = ReasoningStream(opened_by_prompt)``,
then ``reasoning_delta, content_delta = stream.feed(piece)`` per generated piece and ``stream.feed("", final=True)``.

A reply that never opens a thought is all content. A thought that never closes is all reasoning and the content is
empty: the model gave no answer (05 judges it so too). Both parts are stripped of surrounding whitespace.
"""
from __future__ import annotations

from lib.think import THINK_CLOSE, THINK_OPEN


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `tag` (a tag cut between two tokens)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def split_reasoning(text: str, opened_by_prompt: bool = False, final: bool = True) -> tuple[str, str]:
    """(reasoning, content) of generated `text`. `opened_by_prompt`: the chat template wrote `<think>` into the
    generation prompt (DeepSeek-R1-Distill), so the thought starts with the first token.

    `final=False` while text is still arriving: what a later piece could change is held back (a tag's first
    characters, trailing whitespace, the start before `<think>` is certain), so every result is a prefix-wise
    continuation of the one before and of the final one — what a stream can send as deltas.
    """
    body = text.lstrip()
    if not opened_by_prompt:
        if not final and THINK_OPEN.startswith(body):  # "", "<", "<th", …: a thought may still open
            return "", ""
        if not body.startswith(THINK_OPEN):
            return "", (text.strip() if final else text.lstrip().rstrip())
    if body.startswith(THINK_OPEN):
        body = body[len(THINK_OPEN):]
    elif opened_by_prompt and not final and THINK_OPEN.startswith(body):  # the model may repeat the prompt's tag
        return "", ""
    end = body.find(THINK_CLOSE)
    if end < 0:
        if final:
            return body.strip(), ""
        return body[:len(body) - _partial_suffix(body, THINK_CLOSE)].strip(), ""
    reasoning, content = body[:end].strip(), body[end + len(THINK_CLOSE):]
    return reasoning, content.strip() if final else content.lstrip().rstrip()


class ReasoningStream:
    """Deltas of `split_reasoning` as pieces of one reply arrive: their concatenation equals the final split."""

    def __init__(self, opened_by_prompt: bool = False):
        self.opened_by_prompt = opened_by_prompt
        self.text = ""
        self.sent = ("", "")

    def feed(self, piece: str, final: bool = False) -> tuple[str, str]:
        self.text += piece
        reasoning, content = split_reasoning(self.text, self.opened_by_prompt, final)
        sent_reasoning, sent_content = self.sent
        if not (reasoning.startswith(sent_reasoning) and content.startswith(sent_content)):
            raise AssertionError(f"reasoning split went back on what it sent: {self.text!r}")  # a bug, not input
        self.sent = (reasoning, content)
        return reasoning[len(sent_reasoning):], content[len(sent_content):]
