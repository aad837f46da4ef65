"""The retry schedule: exponential backoff with equal jitter, Retry-After obeyed up to its cap."""
from __future__ import annotations

import pytest

from lib.teacher.client import TeacherRequestError
from lib.teacher.retry import backoff_delay, call_with_retries
from tests.teacher.fakes import FixedRandom, config_for


def test_backoff_doubles_with_equal_jitter_up_to_the_cap_and_obeys_retry_after():
    assert [backoff_delay(a, 1.0, 8.0, 0.0) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [backoff_delay(a, 1.0, 8.0, 1.0) for a in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff_delay(0, 1.0, 8.0, 0.0, retry_after=30.0) == 30.0
    assert backoff_delay(0, 1.0, 8.0, 0.5, retry_after=30.0, retry_after_max_s=10.0) == 10.5
    assert backoff_delay(10_000, 1.0, 8.0, 1.0) == 8.0  # no float overflow however long the run


def test_retryable_errors_are_retried_until_the_budget_is_spent_and_the_last_one_counts_attempts():
    calls, sleeps = [], []

    def always_busy():
        calls.append(1)
        raise TeacherRequestError("HTTP 503", retryable=True, status=503)

    with pytest.raises(TeacherRequestError) as err:
        call_with_retries(always_busy, config_for("http://127.0.0.1:1/v1", max_retries=2), sleeps.append,
                          FixedRandom())
    assert (len(calls), err.value.attempts, sleeps) == (3, 3, [0.75, 1.5])


def test_a_non_retryable_error_is_raised_at_once_and_a_success_reports_its_attempts():
    def bad_request():
        raise TeacherRequestError("HTTP 400", retryable=False, status=400)

    sleeps = []
    with pytest.raises(TeacherRequestError) as err:
        call_with_retries(bad_request, config_for("http://127.0.0.1:1/v1"), sleeps.append, FixedRandom())
    assert (err.value.attempts, sleeps) == (1, [])

    outcomes = iter([TeacherRequestError("reset", retryable=True), "reply"])

    def flaky():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert call_with_retries(flaky, config_for("http://127.0.0.1:1/v1"), sleeps.append, FixedRandom()) == ("reply", 2)
