"""The quant ladder as a gate: what each quantised file loses against F16 on the same problems and seeds.

Usage: ``rows = ladder(samples_by_file, max_drop={"closure": 0.1, "pass@1": 0.1})``
(samples_by_file: ``{"distilled-F16": [judged samples], "distilled-Q8_0": […], …}`` on one benchmark)

Per quant and metric: the drop from F16 (F16 minus the quant, in points of a fraction: 0.06 = six percentage
points) with a 95 % interval from a paired bootstrap over problems (both files answered the same problems with
the same seeds, so the per-problem differences are what varies), and a flag when the drop is larger than the
recipe allows (`eval_max_drop`). A flag is shown, never hidden, and never stops the run: with 50 problems an
interval ±10 points wide says more than the flag does.
"""
from __future__ import annotations

from lib.evaluate.metrics import by_problem, mean_interval

REFERENCE = "distilled-F16"
METRICS = {"closure": "closed_think", "pass@1": "correct"}


def per_problem(samples: list[dict], field: str) -> dict[str, float]:
    """{problem id: the share of its samples with `field` true}; problems without a verdict (no reference answer:
    `correct` is None) are left out."""
    return {pid: sum(bool(s[field]) for s in group) / len(group) for pid, group in by_problem(samples).items()
            if group[0][field] is not None}


def ladder(samples_by_file: dict[str, list[dict]], max_drop: dict[str, float]) -> list[dict]:
    """One row per (quantised file, metric): F16's value, the file's, the drop with its interval, flagged or not.
    Files other than `distilled-<quant>` (the base model, the no-penalty ablation) are not on the ladder."""
    if REFERENCE not in samples_by_file:
        return []
    rows = []
    for label, samples in samples_by_file.items():
        if label == REFERENCE or not label.startswith("distilled-") or label.endswith("-no-repeat-penalty"):
            continue
        for metric, field in METRICS.items():
            reference, quant = per_problem(samples_by_file[REFERENCE], field), per_problem(samples, field)
            shared = [pid for pid in reference if pid in quant]
            drop = mean_interval([reference[pid] - quant[pid] for pid in shared], proportion=False)
            allowed = max_drop.get(metric)
            rows.append({"file": label, "metric": metric, "problems": len(shared),
                         "F16": round(sum(reference[p] for p in shared) / max(1, len(shared)), 4),
                         "quant": round(sum(quant[p] for p in shared) / max(1, len(shared)), 4),
                         "drop": drop, "max_drop": allowed,
                         "flagged": allowed is not None and drop["mean"] is not None and drop["mean"] > allowed})
    return rows
