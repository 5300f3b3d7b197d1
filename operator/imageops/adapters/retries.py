"""Retries of Kubernetes API calls through outages of the API server or etcd.

One mechanism for every call whose result must not be lost (status writes, the
reads an operation needs): transient failures are retried with capped backoff for
as long as the process lives; other failures are raised at once.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from urllib3.exceptions import HTTPError as Urllib3Error

from imageops.adapters.kubehttp import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")
# Retry delays: doubled from the first, capped (seconds).
RETRY_FIRST, RETRY_CAP = 0.5, 10.0


def is_transient(exc: BaseException) -> bool:
    """Whether an API call failed in a way that a later retry can cure.

    5xx (etcd down answers 500/504), 429, and every connection-level failure
    (refused, reset, timed out) are transient; other 4xx answers are not.
    """
    if isinstance(exc, ApiError):
        return not exc.status or exc.status >= 500 or exc.status == 429
    return isinstance(exc, Urllib3Error | http.client.HTTPException | OSError)


def brief(exc: BaseException) -> str:
    """A one-line description of an API failure (no response bodies, which can be long)."""
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    what: str,
    pointless: Callable[[], Awaitable[bool]] | None = None,
    fallback: T | None = None,
) -> T | None:
    """Await ``call()`` until it does not fail transiently; no limit on the attempts.

    Before each retry ``pointless()`` (when given) may end the retries: then
    ``fallback`` is returned (e.g. the object is gone, nobody will read the result).
    """
    delay, failures = RETRY_FIRST, 0
    while True:
        try:
            if failures and pointless is not None and await pointless():
                return fallback
            result = await call()
            if failures:
                log.info("%s succeeded after %d failed attempt(s)", what, failures)
            return result
        except Exception as exc:
            if not is_transient(exc):
                raise
            failures += 1
            log.warning("%s failed (%s); retry %d in %.1fs", what, brief(exc), failures, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_CAP)
