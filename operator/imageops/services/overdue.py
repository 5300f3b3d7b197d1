"""When a Running operation has outlived every attempt it is allowed (for an alert).

An agent ends each attempt at ``timeoutSeconds`` and waits at most the backoff cap
between attempts, so a healthy operation is finished after
``attempts x timeout + (attempts - 1) x cap``. One still Running well after that
was lost (its agent died, or its result could not be written): a person must look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from imageops.models.imageoperation import DEFAULT_BACKOFF_LIMIT, DEFAULT_TIMEOUT_SECONDS

# Slack for status writes, the start grace and a slow API server.
SLACK_SECONDS = 60.0


def _parse(stamp: Any) -> datetime | None:
    if isinstance(stamp, datetime):
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    if not isinstance(stamp, str) or not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def allowed_seconds(spec: Mapping[str, Any], backoff_cap: float) -> float:
    """The longest a healthy run of ``spec`` can stay Running, slack included.

    Session defaults are not known here: the built-in defaults stand in for them.
    """
    timeout = float(spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)
    limit = spec.get("backoffLimit")
    attempts = 1 + int(DEFAULT_BACKOFF_LIMIT if limit is None else limit)
    return attempts * timeout + (attempts - 1) * backoff_cap + SLACK_SECONDS


def is_overdue(body: Mapping[str, Any], now: datetime, backoff_cap: float) -> bool:
    """Whether the operation is Running longer than :func:`allowed_seconds`."""
    status = body.get("status") or {}
    if status.get("phase") != "Running":
        return False
    started = _parse(status.get("startTime"))
    if started is None:
        return False
    spec = body.get("spec") or {}
    return (now - started).total_seconds() > allowed_seconds(spec, backoff_cap)


def overdue_by_namespace(
    bodies: Iterable[Mapping[str, Any]], now: datetime, backoff_cap: float
) -> dict[str, int]:
    """Namespace → overdue operations, for every namespace with an operation (0: none late).

    Namespaces with only finished operations count too, so that the series stays (at 0)
    between bursts of work instead of disappearing.
    """
    counts: dict[str, int] = {}
    for body in bodies:
        namespace = str(body["metadata"]["namespace"])
        counts[namespace] = counts.get(namespace, 0) + int(is_overdue(body, now, backoff_cap))
    return counts
