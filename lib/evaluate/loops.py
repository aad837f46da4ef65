"""Has a generation fallen into a loop? A repeated n-gram run detector.

Usage: ``find_loop(output_text)`` → ``None`` or ``{"kind": "words", "period_words": 7, "repeats": 9.0, …}``

Definition (one place). The text is cut into words: lower case, every digit run read as ``0``, each punctuation
mark a word of its own. Digits are one symbol because the 135M model's loops count on ("Naruto can lift 3360*12=
4004 inches / Naruto can lift 4004*12= 5208 inches …" is one 9-word block over and over). It *loops* when either
- **words**: some block of ``p`` words (1 ≤ p ≤ ``MAX_PERIOD``) follows itself at least ``MIN_REPEATS`` times in a
  row, the run covering at least ``MIN_WORDS`` words; or
- **lines**: some ``LINE_WINDOW`` consecutive lines (lines with at least 3 words of letters: table rows and
  drawing code are left out) hold at most ``LINE_DISTINCT`` distinct lines — the model cycles between two or three
  sentences whose numbers change ("… 2 bedrooms * 8 windows = 16 windows / … 1 bedroom * 8 windows = 8 …").

Measured on the shipped references (tests/evaluate/test_loops.py keeps these true): none of the 7,473 GSM8K train
and 1,319 test rationales loops; 1 of the 500 MATH-500 and 1 of the 30 AIME24 solutions do (a modular-arithmetic
table, a list of cases). A model that drifts between similar lines without repeating one exactly is not counted:
the loop rate is a lower bound, and the truncation rate (hit max tokens) catches the rest.
"""
from __future__ import annotations

import re

import numpy as np

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+|[^\w\s]", re.UNICODE)

MAX_PERIOD = 40
MIN_REPEATS = 10
MIN_WORDS = 64
LINE_WINDOW = 8
LINE_DISTINCT = 4
LINE_MIN_LETTER_WORDS = 3


def loop_words(text: str) -> list[str]:
    """The words the detector compares: lower case, digit runs as ``0``, each punctuation mark its own word."""
    return ["0" if token[0].isdigit() else token.lower() for token in _TOKEN.findall(text)]


def find_loop(text: str) -> dict | None:
    """The first loop the module's definition finds in `text` (repeated words, else repeated lines), or None."""
    return repeated_words(text) or repeated_lines(text)


def repeated_lines(text: str, window: int = LINE_WINDOW, max_distinct: int = LINE_DISTINCT) -> dict | None:
    """The first `window` consecutive lines of letters holding at most `max_distinct` distinct lines, or None."""
    lines = [" ".join(words) for words in map(loop_words, text.splitlines())
             if sum(word[0].isalpha() for word in words) >= LINE_MIN_LETTER_WORDS]
    for start in range(len(lines) - window + 1):
        distinct = set(lines[start:start + window])
        if len(distinct) <= max_distinct:
            return {"kind": "lines", "start_line": start, "lines": window, "distinct_lines": len(distinct),
                    "block": max(distinct, key=lines[start:start + window].count)}
    return None


def repeated_words(text: str, max_period: int = MAX_PERIOD, min_repeats: int = MIN_REPEATS,
                   min_words: int = MIN_WORDS) -> dict | None:
    """The longest run of one block of words repeated back to back that qualifies as a loop, or None.

    For each period p, a run is a stretch where word i equals word i + p; a run of length L covers L + p words,
    (L + p) / p repeats of its block. O(len(words) · max_period).
    """
    words = loop_words(text)
    ids = np.unique(np.array(words, dtype=object), return_inverse=True)[1] if words else np.zeros(0, int)
    best = None
    for period in range(1, min(max_period, len(ids) - 1) + 1):
        same = np.concatenate(([0], (ids[:-period] == ids[period:]).astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(same))  # starts and ends of the runs of equal pairs, alternating
        if not len(edges):
            continue
        lengths = edges[1::2] - edges[::2]
        longest = int(lengths.argmax())
        covered = int(lengths[longest]) + period
        if covered >= min_words and covered / period >= min_repeats and (best is None or covered > best[0]):
            best = (covered, period, int(edges[2 * longest]))
    if best is None:
        return None
    covered, period, start = best
    return {"kind": "words", "period_words": period, "repeats": round(covered / period, 1), "words": covered,
            "start_word": start, "block": " ".join(words[start:start + period])}
