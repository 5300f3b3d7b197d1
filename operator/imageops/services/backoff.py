"""Retry timing: exponential backoff with optional jitter, and the retry budget."""

from __future__ import annotations

import random
from collections.abc import Callable

from imageops.settings import DEFAULTS


def backoff_delay(
    attempt: int,
    *,
    base: float = DEFAULTS.backoff_base,
    factor: float = 2.0,
    cap: float = DEFAULTS.backoff_cap,
    jitter: float = 0.0,
    rand: Callable[[], float] | None = None,
) -> float:
    """Seconds to wait after ``attempt`` failed attempts: base, base*factor, ... at most ``cap``.

    ``jitter`` spreads the delay by that fraction either way (0.2 → ±20 %),
    drawing from ``rand`` (values in [0, 1); default ``random.random``) so
    agents that failed together do not retry together. The result never
    exceeds ``cap`` and is never negative.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts failed attempts and starts at 1, got {attempt}")
    if base < 0 or cap < 0 or factor < 1:
        raise ValueError(f"need base >= 0, cap >= 0, factor >= 1 (got {base}, {cap}, {factor})")
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter is a fraction in [0, 1], got {jitter}")
    try:
        delay = min(cap, base * factor ** (attempt - 1))
    except OverflowError:
        # factor ** attempt left the float range: far past any cap.
        delay = cap
    if jitter:
        draw = (rand or random.random)()
        delay *= 1 + jitter * (2 * draw - 1)
    return max(0.0, min(cap, delay))


def should_retry(error_retryable: bool, attempts: int, backoff_limit: int) -> bool:
    """Whether to try again after a failed attempt.

    ``attempts`` counts the attempts made so far (the failed one included);
    ``backoff_limit`` counts retries, as in a Kubernetes Job, so at most
    ``backoff_limit + 1`` attempts are made in all.
    """
    if attempts < 0 or backoff_limit < 0:
        raise ValueError(f"attempts and backoff_limit must be >= 0 ({attempts}, {backoff_limit})")
    return error_retryable and attempts < backoff_limit + 1
