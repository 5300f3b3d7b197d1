"""Where a fan-out's time goes, from the children's watch: agent time and controller reaction.

For each child ImageOperation the bench's watch recorded when it first saw it
(created) and when it saw it finished. Per node, the next step's child appears
only after the controller saw the previous one finish: that gap is the
controller's reaction time. A child's own life (created → finished) is the
agent's time (simulated latency, plus the API server and the watches).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from bench.common import distribution
from imageops.models.labels import NODE_LABEL, STEP_LABEL

STEP_ORDER = ("pull", "tag", "stable")


def timeline(
    created: Mapping[str, float], done: Mapping[str, tuple[float, Any]], applied: float
) -> dict[str, Any]:
    """Reaction and agent-time distributions, and children created per 10 s after apply."""
    by_node: dict[str, dict[str, tuple[float, float]]] = {}
    for name, (finished, obj) in done.items():
        labels = (obj.get("metadata") or {}).get("labels") or {}
        node, step = labels.get(NODE_LABEL), labels.get(STEP_LABEL)
        if node and step and name in created:
            by_node.setdefault(node, {})[step] = (created[name], finished)
    reaction: list[float] = []
    agent: list[float] = []
    for steps in by_node.values():
        for start, end in steps.values():
            agent.append(end - start)
        for before, after in itertools.pairwise(STEP_ORDER):
            if before in steps and after in steps:
                reaction.append(steps[after][0] - steps[before][1])
    buckets: dict[int, int] = {}
    for at in created.values():
        bucket = int((at - applied) // 10) * 10
        buckets[bucket] = buckets.get(bucket, 0) + 1
    return {
        "controller_reaction_seconds": distribution(reaction) if reaction else None,
        "agent_seconds": distribution(agent) if agent else None,
        "created_per_10s": dict(sorted(buckets.items())),
    }
