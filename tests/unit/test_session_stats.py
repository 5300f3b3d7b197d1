"""ImageSession statistics: folding, bounds, phase and expiry, the archive, session defaults."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from imageops.models.common import Action, ErrorReason, Phase
from imageops.models.imagesession import ImageSessionSpec, ImageSessionStatus
from imageops.services.conditions import get_condition
from imageops.services.session_archive import archive_name, build_archive
from imageops.services.session_stats import (
    ERROR_MESSAGE_LIMIT,
    RECORDED_ANNOTATION,
    Finished,
    activity_time,
    expiry_due,
    finished_from_body,
    fold,
    is_active,
    load_status,
    mark_expired,
    recorded_generation,
    refresh,
    status_patch,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _stamp(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _op(
    name: str = "op",
    *,
    phase: str | None = "Succeeded",
    generation: int = 1,
    observed: int | None = 1,
    action: str = "Pull",
    duration: float | None = 1.5,
    reason: str | None = None,
    cache_hit: bool = False,
    annotations: dict[str, str] | None = None,
    done: datetime = T0,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": observed,
        "startTime": _stamp(done - timedelta(seconds=5)),
    }
    if phase in ("Succeeded", "Failed"):
        status.update(completionTime=_stamp(done), durationSeconds=duration, cacheHit=cache_hit)
    if reason:
        status["lastError"] = {
            "reason": reason,
            "message": f"{reason} " + "x" * 2000,
            "retryable": False,
        }
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "generation": generation,
            "annotations": annotations or {},
            "creationTimestamp": _stamp(done - timedelta(seconds=10)),
        },
        "spec": {"action": action, "image": "reg:5000/app:1"},
        "status": status,
    }


def _finished(name: str = "op", **kwargs: Any) -> Finished:
    item = finished_from_body(_op(name, **kwargs), workflow=kwargs.pop("workflow", None))
    assert item is not None
    return item


def test_only_the_current_generation_finished_counts() -> None:
    assert finished_from_body(_op(phase="Running"), None) is None
    assert finished_from_body(_op(generation=2, observed=1), None) is None
    item = finished_from_body(_op(reason="NotFound", phase="Failed"), "wf")
    assert item is not None and item.key == "uid-op/1"
    assert (item.result, item.reason, item.workflow) == (Phase.FAILED, ErrorReason.NOT_FOUND, "wf")
    assert item.completion_time == T0
    assert not is_active(_op()) and is_active(_op(phase="Running", generation=2))


def test_unknown_reason_and_annotation_parsing() -> None:
    item = finished_from_body(_op(phase="Failed", reason="Weird"), None)
    assert item is not None and item.reason == ErrorReason.UNKNOWN
    assert recorded_generation(_op(annotations={RECORDED_ANNOTATION: "3"})) == 3
    assert recorded_generation(_op(annotations={RECORDED_ANNOTATION: "x"})) is None
    assert recorded_generation(_op()) is None


def test_activity_time_is_start_else_creation() -> None:
    body = _op(phase="Running")
    assert activity_time(body) == T0 - timedelta(seconds=5)
    del body["status"]["startTime"]
    assert activity_time(body) == T0 - timedelta(seconds=10)


def test_fold_counts_jobs_actions_errors_and_cache_hits() -> None:
    status = ImageSessionStatus()
    fold(status, _finished("a", duration=1.0, cache_hit=True), 50)
    fold(status, _finished("b", duration=3.0), 50)
    fold(status, _finished("c", phase="Failed", reason="NotFound", duration=2.0), 50)
    fold(status, _finished("d", action="Tag", duration=0.5), 50)
    assert status.jobs is not None
    assert (status.jobs.succeeded, status.jobs.failed) == (3, 1)
    pull = status.actions[Action.PULL]
    assert (pull.count, pull.succeeded, pull.failed) == (3, 2, 1)
    assert (pull.min_seconds, pull.avg_seconds, pull.max_seconds) == (1.0, 2.0, 3.0)
    assert status.actions[Action.TAG].count == 1
    assert status.cache_hits == 1 and status.cache_hit_ratio == 0.5
    assert status.errors is not None and status.errors.by_reason == {"NotFound": 1}
    assert len(status.errors.recent[0].message) == ERROR_MESSAGE_LIMIT
    assert [e.operation for e in status.recent_executions] == ["a", "b", "c", "d"]
    assert status.recent_executions[2].reason == "NotFound"
    assert status.last_activity_time == T0


def test_missing_duration_does_not_skew_the_mean() -> None:
    status = ImageSessionStatus()
    fold(status, _finished("a", duration=None), 50)
    fold(status, _finished("b", duration=4.0), 50)
    pull = status.actions[Action.PULL]
    assert pull.count == 2 and pull.timed == 1 and pull.avg_seconds == 4.0


def test_status_stays_bounded_over_many_operations() -> None:
    status = ImageSessionStatus()
    spec = ImageSessionSpec(history_limit=50)
    sizes = []
    for i in range(3000):
        failed = i % 3 == 0
        item = _finished(
            f"operation-with-a-long-name-{i:05d}",
            phase="Failed" if failed else "Succeeded",
            reason="NotFound" if failed else None,
            action=("Pull", "Tag", "Push")[i % 3],
            done=T0 + timedelta(seconds=i),
        )
        fold(status, item, spec.history_limit)
        if i in (199, 2999):
            refresh(
                status,
                spec,
                generation=1,
                active=0,
                latest_activity=None,
                created=T0,
                now=T0 + timedelta(seconds=i),
            )
            sizes.append(len(json.dumps(status_patch(status))))
    assert len(status.recent_executions) == 50 and status.errors is not None
    assert len(status.errors.recent) == 50
    assert status.jobs is not None and status.jobs.total == 3000
    assert sizes[1] < 64 * 1024
    assert abs(sizes[1] - sizes[0]) < 512  # counters grow by digits only


def test_lowering_the_history_limit_trims() -> None:
    status = ImageSessionStatus()
    for i in range(20):
        fold(status, _finished(f"op{i}", phase="Failed", reason="Timeout"), 20)
    refresh(
        status,
        ImageSessionSpec(history_limit=5),
        generation=2,
        active=0,
        latest_activity=None,
        created=T0,
        now=T0,
    )
    assert [e.operation for e in status.recent_executions] == [f"op{i}" for i in range(15, 20)]
    assert status.errors is not None and len(status.errors.recent) == 5
    assert status.errors.by_reason == {"Timeout": 20}


def test_phase_conditions_and_expiry() -> None:
    spec = ImageSessionSpec(ttl_seconds_after_idle=60)
    status = ImageSessionStatus()
    later = T0 + timedelta(seconds=30)
    refresh(status, spec, generation=3, active=2, latest_activity=later, created=T0, now=later)
    assert status.phase == "Active" and status.expires_at is None
    assert status.jobs is not None and (status.jobs.active, status.jobs.total) == (2, 2)
    assert status.observed_generation == 3 and status.last_activity_time == later
    ready, rec = (
        get_condition(status.conditions, "Ready"),
        get_condition(status.conditions, "Reconciling"),
    )
    assert ready is not None and rec is not None
    # Work under way: Reconciling, not Ready (kstatus InProgress, Argo CD Progressing).
    assert (ready.status, ready.reason, rec.status) == ("False", "OperationsActive", "True")
    assert not expiry_due(status, later + timedelta(hours=1))

    refresh(status, spec, generation=3, active=0, latest_activity=None, created=T0, now=later)
    assert status.phase == "Idle" and status.expires_at == later + timedelta(seconds=60)
    rec = get_condition(status.conditions, "Reconciling")
    ready = get_condition(status.conditions, "Ready")
    assert rec is not None and rec.status == "False"
    assert ready is not None and ready.status == "True"
    assert not expiry_due(status, later + timedelta(seconds=59))
    assert expiry_due(status, later + timedelta(seconds=60))

    mark_expired(status, 3, later + timedelta(seconds=61), "s-history")
    ready = get_condition(status.conditions, "Ready")
    assert status.phase == "Expired" and status.archived_to == "s-history"
    assert ready is not None and (ready.status, ready.reason) == ("False", "Expired")
    # Final and unusable: Stalled, so Flux's wait and Argo CD settle (Failed/Degraded).
    stalled = get_condition(status.conditions, "Stalled")
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "Expired")
    refresh(status, spec, generation=3, active=1, latest_activity=None, created=T0, now=later)
    assert status.phase == "Expired" and not expiry_due(status, later + timedelta(days=1))


def test_finished_but_not_yet_counted_operations_count_in_the_total() -> None:
    status = ImageSessionStatus()
    fold(status, _finished("a"), 10)
    refresh(
        status,
        ImageSessionSpec(),
        generation=1,
        active=2,
        uncounted=5,
        latest_activity=None,
        created=T0,
        now=T0,
    )
    assert status.jobs is not None
    assert (status.jobs.succeeded, status.jobs.active, status.jobs.total) == (1, 2, 8)


def test_never_used_session_expires_from_creation() -> None:
    status = ImageSessionStatus()
    refresh(
        status,
        ImageSessionSpec(ttl_seconds_after_idle=10),
        generation=1,
        active=0,
        latest_activity=None,
        created=T0,
        now=T0,
    )
    assert status.expires_at == T0 + timedelta(seconds=10)
    refresh(
        status, ImageSessionSpec(), generation=1, active=0, latest_activity=None, created=T0, now=T0
    )
    assert status.expires_at is None and status.phase == "Idle"


def test_status_patch_deletes_unset_fields_and_round_trips() -> None:
    status = ImageSessionStatus()
    fold(status, _finished("a"), 10)
    patch = status_patch(status)
    assert patch["expiresAt"] is None and patch["archivedTo"] is None
    assert patch["recentExecutions"][0]["completionTime"] == "2026-01-01T12:00:00Z"
    again = load_status({k: v for k, v in patch.items() if v is not None} | {"future": 1})
    assert status_patch(again) == patch
    assert load_status({"phase": "Bogus"}) == ImageSessionStatus()


def test_archive_document() -> None:
    status = ImageSessionStatus(recorded=["uid/1"])
    fold(status, _finished("a", phase="Failed", reason="AuthFailed"), 10)
    mark_expired(status, 1, T0, "s-history")
    doc = build_archive(
        "ns", "s", "uid-s", ImageSessionSpec(preserve_logs=True), status, "Expired", T0
    )
    assert doc["session"] == {"namespace": "ns", "name": "s", "uid": "uid-s"}
    assert doc["reason"] == "Expired" and doc["archivedAt"] == "2026-01-01T12:00:00Z"
    assert doc["spec"]["preserveLogs"] is True
    assert doc["status"]["errors"]["byReason"] == {"AuthFailed": 1}
    assert "recorded" not in doc["status"] and "conditions" not in doc["status"]
    json.dumps(doc)
    assert archive_name("s") == "s-history"
    assert archive_name("x" * 250) == "x" * 250
