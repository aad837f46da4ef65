"""The data stage in one streaming pass: read → convert → verify → deduplicate → decontaminate.

Usage::

    policy = DataPolicy.from_recipe(recipe)
    result = run_pipeline(convert_rows(iter_records(path)), policy, limit=640)
    result.report.as_dict()       # rows read, kept, rejects per reason (with line numbers), duplicates, ...
    result.kept                   # canonical rows, in source order

Every row read ends in exactly one place: kept, or a `Reject` with a stable reason (counted) and a detail
(where and what). Only small per-row state is held besides the kept rows (hashes, sketches), so a `data check` of
any size runs in bounded memory with `keep_rows=False`; `on_kept` sees each kept row as it passes (the length
audit of `data check --recipe` streams through it). Token lengths and the overlong policy are 02_masking's.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from lib.data.filters import Decontaminator, DuplicateFilter, reply_matches_reference
from lib.data.schemas import GRADED_OUT, NO_CORRECT_GENERATION, check_schema
from lib.recipe import ParamsError, Recipe, recipe_source
from lib.rejects import ANSWER_MISMATCH, Reject, add_sample



class TooManyRejects(ValueError):
    """More rows were rejected than the recipe's `max_reject_fraction` allows; the message lists the reasons."""


@dataclass(frozen=True)
class DataPolicy:
    """What the data stage does with rows, from the recipe's data keys (read in `from_recipe` only)."""

    schema: str = "auto"
    field_mapping: dict = field(default_factory=dict)
    verify_answers: bool = True
    near_duplicate_threshold: float = 0.9
    decontaminate_against: tuple = ("gsm8k_test", "math500", "aime24")
    decontamination_ngram: int = 8
    decontamination_min_overlap: float = 0.2
    max_reject_fraction: float = 0.2

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> "DataPolicy":
        """The recipe's data keys, checked here (the schema names are this stage's to know)."""
        try:
            check_schema(recipe.dataset_format, recipe.dataset_fields)
        except ValueError as err:
            raise ParamsError(f"{recipe_source(recipe)}: dataset_format / dataset_fields: {err}") from err
        return cls(schema=recipe.dataset_format, field_mapping=dict(recipe.dataset_fields),
                   verify_answers=recipe.verify_answers, near_duplicate_threshold=recipe.near_duplicate_threshold,
                   decontaminate_against=tuple(recipe.decontaminate_against),
                   decontamination_ngram=recipe.decontamination_ngram,
                   decontamination_min_overlap=recipe.decontamination_min_overlap,
                   max_reject_fraction=recipe.max_reject_fraction)


@dataclass
class DataReport:
    """What happened to every row: the facts `data check` prints and 01_data shows."""

    source: str = ""
    schema: str = ""
    rows_read: int = 0  # source rows (lines / records), including the ones that could not be parsed
    examples: int = 0  # canonical examples converted from them (OpenR1 gives several per row)
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count (duplicates, contamination included)
    samples: dict = field(default_factory=dict)  # reason -> first few {line, id, detail}
    verification: Counter = field(default_factory=Counter)  # matched / mismatched / no reference / off
    contaminated: Counter = field(default_factory=Counter)  # evaluation set -> rows removed
    seconds: float = 0.0
    stopped_at_limit: bool = False
    unused_beyond_limit: int = 0  # examples past `train_rows` (several from the last source row, OpenR1)

    def add_reject(self, reject: Reject) -> None:
        self.rejected[reject.reason] += 1
        add_sample(self.samples, reject)

    @property
    def quality_rejects(self) -> int:
        """Rejects for bad data (format, verification, template): `REMOVALS` are not faults."""
        return sum(n for reason, n in self.rejected.items() if reason not in REMOVALS)

    @property
    def reject_fraction(self) -> float:
        """Bad rows over everything considered (bad rows + converted examples), what max_reject_fraction bounds."""
        return round(self.quality_rejects / max(1, self.quality_rejects + self.examples), 4)

    def as_dict(self) -> dict:
        return {
            "source": self.source, "schema": self.schema, "rows_read": self.rows_read, "examples": self.examples,
            "kept": self.kept, "rejected": sum(self.rejected.values()),
            "rejected_per_reason": dict(self.rejected.most_common()),
            "reject_samples": self.samples,
            "reject_fraction": self.reject_fraction,
            "duplicates": {k: self.rejected[k] for k in ("exact duplicate", "near duplicate")},
            "contaminated": dict(self.contaminated), "answer_verification": dict(self.verification),
            "stopped_at_limit": self.stopped_at_limit, "unused_beyond_limit": self.unused_beyond_limit,
            "seconds": round(self.seconds, 2), "rows_per_s": round(self.rows_read / max(self.seconds, 1e-9), 1),
        }


CONTAMINATED = "contaminated"
# removed on purpose, reported but not counted against max_reject_fraction: the source's own grading (OpenR1),
# duplicates, evaluation-set overlap
REMOVALS = (GRADED_OUT, NO_CORRECT_GENERATION, "exact duplicate", "near duplicate", CONTAMINATED)


@dataclass
class PipelineResult:
    report: DataReport
    kept: list[dict]  # canonical rows in source order (empty with keep_rows=False)


def run_pipeline(converted, policy: DataPolicy, limit: int = 0, on_reject=None, on_kept=None,
                 keep_rows: bool = True, source: str = "") -> PipelineResult:
    """Stream `converted` — (line, [canonical rows] | Reject) pairs from `lib.data.schemas.convert_rows` —
    through verification, duplicates and decontamination.

    `limit` > 0 stops once that many examples are kept. `on_reject(reject)` sees every reject as it happens (e.g.
    to write the rejects file), `on_kept(line, row)` every kept row.
    """
    started = time.perf_counter()
    report = DataReport(source=source, schema=policy.schema)
    duplicates = DuplicateFilter(policy.near_duplicate_threshold)
    guard = (Decontaminator.from_eval_sets(list(policy.decontaminate_against), policy.decontamination_ngram,
                                           policy.decontamination_min_overlap)
             if policy.decontaminate_against else None)
    kept: list[dict] = []
    ids_seen: dict[str, int] = {}  # id -> line it was first used on

    def record(item: Reject):
        report.add_reject(item)
        if on_reject:
            on_reject(item)

    def reject(line, row_id, reason, detail=""):
        record(Reject(line, row_id, reason, detail))

    for line, item in converted:
        report.rows_read += 1
        if isinstance(item, Reject):
            record(item)
            continue
        for row in item:
            if isinstance(row, Reject):  # one bad example of a row that gave good ones too (OpenR1 generations)
                record(row)
                continue
            report.examples += 1
            if row["id"] in ids_seen:  # two examples under one id would overwrite each other downstream
                reject(line, row["id"], "duplicate id", f"first used on line {ids_seen[row['id']]}")
                continue
            ids_seen[row["id"]] = line
            reason = _verify(row, policy, report)
            if reason:
                reject(line, row["id"], *reason)
                continue
            duplicate = duplicates.check(row)
            if duplicate:
                reject(line, row["id"], duplicate[0], f"same as {duplicate[1]}")
                continue
            owner = guard.check(row) if guard else None
            if owner:
                report.contaminated[owner[0].split(":")[0]] += 1
                reject(line, row["id"], CONTAMINATED, f"{owner[0]}: {owner[1]}")
                continue
            if limit and report.kept >= limit:  # the last source row gave several examples (OpenR1): say so
                report.unused_beyond_limit += 1
                continue
            report.kept += 1
            if on_kept:
                on_kept(line, row)
            if keep_rows:
                kept.append(row)
        if limit and report.kept >= limit:  # stop before asking the source for one more row
            report.stopped_at_limit = True
            break
    report.schema = getattr(converted, "schema", None) or policy.schema  # what auto-detection settled on
    report.seconds = time.perf_counter() - started
    return PipelineResult(report, kept)


def _verify(row: dict, policy: DataPolicy, report: DataReport) -> tuple[str, str] | None:
    """Reject reason if the row's reply contradicts its reference answer (math-verify), else None."""
    reference = row.get("answer")
    if not policy.verify_answers:
        report.verification["not checked (verify_answers: false)"] += 1
        return None
    if reference is None or not str(reference).strip():
        report.verification["no reference answer"] += 1
        return None
    reply = row["messages"][-1]["answer"]
    if reply_matches_reference(str(reference), reply):
        report.verification["matches reference"] += 1
        return None
    report.verification["does not match reference"] += 1
    return ANSWER_MISMATCH, f"reference {str(reference)[:80]!r}, reply ends {reply[-80:]!r}"


def check_reject_fraction(report: DataReport, max_fraction: float, recipe_name: str = "") -> None:
    """Raise TooManyRejects when bad rows exceed `max_fraction` of what was read (`REMOVALS` — duplicates,
    contamination, length, the source's own grading — are not faults and do not count)."""
    if report.reject_fraction > max_fraction:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in report.rejected.most_common() if reason not in REMOVALS)
        raise TooManyRejects(
            f"{report.source}: {report.reject_fraction:.1%} of the examples were rejected (> max_reject_fraction "
            f"{max_fraction:g} of {recipe_name or 'the recipe'}): {reasons}. See the rejects file for line numbers; "
            "fix the source, pick the right dataset_format / dataset_fields, or raise max_reject_fraction")
