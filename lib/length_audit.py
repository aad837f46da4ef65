"""Token-length audit: how long each example is *as trained* (recipe tokenizer, chat template, mask), what a
`max_length` would cut, and the length policy (raise | drop | fit) that makes sure nothing is ever cut.

Usage::

    audit = LengthAudit()
    for rows in chunks:                                   # canonical rows, a few hundred at a time
        for row, example_or_error in measure(rows, tokenizer, mask_fn): ...
    summary = length_summary(lengths, max_length=4096)    # percentiles, share over max_length
    decision = decide_max_length(lengths, 4096, "fit", percentile=99)

Lengths come from the same masker that builds the training examples (one batched tokenizer call per chunk), so
the audit's count is the trainer's count, token for token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lib.masking import MaskedExample, MaskingError
from lib.reasoning_data import THINK_CLOSE

FIT_MULTIPLE = 64  # fitted lengths are rounded up to a multiple of this (kernel- and memory-friendly)


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


def length_histogram(lengths, decision: LengthDecision, path, title: str):
    """Histogram (PNG) of example lengths with the recipe's max_length and the one training uses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(lengths, dtype=np.int64)
    fig, axis = plt.subplots(figsize=(8, 3))
    axis.hist(values, bins=40, color="#4c72b0")
    axis.axvline(decision.recipe_max_length, color="#c44e52", linestyle="--",
                 label=f"recipe max_length {decision.recipe_max_length}")
    if decision.max_length != decision.recipe_max_length:
        axis.axvline(decision.max_length, color="#55a868", linestyle="-",
                     label=f"fitted max_length {decision.max_length}")
    over = int((values > decision.max_length).sum())
    axis.set(xlabel="tokens per example (chat template, as trained)", ylabel="examples",
             title=f"{title}: {over} of {values.size} over max_length ({over / max(1, values.size):.1%})")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
