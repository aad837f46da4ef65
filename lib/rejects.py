"""Rejects: every row or reply that cannot be used is kept as a record with a stable reason, never dropped silently.

Usage: ``Reject(line=17, id="train-17", reason="empty think", detail="thinking")``; ``reject_counts(rejects)``

Reasons are stable categories (counted in reports); the detail says where and what. The reasons about a reply's
`<think>` block live in `lib.think`, the ones about reading a line in `lib.jsonl`, the data stage's own in
`lib.data`: one string per reason, whoever meets it (the data stage, the teacher, masking).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

ANSWER_MISMATCH = "answer does not match reference"  # math-verify says the reply's answer is another one


@dataclass(frozen=True)
class Reject:
    """A source row that could not be used: `line` (1-based row number in the source), `id`, a stable `reason`
    to count, and a `detail` saying where and what."""

    line: int
    id: str
    reason: str
    detail: str = ""


class RejectError(ValueError):
    """A row or reply cannot be used: `reason` is the stable category counted in reports, `detail` the specifics."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def reject_counts(rejects) -> dict[str, int]:
    """Counts per reason, most frequent first."""
    return dict(Counter(r.reason for r in rejects).most_common())


SAMPLES_PER_REASON = 3  # rejects shown per reason in reports (all are in the rejects file)


def add_sample(samples: dict[str, list[dict]], reject: Reject) -> None:
    """Keep `reject` as {line, id, detail} under its reason if that reason has fewer than SAMPLES_PER_REASON."""
    shown = samples.setdefault(reject.reason, [])
    if len(shown) < SAMPLES_PER_REASON:
        shown.append({"line": reject.line, "id": reject.id, "detail": reject.detail})


def reject_samples(rejects) -> dict[str, list[dict]]:
    """The first few rejects of each reason, for reports."""
    samples: dict[str, list[dict]] = {}
    for reject in rejects:
        add_sample(samples, reject)
    return samples
