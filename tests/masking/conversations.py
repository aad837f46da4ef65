"""Conversations for the masking tests: fixed single/multi-turn ones and hypothesis strategies of random ones.

Usage: ``from tests.masking.conversations import SINGLE, conversations``
"""
from __future__ import annotations

from hypothesis import strategies as st

A1 = "<think>\nFirst add 2 and 2.\n</think>\n\nThe answer is 4."
A2 = "<think>\nDouble 4: 8.\n</think>\n\nThe answer is 8."
SYSTEM = {"role": "system", "content": "SYSTEMTEXT keep it short."}
SINGLE = [{"role": "user", "content": "USERTEXT one: what is 2+2?"}, {"role": "assistant", "content": A1}]
MULTI = SINGLE + [{"role": "user", "content": "USERTEXT two: and doubled?"}, {"role": "assistant", "content": A2}]


# Letters from any script, digits and unicode spaces in the middle; explicit whitespace edges around them (a plain
# `one_of` of characters almost never puts a newline first). No "<", so no text can spell a special token.
_EDGE = st.sampled_from(["", "", " ", "  ", "\n", "\n\n", "\t", "\u00a0", " \n", "\r\n"])
_CORE = st.text(st.characters(categories=("L", "Nd", "Zs", "Po")), max_size=16)
_TEXT = st.builds(lambda a, b, c: a + b + c, _EDGE, _CORE, _EDGE)
_ANSWER = st.one_of(st.sampled_from(["", " ", "\n", "4"]), _TEXT)  # empty-ish answers included
_ASSISTANT = st.one_of(
    st.builds(lambda think, answer: f"<think>\n{think}\n</think>\n\n{answer}", _TEXT, _ANSWER),
    _TEXT,  # raw content, whitespace edges and all
)


@st.composite
def conversations(draw, content=_ASSISTANT):
    turns = draw(st.integers(1, 3))
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(_TEXT)})
    for _ in range(turns):
        messages += [{"role": "user", "content": draw(_TEXT)}, {"role": "assistant", "content": draw(content)}]
    return messages


def _no_leading_whitespace(content: str) -> str:
    r"""Narrowing for ChatML: replies start with a non-space character (canonical replies start with `<think>`).

    Tokenizer limitation, not a mask bug: the generation prompt ends in "\n", and byte-level BPE pre-tokenizers
    merge a whitespace run across that boundary: Qwen's splits "assistant\n" + "\nabc" as `\n\n`, `abc`;
    SmolLM2's (GPT-2 style `\s+(?!\S)`) also glues "\n" to following spaces ("\n" + "  abc" -> `\n `, ` abc`).
    Such a token belongs half to the prompt and half to the reply, so no token-level mask can equal the reply
    exactly; the mask trains it, so the reply's first characters are never lost.
    """
    return content.lstrip()
