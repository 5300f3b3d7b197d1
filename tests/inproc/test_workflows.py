"""The workflow reconciler in-process: rollback planning, deadlines, TTL with the GC, placement."""

from __future__ import annotations

from typing import Any

from imageops.models.imageoperation import PLURAL as OPERATIONS
from imageops.models.imagesession import PLURAL as SESSIONS
from imageops.models.labels import ROLE_LABEL, STEP_LABEL
from imageops.models.workflow import PLURAL as WORKFLOWS
from imageops.models.workflow_object import WorkflowObject
from imageops.workers.workflows import WorkflowReconciler
from tests.inproc.conftest import Bed, finished_status, run, wait_for

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


def _workflow(bed: Bed, name: str, spec: dict[str, Any]) -> None:
    bed.create(WORKFLOWS, {"kind": "Workflow", "metadata": {"name": name}, "spec": spec})


async def _pass(bed: Bed, reconciler: WorkflowReconciler, name: str) -> float | None:
    """What a watch event of the workflow and of its children brings: one pass."""
    await bed.feed(reconciler.ctx)
    body = bed.get(WORKFLOWS, name)
    assert body is not None
    wf = WorkflowObject.from_body(body)
    reconciler.workflows[wf.meta.key] = wf
    return await reconciler.reconcile(wf.meta.key)


def _child(bed: Bed, step: str | None = None, role: str | None = None) -> dict[str, Any]:
    for child in bed.list(OPERATIONS):
        labels = child["metadata"].get("labels") or {}
        if (step and labels.get(STEP_LABEL) == step) or (role and labels.get(ROLE_LABEL) == role):
            return child
    raise AssertionError(
        f"no child {step or role}: {[c['metadata']['name'] for c in bed.list(OPERATIONS)]}"
    )


def test_a_failed_run_rolls_back_the_tag_it_moved(bed: Bed) -> None:
    _workflow(
        bed,
        "release",
        {
            "nodeName": "n-1",
            "onFailure": "Rollback",
            "steps": [
                {"name": "tag", "action": "Tag", "image": "app:rc", "target": "app:stable"},
                {
                    "name": "push",
                    "action": "Push",
                    "image": "app:stable",
                    "target": "r.example/app:1",
                    "dependsOn": ["tag"],
                },
            ],
        },
    )

    async def scenario() -> None:
        reconciler = WorkflowReconciler(bed.context())
        await _pass(bed, reconciler, "release")
        tag = _child(bed, step="tag")["metadata"]["name"]
        bed.patch_status(OPERATIONS, tag, finished_status(imageId=NEW, previousTargetImageId=OLD))
        await _pass(bed, reconciler, "release")
        push = _child(bed, step="push")["metadata"]["name"]
        error = {"reason": "AuthFailed", "message": "denied", "retryable": False}
        bed.patch_status(OPERATIONS, push, finished_status(phase="Failed", lastError=error))
        await _pass(bed, reconciler, "release")
        rollback = _child(bed, role="rollback")
        wanted = {"action": "Tag", "image": OLD, "target": "app:stable", "force": True}
        assert {k: rollback["spec"].get(k) for k in wanted} == wanted
        assert rollback["spec"]["nodeName"] == "n-1"
        status = bed.get(WORKFLOWS, "release")["status"]  # type: ignore[index]
        assert status["phase"] == "Running"  # the rollback still runs
        bed.patch_status(OPERATIONS, rollback["metadata"]["name"], finished_status(imageId=OLD))
        assert await _pass(bed, reconciler, "release") == 0.0  # finished: the TTL is next
        await reconciler.queue.shutdown()

    run(scenario())
    status = bed.get(WORKFLOWS, "release")["status"]  # type: ignore[index]
    assert status["phase"] == "Failed" and status["rolledBack"] == ["app:stable"]


def test_the_deadline_is_a_requeue_after_and_fails_the_run_on_time(bed: Bed) -> None:
    _workflow(
        bed,
        "slow",
        {
            "nodeName": "n-1",
            "activeDeadlineSeconds": 30,
            "steps": [{"name": "pull", "action": "Pull", "image": "app:1"}],
        },
    )

    async def scenario() -> None:
        reconciler = WorkflowReconciler(bed.context(resync_interval=300))
        after = await _pass(bed, reconciler, "slow")
        assert after == 30  # no event will come: the deadline's own requeue-after
        bed.clock.advance(31)
        await _pass(bed, reconciler, "slow")
        await reconciler.queue.shutdown()

    run(scenario())
    status = bed.get(WORKFLOWS, "slow")["status"]  # type: ignore[index]
    assert status["phase"] == "Failed"
    assert status["steps"]["pull"]["phase"] == "Cancelled"


def test_after_the_ttl_the_workflow_is_deleted_and_the_gc_takes_its_children(bed: Bed) -> None:
    _workflow(
        bed,
        "short",
        {
            "nodeName": "n-1",
            "createSession": True,
            "ttlSecondsAfterFinished": 60,
            "steps": [{"name": "pull", "action": "Pull", "image": "app:1"}],
        },
    )

    async def scenario() -> None:
        reconciler = WorkflowReconciler(bed.context())
        await _pass(bed, reconciler, "short")
        child = _child(bed, step="pull")["metadata"]["name"]
        bed.patch_status(OPERATIONS, child, finished_status())
        assert await _pass(bed, reconciler, "short") == 0.0
        after = await _pass(bed, reconciler, "short")
        assert after is not None and 55 <= after <= 60
        bed.clock.advance(after)
        assert await _pass(bed, reconciler, "short") is None
        await reconciler.queue.shutdown()

    run(scenario())
    assert bed.get(WORKFLOWS, "short") is None
    # Nothing here deletes them: kube-controller-manager's garbage collector does.
    wait_for(lambda: not bed.list(OPERATIONS), 60, "the GC deleting the child")
    wait_for(lambda: bed.get(SESSIONS, "short") is None, 60, "the GC deleting the session")


def test_a_run_and_an_operation_go_to_the_least_busy_live_node(bed: Bed) -> None:
    from imageops.workers.assigner import Assigner

    bed.lease("n-a")
    bed.lease("n-b")
    busy = {"action": "Pull", "image": "app:1", "nodeName": "n-a"}
    for name in ("busy-1", "busy-2"):
        bed.create(OPERATIONS, {"kind": "ImageOperation", "metadata": {"name": name}, "spec": busy})
    _workflow(bed, "anywhere", {"steps": [{"name": "pull", "action": "Pull", "image": "app:2"}]})
    bed.create(
        OPERATIONS,
        {
            "kind": "ImageOperation",
            "metadata": {"name": "free"},
            "spec": {"action": "Pull", "image": "app:3"},
        },
    )

    async def scenario() -> None:
        ctx = bed.context()
        await ctx.nodes.refresh()
        reconciler = WorkflowReconciler(ctx)
        await _pass(bed, reconciler, "anywhere")
        await bed.feed(ctx)  # n-a has two operations, n-b the workflow's one
        assigner = Assigner(ctx)
        free = next(b for b in ctx.index.all() if b["metadata"]["name"] == "free")
        assert await assigner.reconcile(free["metadata"]["uid"]) is None
        await reconciler.queue.shutdown()
        await assigner.queue.shutdown()

    run(scenario())
    status = bed.get(WORKFLOWS, "anywhere")["status"]  # type: ignore[index]
    assert status["node"] == "n-b"
    assert _child(bed, step="pull")["spec"]["nodeName"] == "n-b"
    assert bed.get(OPERATIONS, "free")["spec"]["nodeName"] == "n-b"  # type: ignore[index]
