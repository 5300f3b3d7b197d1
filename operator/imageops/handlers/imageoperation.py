"""kopf handlers for ImageOperation: thin, they hand every event to a worker.

The agent's watch is filtered by the API server to ``spec.nodeName=<node>``
(see ``runtime.operator``); the controller's sees the unassigned ones.
"""

from __future__ import annotations

from typing import Any

import kopf

from imageops.adapters import metrics
from imageops.models.base import GROUP, VERSION
from imageops.models.imageoperation import PLURAL
from imageops.workers.agent import Agent
from imageops.workers.opindex import OperationIndex


def register_agent(registry: kopf.OperatorRegistry, agent: Agent) -> None:
    """Route this node's ImageOperation events to the agent."""

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def imageoperation_event(event: kopf.RawEvent, **_: Any) -> None:
        metrics.WATCH_EVENTS.labels(PLURAL, "agent").inc()
        await agent.observe(event.get("type"), event["object"])


def register_controller(registry: kopf.OperatorRegistry, index: OperationIndex) -> None:
    """Feed every ImageOperation event to the controller's index (and its listeners)."""

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def imageoperation_index(event: kopf.RawEvent, **_: Any) -> None:
        metrics.WATCH_EVENTS.labels(PLURAL, "controller").inc()
        await index.observe(event.get("type"), event["object"])
