"""kopf handlers for ImageOperation: thin, they validate each event's object and hand it on.

The agent's watch is filtered by the API server to ``spec.nodeName=<node>``
(see ``runtime.operator``); the controller's sees the unassigned ones. The body
is validated into the models here, once: the agent works on typed objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import kopf
from pydantic import ValidationError

from imageops.adapters import metrics
from imageops.models.base import GROUP, VERSION
from imageops.models.imageoperation import (
    PLURAL,
    ImageOperationHead,
    ImageOperationSpec,
    InvalidSpec,
)

if TYPE_CHECKING:  # each role's process imports only its own workers
    from imageops.workers.agent import Agent
    from imageops.workers.opindex import OperationIndex


def parse(body: Mapping[str, Any]) -> tuple[ImageOperationHead, ImageOperationSpec | InvalidSpec]:
    """The object's metadata and status, and its spec (or why the model rejects it).

    The API server checked the spec against the CRD already; a spec that passes the
    CRD but not the model (a rule only the agent checks) is failed by the agent.
    """
    head = ImageOperationHead.model_validate(body)
    raw = body.get("spec") or {}
    try:
        return head, ImageOperationSpec.model_validate(raw)
    except ValidationError as exc:
        node, action = raw.get("nodeName"), raw.get("action")
        return head, InvalidSpec(node, str(action or "Unknown"), str(exc))


def register_agent(registry: kopf.OperatorRegistry, agent: Agent) -> None:
    """Route this node's ImageOperation events to the agent."""

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def imageoperation_event(event: kopf.RawEvent, **_: Any) -> None:
        metrics.WATCH_EVENTS.labels(PLURAL, "agent").inc()
        await agent.observe(event.get("type"), *parse(event["object"]))


def register_controller(registry: kopf.OperatorRegistry, index: OperationIndex) -> None:
    """Feed every ImageOperation event to the controller's index (and its listeners)."""

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def imageoperation_index(event: kopf.RawEvent, **_: Any) -> None:
        metrics.WATCH_EVENTS.labels(PLURAL, "controller").inc()
        await index.observe(event.get("type"), event["object"])
