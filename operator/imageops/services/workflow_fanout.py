"""A fan-out Workflow's nodes in its status: every node listed, kept small beyond 20 nodes.

Pure. Split from services.workflow_status, which builds the rest of the status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

from imageops.models.common import Phase
from imageops.models.workflow import (
    MAX_DETAILED_NODES,
    NodeCounts,
    NodeStatus,
    StepPhase,
    StepStatus,
    StepSummary,
    WorkflowStatus,
)
from imageops.services.dag import TERMINAL
from imageops.services.workflow_run import NodeSteps


def node_phase(steps: Mapping[str, StepStatus]) -> Phase:
    """One node's phase from its steps' phases."""
    phases = [StepPhase(s.phase) for s in steps.values()]
    if all(p is StepPhase.SUCCEEDED for p in phases):
        return Phase.SUCCEEDED
    if all(p in TERMINAL for p in phases):
        return Phase.FAILED
    if any(p is not StepPhase.PENDING for p in phases):
        return Phase.RUNNING
    return Phase.PENDING


def fan_out_status(status: WorkflowStatus, steps: NodeSteps) -> None:
    """Fill in the nodes of a fan-out: every node, with its steps only where they matter.

    Up to MAX_DETAILED_NODES nodes, each node carries its steps. Beyond, the
    status stays small and its writes short (each rewrites the whole object): a
    succeeded node, or one not started yet, carries only its phase, and what
    the succeeded nodes produced is summarised per step in ``succeeded``; the
    running and failed nodes keep their steps in full.
    """
    detailed = len(steps) <= MAX_DETAILED_NODES
    tally = NodeCounts(total=len(steps))
    summarised: list[Mapping[str, StepStatus]] = []
    for name, node_steps in steps.items():
        phase = node_phase(node_steps)
        key = str(phase).lower()
        setattr(tally, key, getattr(tally, key) + 1)
        brief = not detailed and phase in (Phase.SUCCEEDED, Phase.PENDING)
        status.nodes[name] = NodeStatus(phase=phase, steps={} if brief else node_steps)
        if brief and phase == Phase.SUCCEEDED:
            summarised.append(node_steps)
    status.node_counts = tally
    status.nodes_progress = f"{tally.succeeded + tally.failed}/{tally.total}"
    if summarised:
        status.succeeded = summarise(summarised)


def summarise(nodes: Sequence[Mapping[str, StepStatus]]) -> dict[str, StepSummary]:
    """Per step: how many nodes, the most common digest and image ID, the last completion."""
    digests: dict[str, Counter[str]] = {}
    images: dict[str, Counter[str]] = {}
    last: dict[str, datetime] = {}
    for node in nodes:
        for step, state in node.items():
            digests.setdefault(step, Counter())
            images.setdefault(step, Counter())
            if state.digest:
                digests[step][state.digest] += 1
            if state.image_id:
                images[step][state.image_id] += 1
            done = state.completion_time
            if done is not None and (step not in last or done > last[step]):
                last[step] = done
    result: dict[str, StepSummary] = {}
    for step, counter in digests.items():
        summary = StepSummary(nodes=len(nodes), last_completion_time=last.get(step))
        if counter:
            summary.digest, summary.digest_nodes = counter.most_common(1)[0]
        if images[step]:
            summary.image_id = images[step].most_common(1)[0][0]
        result[step] = summary
    return result
