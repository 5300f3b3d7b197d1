"""Workflow status (services.workflow_status): children read, status built, deltas patched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from imageops.models.common import ErrorInfo, ErrorReason, Phase
from imageops.models.meta import ObjectMeta
from imageops.models.workflow import StepPhase, StepStatus, WorkflowSpec, WorkflowStatus
from imageops.services import workflow_status as ws
from imageops.services.dag import ChildView
from imageops.services.workflow_run import Rollback, RunPlan

T0 = datetime(2026, 1, 1, tzinfo=UTC)
D1 = "sha256:" + "1" * 64
META = ws.RunMeta(generation=2, run_id="abcd-g2", start_time=T0, now=T0 + timedelta(seconds=9))
S, F, R, P, K, C = (
    StepPhase.SUCCEEDED,
    StepPhase.FAILED,
    StepPhase.RUNNING,
    StepPhase.PENDING,
    StepPhase.SKIPPED,
    StepPhase.CANCELLED,
)


def _body(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "wf-g1-pull",
            "generation": generation,
            "labels": {"imageops.dev/step": "pull", "imageops.dev/node": "n1"},
        },
        "spec": {"action": "Pull", "image": "reg/app:1", "nodeName": "n1", **spec},
        "status": status or {},
    }


def test_child_view_reads_phase_and_result() -> None:
    assert ws.child_view(_body()).phase is R  # type: ignore[union-attr]
    done = ws.child_view(
        _body(
            {
                "phase": "Succeeded",
                "observedGeneration": 1,
                "digest": D1,
                "imageId": "sha256:ab",
                "previousTargetImageId": "sha256:cd",
                "startTime": "2026-01-01T00:00:00Z",
                "completionTime": "2026-01-01T00:00:05Z",
            }
        )
    )
    assert done is not None and done.phase is S and done.digest == D1
    assert (done.step, done.node, done.image_id) == ("pull", "n1", "sha256:ab")
    assert done.previous_target_image_id == "sha256:cd"
    assert done.completion_time == T0 + timedelta(seconds=5)


def test_child_view_failed_carries_the_error_and_old_generations_count_as_running() -> None:
    error = {"reason": "NotFound", "message": "gone", "retryable": False}
    failed = ws.child_view(_body({"phase": "Failed", "observedGeneration": 1, "lastError": error}))
    assert failed is not None and failed.error is not None
    assert failed.error.reason == ErrorReason.NOT_FOUND
    stale = ws.child_view(_body({"phase": "Succeeded", "observedGeneration": 1}, generation=2))
    assert stale is not None and stale.phase is R
    assert ws.child_view({"metadata": {"name": "x"}, "spec": {}}) is None


def _plan(phases: dict[str, StepPhase], node: str = "n1", **kw: Any) -> RunPlan:
    return RunPlan(steps={node: {s: StepStatus(phase=p) for s, p in phases.items()}}, **kw)


def test_outcome_running_succeeded_failed() -> None:
    running = ws.outcome(_plan({"a": S, "b": R, "c": P}), False, False)
    assert running == ws.Outcome(Phase.RUNNING, "Running", "1/3 steps finished; running: b")
    assert ws.outcome(_plan({"a": S, "b": S}), False, False) == ws.Outcome(
        Phase.SUCCEEDED, "Succeeded", "all 2 steps succeeded"
    )
    error = ErrorInfo(reason=ErrorReason.AUTH_FAILED, message="denied", retryable=False)
    plan = RunPlan(
        steps={
            "n1": {
                "a": StepStatus(phase=S),
                "b": StepStatus(phase=F, error=error),
                "c": StepStatus(phase=K),
            }
        },
        stop_reason="step b failed",
    )
    assert ws.outcome(plan, False, False) == ws.Outcome(
        Phase.FAILED, "StepFailed", "step b failed: AuthFailed: denied"
    )


def test_outcome_deadline_and_rollback() -> None:
    plan = _plan({"a": C, "b": K}, stop_reason="activeDeadlineSeconds (5s) exceeded")
    assert ws.outcome(plan, False, True) == ws.Outcome(
        Phase.FAILED, "DeadlineExceeded", "activeDeadlineSeconds (5s) exceeded"
    )
    rolling = _plan({"a": S, "b": F}, rollback=Rollback(wanted=True, pending=True))
    assert ws.outcome(rolling, False, False).reason == "RollingBack"
    assert ws.outcome(rolling, False, False).phase is Phase.RUNNING
    done = _plan(
        {"a": S, "b": F},
        rollback=Rollback(wanted=True, restored=["app:stable"], failed=["app:x: NotFound"]),
    )
    result = ws.outcome(done, False, False)
    assert result.phase is Phase.FAILED
    assert result.message == (
        "step b failed; rolled back: app:stable; could not roll back: app:x: NotFound"
    )


def test_run_status_single_node() -> None:
    plan = _plan({"a": S, "b": F, "c": K}, rollback=Rollback(wanted=True, restored=["t:1"]))
    status = ws.run_status(WorkflowStatus(), META, plan, False, False)
    assert status.phase == Phase.FAILED and status.node == "n1" and status.nodes == {}
    assert status.progress == "3/3" and status.rolled_back == ["t:1"]
    assert status.counts is not None
    assert (
        status.counts.total,
        status.counts.succeeded,
        status.counts.failed,
        status.counts.skipped,
    ) == (3, 1, 1, 1)
    assert status.completion_time == META.now and status.start_time == T0
    conditions = {c.type: (c.status, c.reason, c.observed_generation) for c in status.conditions}
    assert conditions == {
        "Ready": ("False", "StepFailed", 2),
        "Reconciling": ("False", "Failed", 2),
        "Stalled": ("True", "StepFailed", 2),
    }


def test_run_status_fan_out_and_kept_completion_time() -> None:
    plan = RunPlan(steps={"n1": {"a": StepStatus(phase=S)}, "n2": {"a": StepStatus(phase=R)}})
    status = ws.run_status(WorkflowStatus(), META, plan, True, False)
    assert status.node is None and status.steps == {}
    assert {n: s.phase for n, s in status.nodes.items()} == {"n1": "Succeeded", "n2": "Running"}
    assert status.progress == "1/2" and status.completion_time is None
    # The NODES printer column: nodes finished of the fan-out.
    assert status.nodes_progress == "1/2"
    assert status.message == "1/2 steps finished on 2 nodes; running: a"
    done = _plan({"a": S})
    first = ws.run_status(WorkflowStatus(), META, done, False, False)
    assert first.nodes_progress is None  # one node: no fan-out column
    later = ws.run_status(
        first, ws.RunMeta(2, "abcd-g2", T0, T0 + timedelta(hours=1)), done, False, False
    )
    assert later.completion_time == first.completion_time


def test_an_unchanged_pass_writes_nothing() -> None:
    plan = _plan({"a": S, "b": R})
    stored = ws.status_wire(ws.run_status(WorkflowStatus(), META, plan, False, False))
    again = ws.run_status(
        WorkflowStatus.model_validate(stored),
        ws.RunMeta(2, "abcd-g2", T0, META.now + timedelta(seconds=3)),
        plan,
        False,
        False,
    )
    assert ws.merge_delta(stored, ws.status_wire(again)) == {}


def test_node_phase() -> None:
    def phase(*ps: StepPhase) -> Phase:
        return ws.node_phase({str(i): StepStatus(phase=p) for i, p in enumerate(ps)})

    assert (phase(S, S), phase(S, K), phase(P, P), phase(S, P), phase(C, R)) == (
        Phase.SUCCEEDED,
        Phase.FAILED,
        Phase.PENDING,
        Phase.RUNNING,
        Phase.RUNNING,
    )


def test_pending_and_invalid_status() -> None:
    pending = ws.pending_status(WorkflowStatus(), META, "waiting")
    assert pending.phase == Phase.PENDING and pending.completion_time is None
    assert {c.type: c.status for c in pending.conditions}["Reconciling"] == "True"
    invalid = ws.failed_status(pending, META, ws.REASON_INVALID, "dependency cycle: a -> b -> a")
    assert invalid.phase == Phase.FAILED and invalid.message == "dependency cycle: a -> b -> a"
    assert [c.reason for c in invalid.conditions if c.type == "Stalled"] == ["InvalidWorkflow"]


def test_merge_delta() -> None:
    old = {"a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2], "gone": True, "m": {"k": {"z": 1}}}
    new = {"a": 1, "b": {"x": 1, "y": 3}, "c": [1], "m": {}, "n": {}}
    assert ws.merge_delta(old, new) == {
        "b": {"y": 3},
        "c": [1],
        "gone": None,
        "m": {"k": None},
        "n": {},
    }
    assert ws.merge_delta(new, new) == {}


def test_run_nodes_messages_and_ttl() -> None:
    views = [
        ChildView(name="x", node="n2", step="a", action="Pull", image="a:1", phase=R, target=None)
    ]
    assert ws.run_nodes(None, views, False) == ("n2",)
    assert ws.run_nodes(WorkflowStatus(node="n1"), views, False) == ("n1",)
    fan = WorkflowStatus.model_validate({"nodes": {"n3": {}, "n1": {}}})
    assert ws.run_nodes(fan, views, True) == ("n1", "n2", "n3")
    assert ws.run_nodes(None, [], False) == ()
    spec = WorkflowSpec.model_validate(
        {
            "steps": [{"name": "a", "action": "Pull", "image": "a"}],
            "nodeSelector": {"pool": "x", "b": "1"},
        }
    )
    assert ws.no_node_message(spec).endswith("matching b=1,pool=x")
    done = WorkflowStatus(completion_time=T0)
    assert ws.ttl_expired(10, done, T0 + timedelta(seconds=10))
    assert not ws.ttl_expired(10, done, T0 + timedelta(seconds=9))
    assert not ws.ttl_expired(None, done, T0 + timedelta(days=9))
    assert ws.ttl_expired(0, done, T0)


def test_status_wire_leaves_out_empty_maps_and_lists() -> None:
    plan = _plan({"a": S})
    wire = ws.status_wire(ws.run_status(WorkflowStatus(), META, plan, False, False))
    assert "nodes" not in wire and "rolledBack" not in wire and wire["steps"]["a"]
    assert wire["startTime"] == "2026-01-01T00:00:00Z"


def test_parse_status_keeps_generation_and_phase_of_an_odd_status() -> None:
    odd = ws.parse_status({"observedGeneration": 3, "phase": "Succeeded", "steps": "??"})
    assert (odd.observed_generation, odd.phase) == (3, "Succeeded")
    assert ws.parse_status({}) == WorkflowStatus()


def test_ownership_and_versions() -> None:
    child = {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "imageops.dev/v1alpha1",
                    "kind": "Workflow",
                    "name": "wf",
                    "uid": "u1",
                }
            ]
        }
    }
    assert ws.owned_by(child, "u1") and not ws.owned_by(child, "u2")
    assert ws.owned_by_workflow(child) and not ws.owned_by_workflow({"metadata": {}})
    other = {"apiVersion": "apps/v1", "kind": "Workflow", "uid": "u3"}
    assert not ws.is_workflow_ref(other)

    def body(rv: str, uid: str = "u") -> ObjectMeta:
        return ObjectMeta(name="w", uid=uid, resource_version=rv)

    assert ws.is_older(body("10"), body("9")) and not ws.is_older(body("9"), body("10"))
    assert not ws.is_older(None, body("1")) and not ws.is_older(body("10", "a"), body("9", "b"))
    assert not ws.is_older(body("x"), body("9"))
    assert ws.is_older(body("9"), body("9"), same=True) and not ws.is_older(body("9"), body("9"))
