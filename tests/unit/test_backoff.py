"""Backoff delays and the retry budget."""

from __future__ import annotations

import pytest

from imageops.services.backoff import backoff_delay, should_retry


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 32.0), (6, 60.0), (7, 60.0), (100, 60.0)],
)
def test_defaults_double_up_to_the_cap(attempt: int, expected: float) -> None:
    assert backoff_delay(attempt) == expected


def test_custom_base_factor_cap() -> None:
    assert [backoff_delay(n, base=0.5, factor=3.0, cap=10.0) for n in (1, 2, 3, 4)] == [
        0.5,
        1.5,
        4.5,
        10.0,
    ]


def test_factor_one_is_constant() -> None:
    assert {backoff_delay(n, base=5.0, factor=1.0) for n in range(1, 20)} == {5.0}


def test_huge_attempt_does_not_overflow() -> None:
    assert backoff_delay(10**6, factor=10.0) == 60.0


def test_base_above_cap_is_capped() -> None:
    assert backoff_delay(1, base=100.0, cap=60.0) == 60.0


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 6.4), (0.5, 8.0), (0.75, 8.8)])
def test_jitter_spreads_both_ways(draw: float, expected: float) -> None:
    delay = backoff_delay(3, jitter=0.2, rand=lambda: draw)
    assert delay == pytest.approx(expected)


def test_jitter_never_exceeds_the_cap() -> None:
    assert backoff_delay(10, jitter=0.5, rand=lambda: 0.999) == 60.0
    assert backoff_delay(10, jitter=0.5, rand=lambda: 0.0) == pytest.approx(30.0)


def test_jitter_with_the_default_random_stays_in_range() -> None:
    for _ in range(200):
        assert 4.0 <= backoff_delay(3, jitter=0.5) <= 12.0


def test_no_jitter_does_not_draw() -> None:
    def draw() -> float:
        raise AssertionError("rand called without jitter")

    assert backoff_delay(2, rand=draw) == 4.0


@pytest.mark.parametrize(
    ("attempt", "base", "factor", "cap", "jitter"),
    [
        (0, 2.0, 2.0, 60.0, 0.0),
        (-1, 2.0, 2.0, 60.0, 0.0),
        (1, -1.0, 2.0, 60.0, 0.0),
        (1, 2.0, 0.5, 60.0, 0.0),
        (1, 2.0, 2.0, -1.0, 0.0),
        (1, 2.0, 2.0, 60.0, -0.1),
        (1, 2.0, 2.0, 60.0, 1.5),
    ],
)
def test_invalid_arguments(
    attempt: int, base: float, factor: float, cap: float, jitter: float
) -> None:
    with pytest.raises(ValueError):
        backoff_delay(attempt, base=base, factor=factor, cap=cap, jitter=jitter)


@pytest.mark.parametrize(
    ("retryable", "attempts", "limit", "expected"),
    [
        (True, 1, 0, False),  # backoffLimit 0: one attempt, no retry
        (True, 1, 1, True),
        (True, 2, 1, False),  # 1 retry used: 2 attempts in all
        (True, 1, 3, True),
        (True, 3, 3, True),
        (True, 4, 3, False),
        (False, 1, 3, False),  # a permanent error is never retried
        (False, 0, 3, False),
        (True, 0, 0, True),
    ],
)
def test_should_retry(retryable: bool, attempts: int, limit: int, expected: bool) -> None:
    assert should_retry(retryable, attempts, limit) is expected


def test_total_attempts_are_backoff_limit_plus_one() -> None:
    for limit in range(6):
        attempts = 1
        while should_retry(True, attempts, limit):
            attempts += 1
        assert attempts == limit + 1


@pytest.mark.parametrize(("attempts", "limit"), [(-1, 3), (1, -1)])
def test_should_retry_rejects_negative_counts(attempts: int, limit: int) -> None:
    with pytest.raises(ValueError):
        should_retry(True, attempts, limit)
