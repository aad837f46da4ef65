"""From judged samples to a benchmark's numbers: pass@1 with a 95 % interval, maj@k, pass@k, closure, truncation,
loops, think and answer lengths, speed. Pure functions of the samples.

Usage: ``summary = benchmark_summary(samples, k=4)``

A sample is one generation for one problem: ``{"problem_id", "correct", "closed_think", "opened_think",
"finish_reason", "loop", "answer_key", "think_tokens", "answer_tokens", "completion_tokens", "seconds",
"ttft_seconds"}`` (`lib.evaluate.judging.judge_sample` makes the judged half). With k samples per problem:
- pass@1 = the mean over problems of the share of a problem's k samples that are right (an unbiased estimate of
  one sample's accuracy; with k = 1 it is plain accuracy);
- its 95 % interval: percentile bootstrap over problems (problems are the unit that varies between benchmarks;
  2,000 resamples, fixed seed, so the same samples always give the same interval), or Wilson's score interval
  when every problem is simply right or wrong (k = 1), where the bootstrap would give "0 % [0–0]" for 0 of 50;
- maj@k: a problem counts when the answer most of its samples give (ties: the first one reached) is right;
- pass@k: a problem counts when any of its k samples is right.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def mean_interval(values: list[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED, proportion: bool = True) -> dict:
    """{"mean", "low", "high"}: the mean of per-problem values and its 95 % interval — Wilson's score interval
    when every value is 0 or 1 (k = 1: 0 right of 50 is [0–7 %], not the bootstrap's [0–0]), else the
    percentile bootstrap over problems (always, with `proportion` False: differences, not shares)."""
    data = np.asarray(values, dtype=float)
    if not len(data):
        return {"mean": None, "low": None, "high": None}
    if proportion and np.isin(data, (0.0, 1.0)).all() and level == 0.95:
        low, high = wilson_interval(int(data.sum()), len(data))
        return {"mean": round(float(data.mean()), 4), "low": round(low, 4), "high": round(high, 4)}
    draws = np.random.default_rng(seed).integers(0, len(data), size=(resamples, len(data)))
    means = data[draws].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return {"mean": round(float(data.mean()), 4), "low": round(float(np.percentile(means, tail)), 4),
            "high": round(float(np.percentile(means, 100 - tail)), 4)}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's score interval of a proportion (95 % by default)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def majority_correct(samples: list[dict]) -> bool:
    """Whether the answer given most often among one problem's samples is right (samples without an answer
    do not vote; ties go to the answer reached first; the winning answer is right when most of the samples that
    gave it were judged right — the key and the judge read answers a little differently)."""
    votes = Counter(s["answer_key"] for s in samples if s["answer_key"] is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(s["answer_key"] for s in samples if s["answer_key"] is not None and votes[s["answer_key"]] == top)
    verdicts = [bool(s["correct"]) for s in samples if s["answer_key"] == winner]
    return sum(verdicts) * 2 > len(verdicts)


def distribution(values: list[int | float]) -> dict:
    """count, mean, p50, p90, max of a list of lengths (None everywhere when empty)."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "max": None}
    data = np.asarray(values, dtype=float)
    return {"count": len(values), "mean": round(float(data.mean()), 1), "p50": float(np.percentile(data, 50)),
            "p90": float(np.percentile(data, 90)), "max": float(data.max())}


def by_problem(samples: list[dict]) -> dict[str, list[dict]]:
    """Samples grouped by problem, problems and samples in the order given."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for sample in samples:
        grouped[sample["problem_id"]].append(sample)
    return dict(grouped)


def benchmark_summary(samples: list[dict], k: int) -> dict:
    """The numbers of one (file, benchmark) run; judged problems only count towards the accuracies."""
    problems = by_problem(samples)
    if any(len(group) != k for group in problems.values()):
        counts = sorted({len(group) for group in problems.values()})
        raise ValueError(f"every problem needs k = {k} samples; found {counts}")
    judged = {pid: group for pid, group in problems.items() if group[0]["correct"] is not None}
    n = len(samples)
    closed = [s for s in samples if s["closed_think"]]
    seconds = sum(s["seconds"] for s in samples)
    return {
        "problems": len(problems), "judged_problems": len(judged), "k": k, "samples": n,
        "pass@1": mean_interval([sum(s["correct"] for s in g) / k for g in judged.values()]),
        f"maj@{k}": mean_interval([float(majority_correct(g)) for g in judged.values()]),
        f"pass@{k}": mean_interval([float(any(s["correct"] for s in g)) for g in judged.values()]),
        "opened_think_rate": _rate(s["opened_think"] for s in samples),
        "closure_rate": _rate(s["closed_think"] for s in samples),
        "truncation_rate": _rate(s["finish_reason"] == "length" for s in samples),
        "loop_rate": _rate(s["loop"] is not None for s in samples),
        "forced_close_rate": _rate(bool(s.get("forced_close")) for s in samples),
        "think_tokens": distribution([s["think_tokens"] for s in closed]),
        "answer_tokens": distribution([s["answer_tokens"] for s in closed]),
        "completion_tokens": distribution([s["completion_tokens"] for s in samples]),
        "tokens_per_second": round(sum(s["completion_tokens"] for s in samples) / seconds, 2) if seconds else None,
        "ttft_seconds": distribution([s["ttft_seconds"] for s in samples if s["ttft_seconds"] is not None]),
    }


def percent_interval(interval: dict) -> str:
    """"4 % [0–10]": a mean and its 95 % interval in percent ("–" when nothing was judged)."""
    if interval["mean"] is None:
        return "–"
    return f"{100 * interval['mean']:.0f} % [{100 * interval['low']:.0f}–{100 * interval['high']:.0f}]"


def _rate(flags) -> float | None:
    flags = list(flags)
    return round(sum(flags) / len(flags), 4) if flags else None
