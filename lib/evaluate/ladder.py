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
MERGED = "distilled-HF"  # 04's merged model through transformers (05's eval_merged_model): above F16
# llama.cpp's file types from most to least precise: where F16 was not judged, the most precise one judged is the
# reference (recipes list their quants in any order: mistral22b's start with Q4_K_M)
PRECISION = ("F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "IQ4_NL",
             "IQ4_XS", "Q4_1", "Q4_0", "Q3_K_L", "Q3_K_M", "Q3_K_S", "IQ3_M", "IQ3_XXS", "Q2_K", "IQ2_M")
METRICS = {"closure": "closed_think", "pass@1": "correct"}


def per_problem(samples: list[dict], field: str) -> dict[str, float]:
    """{problem id: the share of its samples with `field` true}; problems without a verdict (no reference answer:
    `correct` is None) are left out."""
    return {pid: sum(bool(s[field]) for s in group) / len(group) for pid, group in by_problem(samples).items()
            if group[0][field] is not None}


def on_the_ladder(label: str) -> bool:
    """A distilled file as exported (not the base model, not the no-penalty ablation)."""
    return label.startswith("distilled-") and not label.endswith("-no-repeat-penalty")


def ladder(samples_by_file: dict[str, list[dict]], max_drop: dict[str, float]) -> list[dict]:
    """One row per (quantised file, metric): the reference's value, the file's, the drop with its interval,
    flagged or not. The reference is F16, or where F16 was not judged (too large for the machine's memory, or not
    in the recipe's `eval_files`) the most precise distilled file judged (`PRECISION`), named in each row. Where the merged HF model was judged
    (`MERGED`), F16 is set against it too: the conversion's own drop, gated alike."""
    labels = [label for label in samples_by_file if on_the_ladder(label) and label != MERGED]
    rank = lambda label: (PRECISION.index(q) if (q := label.removeprefix("distilled-")) in PRECISION  # noqa: E731
                          else len(PRECISION))
    top = min(labels, key=rank) if labels else None
    pairs = [(MERGED, top)] if MERGED in samples_by_file and top else []
    pairs += [(top, label) for label in labels if label != top]
    rows = []
    for reference_label, label in pairs:
        for metric, field in METRICS.items():
            shared, reference, quant, drop = paired_difference(samples_by_file[reference_label],
                                                               samples_by_file[label], field)
            allowed = max_drop.get(metric)
            rows.append({"file": label, "metric": metric, "problems": shared, "reference_file": reference_label,
                         "reference": reference, "quant": quant, "drop": drop, "max_drop": allowed,
                         "flagged": allowed is not None and drop["mean"] is not None and drop["mean"] > allowed})
    return rows


def paired_difference(first: list[dict], second: list[dict], field: str) -> tuple[int, float, float, dict]:
    """(problems both answered, `first`'s share of `field`, `second`'s, first minus second with its 95 % interval
    from a paired bootstrap over those problems). Paired: both answered the same problems with the same seeds, so
    the per-problem differences are what varies — far narrower than two independent intervals."""
    a, b = per_problem(first, field), per_problem(second, field)
    shared = [pid for pid in a if pid in b]
    share = lambda values: round(sum(values[p] for p in shared) / max(1, len(shared)), 4)  # noqa: E731
    return len(shared), share(a), share(b), mean_interval([a[p] - b[p] for p in shared], proportion=False)
