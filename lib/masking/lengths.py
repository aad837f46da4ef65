"""Token-length audit: how long each example is *as trained* (recipe tokenizer, chat template, mask), what a
`max_length` would cut, and the length policy (raise | drop | fit) that makes sure nothing is ever cut.

Usage::

    audit = LengthAudit(lambda rows: mask_all(rows, tokenizer, recipe), end_of_turn_tokens(tokenizer))
    for line, row in rows: audit.add(line, row)           # masked a chunk of CHUNK rows at a time
    audit.finish()                                        # the last chunk
    summary = length_summary(audit.lengths(), max_length=4096)    # percentiles, share over max_length
    decision = decide_max_length(audit.lengths(), 4096, "fit", percentile=99)

Lengths come from the same masker that builds the training examples (one batched tokenizer call per chunk), so
the audit's count is the trainer's count, token for token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lib.masking.templates import MaskedExample, MaskingError
from lib.rejects import Reject
from lib.think import THINK_CLOSE

FIT_MULTIPLE = 64  # fitted lengths are rounded up to a multiple of this (kernel- and memory-friendly)
CHUNK = 256  # rows masked per batched tokenizer call
CANNOT_MASK, OVERLONG = "chat template cannot mask", "longer than max_length"


def measure(rows: list[dict], mask_fn) -> list[MaskedExample | MaskingError]:
    """`mask_fn(rows) -> examples` for the chunk, one batched call; on a failure, row by row to find the culprit.

    A row the template cannot mask becomes its MaskingError (a reject reason), never a crash of the whole chunk.
    """
    try:
        return list(mask_fn(rows))
    except MaskingError:
        results = []
        for row in rows:
            try:
                results.append(mask_fn([row])[0])
            except MaskingError as err:
                results.append(err)
        return results


@dataclass
class LengthAudit:
    """Masks rows a chunk at a time and keeps what each became: its example (or only its length, with
    `keep_examples` False, so an audit of any size runs in bounded memory) or a reject.

    Every example is checked to train its `</think>`, its answer and its end-of-turn token (`incomplete_reply`):
    a violation is a masker bug, not a data problem, and stops the run.
    """

    mask_fn: object  # rows -> masked examples (one batched call)
    end_tokens: list[str]
    keep_examples: bool = True
    measured: list[tuple[int, str, MaskedExample | None, int]] = field(default_factory=list)  # line, id, ex, tokens
    rejects: list[Reject] = field(default_factory=list)
    _chunk: list[tuple[int, dict]] = field(default_factory=list)

    def add(self, line: int, row: dict) -> None:
        self._chunk.append((line, row))
        if len(self._chunk) >= CHUNK:
            self.finish()

    def finish(self) -> None:
        """Mask what is buffered (call once more after the last `add`)."""
        chunk, self._chunk = self._chunk, []
        if not chunk:
            return
        for (line, row), result in zip(chunk, measure([row for _, row in chunk], self.mask_fn)):
            if isinstance(result, MaskingError):
                self.rejects.append(Reject(line, row["id"], CANNOT_MASK, str(result)))
                continue
            problem = incomplete_reply(result, row, self.end_tokens)
            if problem:
                raise MaskingError(f"{row['id']}: {problem}")
            self.measured.append((line, row["id"], result if self.keep_examples else None, len(result.input_ids)))

    def lengths(self) -> list[int]:
        return [tokens for *_, tokens in self.measured]


def incomplete_reply(example: MaskedExample, row: dict, end_tokens: list[str],
                     max_length: int | None = None) -> str | None:
    """Why the last reply of `example` is not wholly trained, or None when it is.

    The guarantee behind every kept example: its `</think>`, its answer and its end-of-turn token are inside the
    trained tokens, and the example fits `max_length` when one is given (so the trainer never cuts it).
    """
    if max_length is not None and len(example.input_ids) > max_length:
        return f"{len(example.input_ids)} tokens > max_length {max_length}"
    if not example.trained_char_ranges:
        return "no trained range"
    start, end = example.trained_char_ranges[-1]
    trained = example.text[start:end]
    reply = row["messages"][-1]
    if THINK_CLOSE not in trained:
        return "</think> is not trained"
    if reply["answer"].strip() not in trained:
        return "the answer is not trained"
    if not any(trained.endswith(token) for token in end_tokens):
        return "the end-of-turn token is not trained"
    first, last = _token_span(example, start, end)
    if any(label == -100 for label in example.labels[first:last]):
        return "a token inside the reply is masked"
    return None


def _token_span(example: MaskedExample, start: int, end: int) -> tuple[int, int]:
    """Indices of the tokens whose characters lie inside [start, end)."""
    inside = [i for i, (a, b) in enumerate(example.offsets) if b > a and a >= start and b <= end]
    return (inside[0], inside[-1] + 1) if inside else (0, 0)


def length_summary(lengths, max_length: int) -> dict:
    """Percentiles of example lengths and how many would be cut at `max_length` (the trainer's truncation)."""
    values = np.asarray(lengths, dtype=np.int64)
    if values.size == 0:
        return {"examples": 0, "max_length": max_length, "over_max_length": 0, "share_over_max_length": 0.0}
    over = int((values > max_length).sum())
    return {"examples": int(values.size), "min": int(values.min()), "mean": round(float(values.mean()), 1),
            "p50": int(np.percentile(values, 50)), "p90": int(np.percentile(values, 90)),
            "p99": int(np.percentile(values, 99)), "max": int(values.max()), "max_length": max_length,
            "over_max_length": over, "share_over_max_length": round(over / values.size, 4)}


@dataclass(frozen=True)
class LengthDecision:
    """The max_length training will use and why; examples longer than it are dropped (never cut)."""

    policy: str
    max_length: int
    recipe_max_length: int
    over: int  # examples longer than `max_length`
    note: str


class OverlongError(ValueError):
    """Examples exceed max_length under policy raise; the message says how many and what to change."""


def decide_max_length(lengths, recipe_max_length: int, policy: str, percentile: float = 99.0,
                      recipe_name: str = "") -> LengthDecision:
    """Apply the recipe's `overlong_policy` to the measured lengths.

    raise: any example over max_length stops the run (the message gives the numbers and both ways out).
    drop: such examples are dropped and counted. fit: max_length becomes the `percentile` of the lengths, rounded
    up to a multiple of 64, and the longer tail is dropped and counted (it may be above or below the recipe's).
    """
    values = np.asarray(lengths, dtype=np.int64)
    if policy == "fit":
        if values.size == 0:
            return LengthDecision(policy, recipe_max_length, recipe_max_length, 0, "no examples: nothing to fit")
        target = int(math.ceil(float(np.percentile(values, percentile, method="higher")) / FIT_MULTIPLE)
                     * FIT_MULTIPLE)
        over = int((values > target).sum())
        return LengthDecision(policy, target, recipe_max_length, over,
                              f"p{percentile:g} of {values.size} examples is <= {target} tokens (recipe: "
                              f"{recipe_max_length}); {over} longer examples dropped")
    over = int((values > recipe_max_length).sum())
    if policy == "raise" and over:
        raise OverlongError(
            f"{over} of {values.size} examples measured are longer than max_length {recipe_max_length} "
            f"({recipe_name or 'recipe'}; longest {int(values.max())} tokens). Truncating would cut their </think>, "
            "answer and end-of-turn token. Raise max_length, or set overlong_policy: drop (skip and count them) or "
            "fit (choose max_length from a percentile)")
    return LengthDecision(policy, recipe_max_length, recipe_max_length, over,
                          f"{over} examples over max_length {recipe_max_length} dropped" if over
                          else f"all {values.size} examples fit max_length {recipe_max_length}")
