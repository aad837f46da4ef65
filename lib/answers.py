"""Final-answer extraction and exact numeric matching for math prompts.

Usage: ``answers_match(extract_final_answer("<think>..</think> The answer is 1,200."), "1200")  # True``
"""
from __future__ import annotations

import re

from lib.reasoning_data import THINK_CLOSE, THINK_OPEN

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def split_think(text: str) -> tuple[str | None, str]:
    """(think text or None if no closed block, the text after `</think>` or the whole text)."""
    start = text.find(THINK_OPEN)
    end = text.find(THINK_CLOSE, start + len(THINK_OPEN) if start >= 0 else 0)
    if start < 0 or end < 0:
        return None, text
    return text[start + len(THINK_OPEN):end].strip(), text[end + len(THINK_CLOSE):]


def extract_final_answer(text: str) -> str | None:
    """The last number in the answer part (after `</think>` when the model closed it), commas and $ removed."""
    _, answer = split_think(text)
    numbers = _NUMBER.findall(answer)
    if not numbers:
        return None
    return numbers[-1].replace(",", "").replace("$", "").rstrip(".")


def answers_match(predicted: str | None, reference: str) -> bool:
    """Exact numeric equality (72 == 72.0); non-numeric references compare as stripped strings."""
    if predicted is None:
        return False
    try:
        return abs(float(predicted) - float(reference.replace(",", ""))) < 1e-9
    except ValueError:
        return predicted.strip() == reference.strip()
