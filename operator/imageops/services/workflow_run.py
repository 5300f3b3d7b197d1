"""One pass over a Workflow run: every step's phase, and the children to create or delete.

Pure and idempotent: the same children and recorded status give the same
plan, so the controller can run it after every event and after a restart.
Children are named deterministically, so creating one twice is harmless
(the API server answers 409) and deleting one twice too (404).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imageops.models.base import API_VERSION
from imageops.models.common import ErrorInfo, ErrorReason
from imageops.models.imageoperation import KIND as OPERATION_KIND
from imageops.models.labels import NODE_LABEL, ROLE_LABEL, RUN_LABEL, STEP_LABEL, WORKFLOW_LABEL
from imageops.models.workflow import KIND, OnFailure, StepPhase, StepStatus, WorkflowSpec
from imageops.services import dag
from imageops.services.dag import TERMINAL, ChildView, Graph

# The same keys as workers.opindex, which reads them (services cannot import workers).
ROLLBACK_ROLE = "rollback"

NodeSteps = dict[str, dict[str, StepStatus]]
ByStep = Mapping[tuple[str, str], ChildView]  # (node, step) -> child


@dataclass(frozen=True)
class RunContext:
    """Which workflow run this is."""

    namespace: str
    name: str
    uid: str
    generation: int
    session: str | None = None

    def owner(self) -> dict[str, Any]:
        """The controller owner reference children carry."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
        }


@dataclass(frozen=True)
class RunInput:
    """Everything a pass looks at."""

    run: RunContext
    spec: WorkflowSpec
    graph: Graph
    nodes: tuple[str, ...]
    fan_out: bool
    now: datetime
    children: Sequence[ChildView] = ()
    rollbacks: Sequence[ChildView] = ()
    recorded: Mapping[str, Mapping[str, StepStatus]] = field(default_factory=dict)
    rejected: Mapping[tuple[str, str], ErrorInfo] = field(default_factory=dict)
    deadline_exceeded: bool = False


@dataclass
class Rollback:
    """onFailure Rollback: what is restored, still restoring, or could not be."""

    wanted: bool = False
    pending: bool = False
    restored: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass
class RunPlan:
    """The outcome of one pass."""

    steps: NodeSteps
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    rollback: Rollback = field(default_factory=Rollback)
    stop_reason: str | None = None


def plan_run(inp: RunInput) -> RunPlan:
    """Decide every step's phase on every node, and what to create and delete."""
    by_key = {(c.node, c.step): c for c in inp.children if c.step is not None}
    phases = {
        node: {step: _phase(inp, node, step, by_key.get((node, step))) for step in inp.graph.order}
        for node in inp.nodes
    }
    stop_reason = _stop_reason(inp, phases)
    admitted = _admitted(inp, phases)
    plan = RunPlan(steps={}, stop_reason=stop_reason)
    failed_now: dict[tuple[str, str], ErrorInfo] = dict(inp.rejected)
    advances = _Advances(inp.graph, stop_reason is not None)
    for node in inp.nodes:
        adv = advances.of(phases[node], node in admitted)
        running = [
            s for s, p in adv.phases.items() if p is StepPhase.RUNNING and (node, s) not in by_key
        ]
        for step in running:
            # Newly started, or recorded as started but not (yet) seen: create is idempotent.
            try:
                body = _child_body(inp, node, step, by_key)
            except dag.InvalidWorkflow as exc:
                adv.phases[step] = StepPhase.FAILED
                failed_now[node, step] = ErrorInfo(
                    reason=ErrorReason.INVALID_WORKFLOW, message=str(exc), retryable=False
                )
                continue
            if body is not None:
                plan.create.append(body)
            elif step in adv.start:
                adv.phases[step] = StepPhase.PENDING
        plan.delete += [_name(inp, node, s) for s in adv.cancel]
        plan.steps[node] = {
            step: _status(
                inp,
                node,
                step,
                adv.phases[step],
                by_key.get((node, step)),
                failed_now.get((node, step)),
                stop_reason,
            )
            for step in inp.graph.order
        }
    plan.rollback = _rollback(inp, plan, by_key)
    return plan


class _Advances:
    """dag.advance per node, computed once per distinct input: a fan-out's nodes share a
    handful of phase combinations, and a pass over 1,000 nodes would repeat each."""

    def __init__(self, graph: Graph, stop: bool) -> None:
        self.graph, self.stop = graph, stop
        self._seen: dict[tuple[tuple[StepPhase, ...], bool], dag.Advance] = {}

    def of(self, phases: Mapping[str, StepPhase], admitted: bool) -> dag.Advance:
        """A fresh copy (the caller changes it) of advance(graph, phases, ...)."""
        key = (tuple(phases.values()), admitted)
        done = self._seen.get(key)
        if done is None:
            done = dag.advance(self.graph, phases, stop=self.stop, admitted=admitted)
            self._seen[key] = done
        return dag.Advance(dict(done.phases), list(done.start), list(done.cancel))


def _phase(inp: RunInput, node: str, step: str, child: ChildView | None) -> StepPhase:
    """A step's phase from its child, else from what the status recorded."""
    if (node, step) in inp.rejected:
        return StepPhase.FAILED
    if child is not None:
        return child.phase
    recorded = inp.recorded.get(node, {}).get(step)
    return StepPhase(recorded.phase) if recorded is not None else StepPhase.PENDING


def _stop_reason(inp: RunInput, phases: Mapping[str, Mapping[str, StepPhase]]) -> str | None:
    """Why no step may start any more (None: the run goes on)."""
    if inp.deadline_exceeded:
        return f"activeDeadlineSeconds ({inp.spec.active_deadline_seconds}s) exceeded"
    if not inp.spec.fail_fast:
        return None
    for node in inp.nodes:
        for step in inp.graph.order:
            if phases[node][step] is StepPhase.FAILED:
                where = f" on node {node}" if inp.fan_out else ""
                return f"step {step}{where} failed"
    return None


def _admitted(inp: RunInput, phases: Mapping[str, Mapping[str, StepPhase]]) -> set[str]:
    if not inp.fan_out:
        return set(inp.nodes)
    started = {n for n in inp.nodes if any(p is not StepPhase.PENDING for p in phases[n].values())}
    finished = {n for n in inp.nodes if all(p in TERMINAL for p in phases[n].values())}
    return dag.admit_nodes(inp.nodes, started, finished, inp.spec.parallelism)


def _name(inp: RunInput, node: str, step: str) -> str:
    return dag.child_name(inp.run.name, inp.run.generation, step, node if inp.fan_out else None)


def _labels(inp: RunInput, node: str) -> dict[str, str]:
    return {
        WORKFLOW_LABEL: dag.label_value(inp.run.name),
        NODE_LABEL: dag.label_value(node),
        RUN_LABEL: str(inp.run.generation),
    }


def _child_body(inp: RunInput, node: str, step_name: str, by_key: ByStep) -> dict[str, Any] | None:
    """The ImageOperation of one step on one node; its image resolved when imageFrom.

    None when the step it takes the image from is not seen yet (right after a
    controller restart the index may lag behind the status): the step waits.
    """
    step = inp.graph.steps[step_name]
    image = step.image
    if step.image_from is not None:
        source = by_key.get((node, step.image_from.step))
        if source is None:
            return None
        if source.phase is not StepPhase.SUCCEEDED:
            raise dag.InvalidWorkflow(
                f"step {step.image_from.step!r} has no successful result to take the image from"
            )
        image = dag.pinned_image(source)
    spec: dict[str, Any] = {**dag.step_fields(step, inp.spec), "image": image, "nodeName": node}
    if inp.run.session:
        spec["sessionRef"] = {"name": inp.run.session}
    return _operation(
        inp, _name(inp, node, step_name), {**_labels(inp, node), STEP_LABEL: step_name}, spec
    )


def _operation(
    inp: RunInput, name: str, labels: dict[str, str], spec: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": OPERATION_KIND,
        "metadata": {
            "name": name,
            "namespace": inp.run.namespace,
            "labels": labels,
            "ownerReferences": [inp.run.owner()],
        },
        "spec": spec,
    }


def _status(
    inp: RunInput,
    node: str,
    step: str,
    phase: StepPhase,
    child: ChildView | None,
    failure: ErrorInfo | None,
    stop_reason: str | None,
) -> StepStatus:
    """The status entry of one step; times once recorded are kept."""
    rec = inp.recorded.get(node, {}).get(step)
    settled = phase in (StepPhase.SKIPPED, StepPhase.CANCELLED) or child is None
    if rec is not None and rec.phase == phase and phase in TERMINAL and settled:
        # Decided earlier: keep its times, so that an unchanged run writes nothing.
        return rec
    started = rec.start_time if rec is not None else None
    if phase is StepPhase.PENDING:
        return StepStatus(phase=phase)
    if phase is StepPhase.SKIPPED:
        return StepStatus(phase=phase, completion_time=inp.now)
    fields: dict[str, Any] = {"phase": StepPhase(phase).value}
    if child is None:
        fields |= {"operation_name": _name(inp, node, step), "start_time": started or inp.now}
    else:
        fields |= {
            "operation_name": child.name,
            "digest": child.digest,
            "image_id": child.image_id,
            # The step started when the run created its child: kept once recorded, so
            # that the agent's own Running write does not cost another status write.
            "start_time": started or child.start_time or inp.now,
            "completion_time": child.completion_time,
            "error": child.error if phase is StepPhase.FAILED else None,
        }
    if phase is StepPhase.CANCELLED:
        fields |= {
            "completion_time": inp.now,
            "error": dag.cancel_error(f"cancelled: {stop_reason}"),
        }
    elif failure is not None:
        fields |= {"completion_time": inp.now, "error": failure}
    # Built from values already typed (a child's view, the recorded status, this pass's
    # time): validating them again cost a fifth of a 1,000-node pass.
    return StepStatus.model_construct(**fields)


def _rollback(inp: RunInput, plan: RunPlan, by_key: ByStep) -> Rollback:
    """Once a failed run has stopped: restore each tag its steps moved, on its node."""
    state = Rollback()
    phases = [s.phase for node in plan.steps.values() for s in node.values()]
    finished = all(p in TERMINAL for p in phases)
    if (
        inp.spec.on_failure != OnFailure.ROLLBACK
        or not finished
        or all(p == StepPhase.SUCCEEDED for p in phases)
    ):
        return state
    state.wanted = True
    done = {c.name: c for c in inp.rollbacks}
    for node in inp.nodes:
        mine = [c for (n, _), c in by_key.items() if n == node]
        for target, previous in dag.rollback_targets(mine):
            name = dag.rollback_name(inp.run.name, inp.run.generation, node, target)
            label = f"{target} on {node}" if inp.fan_out else target
            child = done.get(name)
            if child is None or child.phase is StepPhase.RUNNING:
                state.pending = True
                if child is None:
                    plan.create.append(_rollback_body(inp, name, node, target, previous))
            elif child.phase is StepPhase.SUCCEEDED:
                state.restored.append(label)
            else:
                why = child.error.message if child.error else "failed"
                state.failed.append(f"{label}: {why}")
    return state


def _rollback_body(
    inp: RunInput, name: str, node: str, target: str, previous: str
) -> dict[str, Any]:
    """A forced Tag of the previous image ID back onto ``target``.

    No sessionRef: an image ID names no registry, so a session's registry
    allow-list must not judge it.
    """
    spec: dict[str, Any] = {
        "action": "Tag",
        "image": previous,
        "target": target,
        "force": True,
        "nodeName": node,
    }
    if inp.spec.defaults and inp.spec.defaults.backoff_limit is not None:
        spec["backoffLimit"] = inp.spec.defaults.backoff_limit
    labels = {**_labels(inp, node), ROLE_LABEL: ROLLBACK_ROLE}
    return _operation(inp, name, labels, spec)
