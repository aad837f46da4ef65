"""Retrying a teacher request: exponential backoff with equal jitter, a server's Retry-After obeyed (capped).

Usage: ``completion, attempts = call_with_retries(lambda: client.complete(messages), config, time.sleep,
random.Random())``

`sleep` and the jitter source are arguments so tests (and a scripted server) pin the exact schedule. Only a
`TeacherRequestError` marked retryable is retried: a client decides what a second try could fix.
"""
from __future__ import annotations

import logging
import math
import random
from typing import Callable, TypeVar

from lib.teacher.client import TeacherRequestError
from lib.teacher.config import TeacherConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


def backoff_delay(attempt: int, base_s: float, max_s: float, unit_random: float,
                  retry_after: float | None = None, retry_after_max_s: float = math.inf) -> float:
    """Seconds before retry number `attempt + 1` (attempt counts from 0); pure.

    A server's Retry-After wins (capped), plus up to `base_s` of jitter so workers told the same moment do
    not all return at once. Otherwise equal jitter: half the exponential step, plus a random half of it.
    """
    if retry_after is not None:
        return min(retry_after, retry_after_max_s) + unit_random * base_s
    step = min(max_s, base_s * 2.0 ** min(attempt, 64))  # the exponent is capped so floats cannot overflow
    return step / 2 + unit_random * step / 2


def call_with_retries(call: Callable[[], T], config: TeacherConfig, sleep: Callable[[float], None],
                      rng: random.Random) -> tuple[T, int]:
    """(result of `call`, attempts used); retryable errors are retried `config.max_retries` times.

    The last error is raised with `.attempts` set; non-retryable errors are raised at once.
    """
    for attempt in range(config.max_retries + 1):
        try:
            return call(), attempt + 1
        except TeacherRequestError as err:
            err.attempts = attempt + 1
            if not err.retryable or attempt == config.max_retries:
                raise
            delay = backoff_delay(attempt, config.backoff_base_s, config.backoff_max_s, rng.random(),
                                  err.retry_after, config.retry_after_max_s)
            log.warning("teacher request failed (attempt %d of %d), retrying in %.2f s: %s",
                        attempt + 1, config.max_retries + 1, delay, err)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
