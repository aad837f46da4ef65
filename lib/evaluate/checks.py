"""Answers judged by simple rules instead of maths: the non-maths check (`data/eval/general.jsonl`) that a
distilled model still answers plain questions and follows a simple instruction, and any prompts file with
``"checks"``.

Usage: ``passes([["contains", "Paris"]], answer)``; ``problem = check_error(checks)`` ("" when well formed)

A problem's checks are a list of ``[kind, argument]``; the answer (the text after `</think>`, or all of it for a
model that does not think) must pass every one:
- ``["contains", "7|seven"]``: one of the `|`-separated words or phrases, as whole words, any case;
- ``["contains_case", "HELLO"]``: the text exactly as written, case included;
- ``["exact", "yes|y"]``: the whole answer is one of them (any case; surrounding quotes, spaces, a final full stop
  ignored);
- ``["starts_with", "Sure"]``: the answer's first word, any case;
- ``["max_words", 10]``: at most that many words;
- ``["items", 3]``: a comma-separated list of exactly that many non-empty items.
"""
from __future__ import annotations

import re

KINDS = {"contains": str, "contains_case": str, "exact": str, "starts_with": str, "max_words": int, "items": int}


def check_error(checks) -> str:
    """Why `checks` is not a list of known [kind, argument] pairs ("" when it is)."""
    if not isinstance(checks, list) or not checks:
        return '"checks" must be a non-empty list of [kind, argument] pairs'
    for check in checks:
        if not (isinstance(check, list) and len(check) == 2 and isinstance(check[0], str) and check[0] in KINDS
                and isinstance(check[1], KINDS[check[0]]) and not isinstance(check[1], bool)):
            return (f'"checks": {check!r} is not [kind, argument] with kind one of '
                    f'{", ".join(f"{k} ({t.__name__})" for k, t in KINDS.items())}')
        if isinstance(check[1], int) and check[1] < 1 or isinstance(check[1], str) and not all(
                option.strip() for option in check[1].split("|")):
            return f'"checks": {check!r}: a count must be at least 1, a text (each of its |-options) non-empty'
    return ""


def _normalised(answer: str) -> str:
    """The answer without surrounding spaces, quotes, markdown emphasis or a final full stop (any order)."""
    text, before = answer.strip(), None
    while text != before:
        before, text = text, text.strip().strip("\"'`*").rstrip(".!")
    return text.lower()


def _words(answer: str) -> list[str]:
    return re.findall(r"[\w'’-]+", answer)


def passes(checks: list, answer: str) -> bool:
    """Whether `answer` passes every check (pure)."""
    for kind, argument in checks:
        options = str(argument).split("|")
        if kind == "contains":  # whole words: "0" is not found in "32.0", "star" not in "starfish"
            ok = any(re.search(rf"(?<![\w.]){re.escape(option)}(?!\w)", answer, re.IGNORECASE) for option in options)
        elif kind == "contains_case":
            ok = argument in answer
        elif kind == "exact":
            ok = _normalised(answer) in [option.lower() for option in options]
        elif kind == "starts_with":
            words = _words(answer)
            ok = bool(words) and words[0].lower() == argument.lower()
        elif kind == "max_words":
            ok = 0 < len(_words(answer)) <= argument
        else:  # items
            ok = len([item for item in answer.strip().rstrip(".").split(",") if item.strip()]) == argument
        if not ok:
            return False
    return True
