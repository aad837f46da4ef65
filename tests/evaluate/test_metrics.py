"""pass@1 with its bootstrap interval, maj@k, pass@k and the rates, on hand-made judged samples."""
import numpy as np
import pytest

from lib.evaluate.metrics import benchmark_summary, distribution, majority_correct, mean_interval


def sample(pid, correct, key, closed=True, finish="stop", loop=None, think=10, seconds=1.0, ttft=0.1):
    return {"problem_id": pid, "correct": correct, "answer_key": key, "closed_think": closed, "opened_think": True,
            "finish_reason": finish, "loop": loop, "think_tokens": think, "answer_tokens": 5,
            "completion_tokens": think + 5, "seconds": seconds, "ttft_seconds": ttft}


def test_pass_at_1_is_the_mean_of_each_problems_share_right():
    samples = [sample("a", True, "1"), sample("a", False, "2"), sample("a", False, "2"), sample("a", False, None),
               sample("b", True, "7"), sample("b", True, "7"), sample("b", False, "8"), sample("b", True, "7")]
    summary = benchmark_summary(samples, k=4)
    assert summary["pass@1"]["mean"] == pytest.approx((1 / 4 + 3 / 4) / 2)
    assert summary["maj@4"]["mean"] == 0.5  # a: "2" wins (wrong); b: "7" wins (right)
    assert summary["pass@4"]["mean"] == 1.0
    assert summary["problems"] == 2 and summary["samples"] == 8


def test_a_tie_goes_to_the_answer_reached_first_and_no_answer_does_not_vote():
    assert majority_correct([sample("a", False, None), sample("a", True, "3"), sample("a", False, "4")])
    assert not majority_correct([sample("a", False, "4"), sample("a", True, "3")])
    assert not majority_correct([sample("a", False, None)])
    # the winning answer is right when most samples that gave it were judged right
    assert majority_correct([sample("a", False, "7"), sample("a", True, "7"), sample("a", True, "7")])
    assert not majority_correct([sample("a", True, "7"), sample("a", False, "7"), sample("a", False, "7")])


def test_the_interval_is_the_bootstrap_of_the_mean_over_problems():
    values = [1.0, 0.75, 0.5, 0.25, 0.0] * 20  # k = 4: shares, not 0/1
    interval = mean_interval(values)
    normal = 1.96 * np.std(values) / np.sqrt(100)  # the normal approximation it should come close to
    assert interval["mean"] == 0.5
    assert interval["low"] == pytest.approx(0.5 - normal, abs=0.02)
    assert interval["high"] == pytest.approx(0.5 + normal, abs=0.02)
    assert mean_interval(values) == interval  # a fixed seed: the same samples give the same interval


def test_right_or_wrong_problems_get_wilsons_interval_never_a_zero_width_one():
    assert mean_interval([0.0] * 50) == {"mean": 0.0, "low": 0.0, "high": 0.0713}  # 0 of 50: up to 7 %
    assert mean_interval([1.0] * 10)["low"] == pytest.approx(0.7225, abs=1e-4)
    interval = mean_interval([1.0] * 30 + [0.0] * 70)
    assert (interval["low"], interval["high"]) == pytest.approx((0.2189, 0.3958), abs=1e-4)


def test_rates_and_lengths_count_what_they_say():
    samples = [sample("a", True, "1", think=100), sample("b", False, None, closed=False, finish="length",
                                                         loop={"kind": "words"}, think=0),
               sample("c", None, "5", think=300, ttft=None)]
    summary = benchmark_summary(samples, k=1)
    assert summary["judged_problems"] == 2  # c has no reference
    assert summary["pass@1"]["mean"] == 0.5
    assert summary["closure_rate"] == round(2 / 3, 4)
    assert summary["truncation_rate"] == summary["loop_rate"] == round(1 / 3, 4)
    assert summary["think_tokens"] == distribution([100, 300])  # closed samples only
    assert summary["ttft_seconds"]["count"] == 2
    assert summary["tokens_per_second"] == round((105 + 5 + 305) / 3, 2)


def test_every_problem_needs_k_samples():
    with pytest.raises(ValueError, match="k = 2"):
        benchmark_summary([sample("a", True, "1"), sample("a", True, "1"), sample("b", True, "1")], k=2)
