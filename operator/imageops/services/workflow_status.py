"""A Workflow's status: read from its children, built from a run plan, written as a delta.

Pure. The status is rebuilt whole on every pass and only the difference
from the stored one is patched, so an unchanged run writes nothing (and
triggers no further watch event).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from imageops.models.base import GROUP
from imageops.models.common import ErrorInfo, Phase
from imageops.models.imageoperation import ImageOperationStatus
from imageops.models.labels import NODE_LABEL, STEP_LABEL
from imageops.models.meta import ObjectMeta
from imageops.models.workflow import (
    KIND,
    StepCounts,
    StepPhase,
    StepStatus,
    WorkflowSpec,
    WorkflowStatus,
)
from imageops.models.workflow_object import parse_status as parse_status  # re-exported
from imageops.services.conditions import conditions_for_phase
from imageops.services.dag import TERMINAL, ChildView
from imageops.services.workflow_fanout import fan_out_status
from imageops.services.workflow_fanout import node_phase as node_phase  # re-exported
from imageops.services.workflow_run import NodeSteps, RunPlan

FINISHED = frozenset({Phase.SUCCEEDED, Phase.FAILED})
REASON_INVALID = "InvalidWorkflow"
REASON_DEADLINE = "DeadlineExceeded"
REASON_NO_NODE = "NoLiveNode"
MAX_ROLLED_BACK = 100  # the schema's bounds of status.rolledBack
MAX_TEXT = 512


def child_view(body: Mapping[str, Any]) -> ChildView | None:
    """Read a child ImageOperation; None when it is not one a run can use."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    spec = body.get("spec") or {}
    node = spec.get("nodeName") or labels.get(NODE_LABEL)
    if not node or not spec.get("image") or not meta.get("name"):
        return None
    try:
        status = ImageOperationStatus.model_validate(body.get("status") or {})
    except ValueError:
        status = ImageOperationStatus()
    current = status.observed_generation == int(meta.get("generation") or 1)
    phase = StepPhase.RUNNING
    if current and status.phase in FINISHED:
        phase = StepPhase(str(status.phase))
    return ChildView(
        name=str(meta["name"]),
        node=str(node),
        step=labels.get(STEP_LABEL),
        action=str(spec.get("action")),
        image=str(spec["image"]),
        target=spec.get("target"),
        phase=phase,
        digest=status.digest,
        image_id=status.image_id,
        previous_target_image_id=status.previous_target_image_id,
        start_time=status.start_time,
        completion_time=status.completion_time,
        error=status.last_error if phase is StepPhase.FAILED else None,
    )


def recorded_steps(
    status: WorkflowStatus, nodes: Sequence[str], fan_out: bool
) -> dict[str, dict[str, StepStatus]]:
    """The step states a status recorded, by node.

    A succeeded node of a large fan-out is listed without its steps: every
    step it has (the keys of status.succeeded) succeeded there.
    """
    if not fan_out:
        return {nodes[0]: dict(status.steps)} if nodes else {}
    recorded: dict[str, dict[str, StepStatus]] = {}
    # One read-only entry shared by every summarised node (a pass reads, never changes it).
    succeeded = {s: StepStatus(phase=StepPhase.SUCCEEDED) for s in status.succeeded}
    for name in nodes:
        node = status.nodes.get(name)
        if node is None:
            continue
        if node.steps or node.phase != Phase.SUCCEEDED:
            recorded[name] = dict(node.steps)
        else:
            recorded[name] = succeeded
    return recorded


def counts(steps: NodeSteps) -> StepCounts:
    """Steps (times nodes) per phase."""
    result = StepCounts()
    for node in steps.values():
        for step in node.values():
            result.total += 1
            key = str(step.phase).lower()
            setattr(result, key, getattr(result, key) + 1)
    return result


@dataclass(frozen=True)
class Outcome:
    """The whole workflow's phase, condition reason and message."""

    phase: Phase
    reason: str
    message: str


def outcome(plan: RunPlan, fan_out: bool, deadline_exceeded: bool) -> Outcome:
    """What the plan means for the workflow as a whole."""
    entries = [(n, s, st) for n, steps in plan.steps.items() for s, st in steps.items()]
    total = len(entries)
    done = sum(1 for _, _, st in entries if st.phase in TERMINAL)
    count = len(plan.steps)
    nodes_text = f" on {count} node{'s' if count != 1 else ''}" if fan_out else ""
    if done < total:
        running = sorted({s for _, s, st in entries if st.phase == StepPhase.RUNNING})
        message = f"{done}/{total} steps finished{nodes_text}; running: {', '.join(running) or '-'}"
        if plan.stop_reason:
            message = f"stopping, {plan.stop_reason}; {message}"
        return Outcome(Phase.RUNNING, "Running", message)
    if all(st.phase == StepPhase.SUCCEEDED for _, _, st in entries):
        return Outcome(Phase.SUCCEEDED, "Succeeded", f"all {total} steps succeeded{nodes_text}")
    message = _failure_text(entries, fan_out) or plan.stop_reason or "the run failed"
    if deadline_exceeded:
        reason, message = REASON_DEADLINE, plan.stop_reason or message
    else:
        reason = "StepFailed"
    rollback = plan.rollback
    if rollback.wanted and rollback.pending:
        return Outcome(Phase.RUNNING, "RollingBack", f"{message}; rolling back moved tags")
    if rollback.restored:
        message += f"; rolled back: {', '.join(rollback.restored)}"
    if rollback.failed:
        message += f"; could not roll back: {'; '.join(rollback.failed)}"
    return Outcome(Phase.FAILED, reason, message)


def _failure_text(entries: Sequence[tuple[str, str, StepStatus]], fan_out: bool) -> str | None:
    """The first failure, by completion time."""
    failed = [
        (_when(st.completion_time), n, s, st.error)
        for n, s, st in entries
        if st.phase == StepPhase.FAILED
    ]
    if not failed:
        return None
    _, node, step, error = min(failed, key=lambda f: f[:3])
    where = f" on node {node}" if fan_out else ""
    return f"step {step}{where} failed" + (_error_text(error) if error else "")


def _when(time: datetime | None) -> float:
    return time.timestamp() if time is not None else float("inf")


def _error_text(error: ErrorInfo) -> str:
    return f": {error.reason}: {error.message}"


@dataclass(frozen=True)
class RunMeta:
    """Identity and timing of the run a status describes."""

    generation: int
    run_id: str
    start_time: datetime
    now: datetime
    session: str | None = None


def run_status(
    prev: WorkflowStatus, meta: RunMeta, plan: RunPlan, fan_out: bool, deadline_exceeded: bool
) -> WorkflowStatus:
    """The full status of a run after a pass."""
    result = outcome(plan, fan_out, deadline_exceeded)
    status = _base(prev, meta, result)
    status.counts = counts(plan.steps)
    status.progress = f"{_finished(status.counts)}/{status.counts.total}"
    status.rolled_back = [t[:MAX_TEXT] for t in plan.rollback.restored[:MAX_ROLLED_BACK]]
    if fan_out:
        fan_out_status(status, plan.steps)
    else:
        status.node, status.steps = next(iter(plan.steps.items()))
    return status


def pending_status(prev: WorkflowStatus, meta: RunMeta, message: str) -> WorkflowStatus:
    """Waiting for a node with a live agent."""
    return _base(prev, meta, Outcome(Phase.PENDING, REASON_NO_NODE, message))


def waiting_status(
    prev: WorkflowStatus, meta: RunMeta, reason: str, message: str
) -> WorkflowStatus:
    """Pending for another reason than a node (SessionNotFound: its session is missing)."""
    return _base(prev, meta, Outcome(Phase.PENDING, reason, message))


def failed_status(prev: WorkflowStatus, meta: RunMeta, reason: str, message: str) -> WorkflowStatus:
    """A run that failed before it could start: InvalidWorkflow (a cycle, for one), or
    DeadlineExceeded while it waited for a node."""
    return _base(prev, meta, Outcome(Phase.FAILED, reason, message))


def _base(prev: WorkflowStatus, meta: RunMeta, result: Outcome) -> WorkflowStatus:
    same_run = prev.observed_generation == meta.generation
    completion = None
    if result.phase in FINISHED:
        kept = prev.completion_time if same_run and prev.phase in FINISHED else None
        completion = kept or meta.now
    conditions = conditions_for_phase(
        prev.conditions,
        phase=result.phase,
        generation=meta.generation,
        reason=result.reason,
        message=result.message[:32768],
        now=meta.now,
    )
    return WorkflowStatus(
        phase=result.phase,
        observed_generation=meta.generation,
        conditions=conditions,
        run_id=meta.run_id,
        session_name=meta.session,
        start_time=meta.start_time,
        completion_time=completion,
        message=result.message[:4096],
    )


def _finished(c: StepCounts) -> int:
    return c.succeeded + c.failed + c.skipped + c.cancelled


def status_wire(status: WorkflowStatus) -> dict[str, Any]:
    """The status as stored: camelCase, unset fields and empty maps and lists left out
    (a fan-out node listed without steps too: 1,000 of them are 11 kB)."""
    wire = {k: v for k, v in status.to_wire().items() if v not in ({}, [])}
    for node in (wire.get("nodes") or {}).values():
        if node.get("steps") == {}:
            del node["steps"]
    return wire


def merge_delta(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns ``old`` into ``new`` ({} when they are equal).

    Keys missing from ``new`` become None (deleted); objects are compared key
    by key; anything else (lists included) is replaced whole, as a merge
    patch does.
    """
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_delta(before, value)
            if sub:
                patch[key] = sub
        elif before != value or key not in old:
            patch[key] = value
    return patch


def run_nodes(
    prev: WorkflowStatus | None, views: Sequence[ChildView], fan_out: bool
) -> tuple[str, ...]:
    """The nodes a run already chose: from its status (``prev``), else from its children."""
    seen = {v.node for v in views}
    if fan_out:
        return tuple(sorted(seen | set(prev.nodes if prev else {})))
    if prev is not None and prev.node:
        return (prev.node,)
    return (min(seen),) if seen else ()


def no_node_message(spec: WorkflowSpec) -> str:
    """Why a run waits in Pending."""
    if spec.node_selector:
        wanted = ",".join(f"{k}={v}" for k, v in sorted(spec.node_selector.items()))
        return f"waiting for a node with a live imageops agent matching {wanted}"
    return "waiting for a node with a live imageops agent"


def ttl_expired(ttl: int | None, status: WorkflowStatus, now: datetime) -> bool:
    """Whether a finished workflow's ttlSecondsAfterFinished has passed."""
    done = status.completion_time
    return ttl is not None and done is not None and now >= done + timedelta(seconds=ttl)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` has an owner reference to ``uid``."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs)


def owned_by_workflow(obj: Mapping[str, Any]) -> bool:
    """Whether any Workflow owns ``obj``."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(is_workflow_ref(r) for r in refs)


def is_workflow_ref(ref: Mapping[str, Any]) -> bool:
    """Whether an owner reference points at a Workflow of this API group."""
    return ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/")


def is_older(current: ObjectMeta | None, new: ObjectMeta, same: bool = False) -> bool:
    """Whether ``new`` is an older version of the object than ``current`` (with
    ``same``: or that very version, e.g. the watch event of a write whose answer is held).

    resourceVersions are opaque to clients, but the API server's are etcd
    revisions: when both parse as integers, they order the versions.
    """
    if current is None or current.uid != new.uid:
        return False
    version = new.resource_version
    if same and version and version == current.resource_version:
        return True
    try:
        return int(new.resource_version or "") < int(current.resource_version or "")
    except ValueError:
        return False
