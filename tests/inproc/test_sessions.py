"""The session tracker in-process: exactly-once counting across a flush and a restart."""

from __future__ import annotations

from typing import Any

from imageops.models.imageoperation import PLURAL as OPERATIONS
from imageops.models.imagesession import PLURAL as SESSIONS
from imageops.models.imagesession import ImageSession
from imageops.services.session_stats import RECORDED_ANNOTATION
from imageops.workers.session_members import MemberState
from imageops.workers.sessions import SessionTracker
from tests.inproc.conftest import Bed, finished_status, run


def _operation(bed: Bed, name: str) -> dict[str, Any]:
    bed.create(
        OPERATIONS,
        {
            "kind": "ImageOperation",
            "metadata": {"name": name},
            "spec": {
                "action": "Pull",
                "image": "registry.example/app:1",
                "nodeName": "n-1",
                "sessionRef": {"name": "s"},
            },
        },
    )
    return bed.patch_status(OPERATIONS, name, finished_status())


async def _start(bed: Bed) -> SessionTracker:
    """A (re)started controller: a fresh index and tracker that read the API server."""
    ctx = bed.context()
    tracker = SessionTracker(ctx)
    await bed.feed(ctx)
    body = bed.get(SESSIONS, "s")
    assert body is not None
    await tracker.observe(None, ImageSession.from_body(body))
    return tracker


def _succeeded(bed: Bed) -> int:
    body = bed.get(SESSIONS, "s")
    assert body is not None
    return int(body["status"]["jobs"]["succeeded"])


def test_each_result_is_counted_once_across_a_flush_and_a_restart(bed: Bed) -> None:
    bed.create(SESSIONS, {"kind": "ImageSession", "metadata": {"name": "s"}, "spec": {}})
    for i in range(3):
        _operation(bed, f"op-{i}")

    async def first_life() -> None:
        tracker = await _start(bed)
        await tracker.marks.shutdown()  # the controller dies before any annotation
        state = tracker.sessions[bed.namespace, "s"]
        await tracker.flush(state)
        assert state.members.count([MemberState.STORED]) == 3
        await tracker.queue.shutdown()

    run(first_life())
    stored = bed.get(SESSIONS, "s")
    assert stored is not None and len(stored["status"]["recorded"]) == 3
    assert _succeeded(bed) == 3
    assert not any(
        RECORDED_ANNOTATION in (o["metadata"].get("annotations") or {})
        for o in bed.list(OPERATIONS)
    )

    async def second_life() -> None:
        tracker = await _start(bed)
        state = tracker.sessions[bed.namespace, "s"]
        # Inherited from status.recorded: to annotate, not to count again.
        assert state.members.count([MemberState.QUEUED]) == 0
        assert state.members.count([MemberState.STORED]) == 3
        await tracker.flush(state)
        assert await tracker.annotate(state.key) is None
        bed.clock.advance(2)
        await tracker.flush(state)  # status.recorded shrinks
        await tracker.queue.shutdown()
        await tracker.marks.shutdown()

    run(second_life())
    assert _succeeded(bed) == 3
    stored = bed.get(SESSIONS, "s")
    assert stored is not None and not stored["status"].get("recorded")
    marks = [o["metadata"]["annotations"][RECORDED_ANNOTATION] for o in bed.list(OPERATIONS)]
    assert marks == ["1", "1", "1"]

    _operation(bed, "op-late")

    async def third_life() -> None:
        tracker = await _start(bed)
        state = tracker.sessions[bed.namespace, "s"]
        # Annotated ones are counted; only the new result is queued.
        assert state.members.count([MemberState.QUEUED]) == 1
        await tracker.flush(state)
        await tracker.queue.shutdown()
        await tracker.marks.shutdown()

    run(third_life())
    assert _succeeded(bed) == 4


def test_an_idle_session_expires_at_its_ttl_by_requeue_after(bed: Bed) -> None:
    bed.create(
        SESSIONS,
        {"kind": "ImageSession", "metadata": {"name": "s"}, "spec": {"ttlSecondsAfterIdle": 60}},
    )

    async def life() -> None:
        tracker = await _start(bed)
        key = (bed.namespace, "s")
        after = await tracker.reconcile(key)  # flushes: Idle, expiresAt = created + 60 s
        assert after is not None and 0 < after <= 60
        bed.clock.advance(after + 1)
        assert await tracker.reconcile(key) is None
        await tracker.queue.shutdown()
        await tracker.marks.shutdown()

    run(life())
    body = bed.get(SESSIONS, "s")
    assert body is not None and body["status"]["phase"] == "Expired"
