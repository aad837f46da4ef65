"""Final-answer extraction and exact numeric matching for math prompts.

Usage: ``answers_match(extract_final_answer("<think>..</think> The answer is 1,200."), "1200")  # True``
"""
from __future__ import annotations

import re

from lib.think import think_and_answer

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def extract_final_answer(text: str) -> str | None:
    """The last number in the answer part (after `</think>` when the model closed it), commas and $ removed."""
    _, answer = think_and_answer(text)
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
