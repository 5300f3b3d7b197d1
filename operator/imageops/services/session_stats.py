"""ImageSession statistics: folding finished operations in, phase and expiry.

Pure functions over :class:`ImageSessionStatus`. The controller keeps one
status per session in memory, folds each finished operation generation in
exactly once (see :data:`RECORDED_ANNOTATION`), and writes the result. Every
list is cut to the session's ``historyLimit``, so the status stays bounded
however many operations the session sees. The archive (preserveLogs) is
:mod:`imageops.services.session_archive`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from imageops.models.common import Action, Condition, ConditionStatus, ErrorReason, Phase
from imageops.models.imagesession import (
    ActionStats,
    ErrorRecord,
    ErrorSummary,
    Execution,
    ImageSessionSpec,
    ImageSessionStatus,
    JobCounts,
    SessionPhase,
)
from imageops.models.meta import lenient
from imageops.services import clock
from imageops.services.conditions import READY, RECONCILING, STALLED, set_condition

# On an ImageOperation: the generation whose result a session has counted.
RECORDED_ANNOTATION = "imageops.dev/recorded-generation"
# Error messages are cut so that historyLimit alone bounds the size of status.errors.
ERROR_MESSAGE_LIMIT = 256
TERMINAL = frozenset({Phase.SUCCEEDED.value, Phase.FAILED.value})

# ImageOperation bodies (from the OperationIndex) are read raw here: the typed
# ImageOperation is the agent's side of the redesign and not folded in yet.


@dataclass(frozen=True)
class Finished:
    """One finished generation of an operation, as its session records it."""

    uid: str
    generation: int
    operation: str
    workflow: str | None
    action: Action
    image: str
    result: Phase
    duration_seconds: float | None
    reason: ErrorReason | None
    message: str
    completion_time: datetime | None
    cache_hit: bool

    @property
    def key(self) -> str:
        """``uid/generation``: what status.recorded lists."""
        return f"{self.uid}/{self.generation}"


def generation_of(body: Mapping[str, Any]) -> int:
    """metadata.generation of an object (1 when absent)."""
    return int(body.get("metadata", {}).get("generation") or 1)


def recorded_generation(body: Mapping[str, Any]) -> int | None:
    """The generation an operation's annotation says was counted, if any."""
    value = (body.get("metadata", {}).get("annotations") or {}).get(RECORDED_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def is_finished(body: Mapping[str, Any]) -> bool:
    """Whether the operation's current generation succeeded or failed."""
    status = body.get("status") or {}
    current = status.get("observedGeneration") == generation_of(body)
    return current and status.get("phase") in TERMINAL


def is_active(body: Mapping[str, Any]) -> bool:
    """Whether the operation is pending or running (not finished, not being deleted)."""
    return not is_finished(body) and not body.get("metadata", {}).get("deletionTimestamp")


def activity_time(body: Mapping[str, Any]) -> datetime | None:
    """When an active operation last did something: its start, else its creation."""
    status = body.get("status") or {}
    return parse_time(status.get("startTime") or body.get("metadata", {}).get("creationTimestamp"))


def finished_from_body(body: Mapping[str, Any], workflow: str | None) -> Finished | None:
    """The record of a finished operation, or None while it is not finished."""
    if not is_finished(body):
        return None
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    try:
        action = Action(str(spec.get("action")))
        result = Phase(status["phase"])
    except ValueError:
        return None
    error = status.get("lastError") or {}
    reason = _reason(error.get("reason")) if result is Phase.FAILED else None
    duration = status.get("durationSeconds")
    return Finished(
        uid=str(meta["uid"]),
        generation=generation_of(body),
        operation=str(meta["name"]),
        workflow=workflow,
        action=action,
        image=str(spec.get("image", ""))[:512],
        result=result,
        duration_seconds=float(duration) if isinstance(duration, int | float) else None,
        reason=reason,
        message=str(error.get("message", "")) if result is Phase.FAILED else "",
        completion_time=parse_time(status.get("completionTime")),
        cache_hit=bool(status.get("cacheHit")),
    )


def _reason(value: Any) -> ErrorReason:
    try:
        return ErrorReason(value)
    except ValueError:
        return ErrorReason.UNKNOWN


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp from the API server as an aware datetime."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def load_status(raw: Mapping[str, Any] | None) -> ImageSessionStatus:
    """A stored status, ignoring fields this version does not know (or empty if invalid)."""
    return lenient(ImageSessionStatus, raw)


def load_spec(raw: Mapping[str, Any] | None) -> ImageSessionSpec:
    """A session spec, ignoring fields this version does not know (or defaults if invalid)."""
    return lenient(ImageSessionSpec, raw)


def fold(status: ImageSessionStatus, item: Finished, history_limit: int) -> None:
    """Count one finished operation into ``status`` (in place), keeping lists bounded."""
    jobs = status.jobs or JobCounts()
    status.jobs = jobs
    stats = status.actions.get(item.action) or ActionStats()
    status.actions[item.action] = stats
    stats.count += 1
    if item.result is Phase.SUCCEEDED:
        jobs.succeeded += 1
        stats.succeeded += 1
        if item.action is Action.PULL and item.cache_hit:
            status.cache_hits = (status.cache_hits or 0) + 1
    else:
        jobs.failed += 1
        stats.failed += 1
        _fold_error(status, item, history_limit)
    jobs.total = jobs.succeeded + jobs.failed + jobs.active
    if item.duration_seconds is not None:
        _fold_duration(stats, item.duration_seconds)
    pulls = status.actions.get(Action.PULL)
    if pulls and pulls.succeeded:
        hits = status.cache_hits or 0
        status.cache_hit_ratio = round(min(hits / pulls.succeeded, 1.0), 4)
    status.recent_executions.append(
        Execution(
            operation=item.operation,
            workflow=item.workflow,
            action=item.action,
            image=item.image,
            result=item.result,
            duration_seconds=item.duration_seconds,
            reason=item.reason,
            completion_time=item.completion_time,
        )
    )
    trim(status, history_limit)
    if item.completion_time:
        status.last_activity_time = _latest(status.last_activity_time, item.completion_time)


def _fold_duration(stats: ActionStats, seconds: float) -> None:
    seconds = max(seconds, 0.0)
    stats.timed = (stats.timed or 0) + 1
    stats.total_seconds = round((stats.total_seconds or 0.0) + seconds, 3)
    stats.min_seconds = seconds if stats.min_seconds is None else min(stats.min_seconds, seconds)
    stats.max_seconds = seconds if stats.max_seconds is None else max(stats.max_seconds, seconds)
    stats.avg_seconds = round(stats.total_seconds / stats.timed, 3)


def _fold_error(status: ImageSessionStatus, item: Finished, history_limit: int) -> None:
    errors = status.errors or ErrorSummary()
    status.errors = errors
    reason = item.reason or ErrorReason.UNKNOWN
    errors.by_reason[reason] = errors.by_reason.get(reason, 0) + 1
    errors.recent.append(
        ErrorRecord(
            time=item.completion_time or clock.now(),
            operation=item.operation,
            reason=reason,
            message=item.message[:ERROR_MESSAGE_LIMIT],
        )
    )
    del errors.recent[:-history_limit]


def trim(status: ImageSessionStatus, history_limit: int) -> None:
    """Keep only the newest ``history_limit`` executions and errors (the limit may shrink)."""
    del status.recent_executions[:-history_limit]
    if status.errors:
        del status.errors.recent[:-history_limit]


def _latest(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


def refresh(
    status: ImageSessionStatus,
    spec: ImageSessionSpec,
    *,
    generation: int,
    active: int,
    latest_activity: datetime | None,
    created: datetime | None,
    now: datetime,
    uncounted: int = 0,
) -> None:
    """Recompute jobs, phase, expiry and conditions (in place) from the live operations.

    ``active`` counts the session's pending and running operations;
    ``uncounted`` the finished ones not folded in yet (they count in the
    total only); ``latest_activity`` is the latest start (or creation) among
    the active ones. An Expired session stays Expired.
    """
    jobs = status.jobs or JobCounts()
    status.jobs = jobs
    jobs.active = active
    jobs.total = jobs.succeeded + jobs.failed + active + uncounted
    status.observed_generation = generation
    status.last_activity_time = seconds(_latest(status.last_activity_time, latest_activity))
    trim(status, spec.history_limit)
    if status.phase == SessionPhase.EXPIRED:
        status.conditions = _conditions(status, generation, active, now)
        return
    status.phase = SessionPhase.ACTIVE if active else SessionPhase.IDLE
    status.expires_at = None
    if not active and spec.ttl_seconds_after_idle is not None:
        since = status.last_activity_time or created or now
        status.expires_at = seconds(since + timedelta(seconds=spec.ttl_seconds_after_idle))
    status.conditions = _conditions(status, generation, active, now)


def expiry_due(status: ImageSessionStatus, now: datetime) -> bool:
    """Whether the session has been idle for its whole ttlSecondsAfterIdle."""
    return (
        status.phase != SessionPhase.EXPIRED
        and not (status.jobs and status.jobs.active)
        and status.expires_at is not None
        and status.expires_at <= now
    )


def mark_expired(
    status: ImageSessionStatus, generation: int, now: datetime, archived_to: str | None
) -> None:
    """Turn the session Expired (in place), noting where its history went."""
    status.phase = SessionPhase.EXPIRED
    status.archived_to = archived_to
    status.conditions = _conditions(status, generation, 0, now)


def _conditions(
    status: ImageSessionStatus, generation: int, active: int, now: datetime
) -> list[Condition]:
    """Ready/Reconciling/Stalled as kstatus and the Argo CD check read them.

    Idle is done (Ready), Active is work under way (Reconciling, not Ready),
    Expired is final and unusable (Stalled), so that Flux's wait and Argo CD
    settle on it instead of waiting for ever.
    """
    phase = status.phase or SessionPhase.IDLE
    false, true = ConditionStatus.FALSE, ConditionStatus.TRUE
    expired_text = "idle for ttlSecondsAfterIdle; operations cleaned up"
    if phase == SessionPhase.EXPIRED:
        values = {
            READY: (false, "Expired", expired_text),
            RECONCILING: (false, "Expired", ""),
            STALLED: (true, "Expired", expired_text),
        }
    elif active:
        text = f"{active} operation(s) pending or running"
        values = {
            READY: (false, "OperationsActive", text),
            RECONCILING: (true, "OperationsActive", text),
            STALLED: (false, str(phase), ""),
        }
    else:
        values = {
            READY: (true, str(phase), "no operation active"),
            RECONCILING: (false, str(phase), ""),
            STALLED: (false, str(phase), ""),
        }
    conditions = list(status.conditions)
    for ctype, (value, reason, message) in values.items():
        cond = Condition(
            type=ctype, status=value, reason=reason, message=message, observed_generation=generation
        )
        conditions = set_condition(conditions, cond, seconds(now) or now)
    return conditions


def seconds(value: datetime | None) -> datetime | None:
    """``value`` in whole seconds (status times are stored so)."""
    return None if value is None else value.replace(microsecond=0)


def status_patch(status: ImageSessionStatus) -> dict[str, Any]:
    """A merge patch that makes the stored status equal ``status`` (unset fields deleted)."""
    wire = status.to_wire()
    for name, field in ImageSessionStatus.model_fields.items():
        wire.setdefault(field.alias or name, None)
    return wire
