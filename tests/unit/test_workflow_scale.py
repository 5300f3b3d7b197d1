"""A fan-out's status at 1,000 nodes x 3 steps: bounded, failed and running nodes in full."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from imageops.models.common import ErrorInfo, ErrorReason, Phase
from imageops.models.workflow import MAX_DETAILED_NODES, StepPhase, WorkflowSpec, WorkflowStatus
from imageops.services import dag
from imageops.services import workflow_status as ws
from imageops.services.dag import ChildView
from imageops.services.workflow_run import RunContext, RunInput, RunPlan, plan_run

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIMIT = 256 * 1024
DIGEST = "sha256:" + "d" * 64
IMAGE_ID = "sha256:" + "e" * 64
STEPS = ("pull", "tag", "stable")
S, F, R, P, K = (
    StepPhase.SUCCEEDED,
    StepPhase.FAILED,
    StepPhase.RUNNING,
    StepPhase.PENDING,
    StepPhase.SKIPPED,
)
SPEC = WorkflowSpec.model_validate(
    {
        "allNodes": True,
        "nodeSelector": {"pool": "gpu"},
        "parallelism": 100,
        "failFast": False,
        "steps": [
            {"name": "pull", "action": "Pull", "image": "registry.example.com/team/app:1.4.0"},
            {
                "name": "tag",
                "action": "Tag",
                "imageFrom": {"step": "pull"},
                "target": "registry.example.com/team/app:warm",
            },
            {
                "name": "stable",
                "action": "Tag",
                "imageFrom": {"step": "pull"},
                "dependsOn": ["tag"],
                "target": "registry.example.com/team/app:stable",
            },
        ],
    }
)
RUN = RunContext("ns", "warmup", "uid-1", 1)
ERROR = ErrorInfo(
    reason=ErrorReason.REGISTRY_UNAVAILABLE,
    message="pull registry.example.com/team/app:1.4.0: 503 Service Unavailable " + "x" * 200,
    retryable=True,
    suggestion="the registry is down or overloaded: retry later",
)


def _node(i: int) -> str:
    # Cloud-style names, longer than most: the succeeded nodes' entries scale with them.
    return f"ip-10-{i // 250}-{i % 250}-{i % 7}.eu-west-1.compute.internal"


def _child(node: str, step: str, phase: StepPhase, at: int) -> ChildView:
    done = phase in (S, F)
    pinned = f"registry.example.com/team/app@{DIGEST}"
    return ChildView(
        name=dag.child_name("warmup", 1, step, node),
        node=node,
        step=step,
        action="Pull" if step == "pull" else "Tag",
        image="registry.example.com/team/app:1.4.0" if step == "pull" else pinned,
        target=None if step == "pull" else f"registry.example.com/team/app:{step}",
        phase=phase,
        digest=DIGEST if phase is S else None,
        image_id=IMAGE_ID if phase is S else None,
        start_time=T0 + timedelta(seconds=at),
        completion_time=T0 + timedelta(seconds=at + 3) if done else None,
        error=ERROR if phase is F else None,
    )


def _children(nodes: list[str]) -> list[ChildView]:
    """0-9 failed at the pull, 10-109 running their tag, 110-699 done, the rest not started."""
    views: list[ChildView] = []
    for i, node in enumerate(nodes):
        if i < 10:
            views.append(_child(node, "pull", F, i))
        elif i < 110:
            views += [_child(node, "pull", S, i), _child(node, "tag", R, i + 3)]
        elif i < 700:
            views += [_child(node, s, S, i + 3 * j) for j, s in enumerate(STEPS)]
    return views


def _input(nodes: list[str], children: list[ChildView], recorded: WorkflowStatus) -> RunInput:
    return RunInput(
        run=RUN,
        spec=SPEC,
        graph=dag.build_graph(SPEC),
        nodes=tuple(nodes),
        fan_out=True,
        now=T0 + timedelta(hours=1),
        children=children,
        recorded=ws.recorded_steps(recorded, nodes, True),
    )


def _pass(nodes: list[str], children: list[ChildView], prev: WorkflowStatus) -> dict[str, object]:
    plan = plan_run(_input(nodes, children, prev))
    meta = ws.RunMeta(1, "uid-1-g1", T0, T0 + timedelta(hours=1))
    return ws.status_wire(ws.run_status(prev, meta, plan, True, False))


def _size(wire: object) -> int:
    return len(json.dumps(wire, separators=(",", ":")))


def test_a_1000_node_fan_out_status_is_bounded_with_failed_and_running_nodes_in_full() -> None:
    nodes = sorted(_node(i) for i in range(1000))
    order = [_node(i) for i in range(1000)]
    wire = _pass(nodes, _children(order), WorkflowStatus())
    assert _size(wire) <= LIMIT, _size(wire)
    status = WorkflowStatus.model_validate(wire)
    assert len(status.nodes) == 1000  # every node of the run is listed
    assert status.node_counts is not None
    assert status.node_counts.model_dump() == {
        "total": 1000,
        "succeeded": 590,
        "failed": 10,
        "running": 100,
        "pending": 300,
    }
    assert status.nodes_progress == "600/1000"
    failed = status.nodes[order[3]]
    assert failed.phase == Phase.FAILED
    assert failed.steps["pull"].error == ERROR and failed.steps["tag"].phase == K
    running = status.nodes[order[50]]
    assert running.phase == Phase.RUNNING
    assert running.steps["pull"].digest == DIGEST and running.steps["tag"].phase == R
    assert running.steps["tag"].operation_name == dag.child_name("warmup", 1, "tag", order[50])
    assert status.nodes[order[500]].phase == Phase.SUCCEEDED
    assert status.nodes[order[500]].steps == {}
    assert status.nodes[order[900]].phase == Phase.PENDING
    assert status.nodes[order[900]].steps == {}
    summary = status.succeeded["pull"]
    assert (summary.nodes, summary.digest, summary.digest_nodes) == (590, DIGEST, 590)
    assert summary.image_id == IMAGE_ID
    assert set(status.succeeded) == set(STEPS)
    assert status.counts is not None and status.counts.total == 3000


def test_the_summarised_status_round_trips_and_an_unchanged_pass_writes_nothing() -> None:
    nodes = sorted(_node(i) for i in range(1000))
    children = _children([_node(i) for i in range(1000)])
    first = _pass(nodes, children, WorkflowStatus())
    stored = ws.parse_status(first)
    # A succeeded node listed without steps reads back as succeeded on every step.
    recorded = ws.recorded_steps(stored, nodes, True)
    assert {s.phase for s in recorded[_node(500)].values()} == {S}
    assert set(recorded[_node(500)]) == set(STEPS)
    assert recorded[_node(900)] == {}
    assert ws.merge_delta(first, _pass(nodes, children, stored)) == {}
    # Right after a controller restart the index may lack the succeeded children:
    # the recorded status alone keeps them succeeded, nothing is created again for them.
    running_only = [c for c in children if c.phase is not S or c.node == _node(50)]
    plan = plan_run(_input(nodes, running_only, stored))
    assert {s.phase for s in plan.steps[_node(500)].values()} == {S}
    assert not [b for b in plan.create if b["spec"]["nodeName"] == _node(500)]


def test_every_node_finished_status_is_small() -> None:
    nodes = sorted(_node(i) for i in range(1000))
    children = [
        _child(n, "pull", F, 0) if i % 100 == 0 else _child(n, s, S, j)
        for i, n in enumerate(nodes)
        for j, s in enumerate(STEPS if i % 100 else ("pull",))
    ]
    wire = _pass(nodes, children, WorkflowStatus())
    assert wire["phase"] == "Failed"
    assert _size(wire) <= 128 * 1024, _size(wire)
    status = WorkflowStatus.model_validate(wire)
    assert sum(1 for n in status.nodes.values() if n.steps) == 10  # only the failed ones


def test_a_small_fan_out_keeps_every_node_with_its_steps() -> None:
    nodes = [f"n{i:02d}" for i in range(MAX_DETAILED_NODES)]
    children = [_child(n, s, S, 0) for n in nodes for s in STEPS]
    status = WorkflowStatus.model_validate(_pass(nodes, children, WorkflowStatus()))
    assert all(node.steps["tag"].digest == DIGEST for node in status.nodes.values())
    assert status.succeeded == {}


def test_one_pass_over_1000_nodes_is_quick() -> None:
    """The controller runs this after every batch of events: it must stay well under a second."""
    nodes = sorted(_node(i) for i in range(1000))
    children = _children([_node(i) for i in range(1000)])
    stored = ws.parse_status(_pass(nodes, children, WorkflowStatus()))
    started = time.process_time()
    plan = plan_run(_input(nodes, children, stored))
    ws.status_wire(ws.run_status(stored, ws.RunMeta(1, "r", T0, T0), plan, True, False))
    assert time.process_time() - started < 2.0
    assert isinstance(plan, RunPlan)


def test_nodes_without_steps_are_stored_as_their_phase_only() -> None:
    nodes = sorted(_node(i) for i in range(200))
    children = [_child(n, s, S, 0) for n in nodes[:50] for s in STEPS]
    wire = _pass(nodes, children, WorkflowStatus())  # parallelism 100: 50 done, 100 running
    listed = wire["nodes"]
    assert isinstance(listed, dict)
    assert listed[nodes[0]] == {"phase": "Succeeded"} and listed[nodes[199]] == {"phase": "Pending"}
    assert listed[nodes[100]]["phase"] == "Running" and listed[nodes[100]]["steps"]
