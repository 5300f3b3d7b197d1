"""Assignment of ImageOperations to nodes, and failure when a node's agent is gone.

An operation created without ``spec.nodeName`` goes to its session's node,
else to the least busy node with a live agent that matches its
``nodeSelector``. An operation whose node has had no live agent for longer
than the grace period fails with ``NodeUnavailable``; an unassigned one
that finds no node in that time fails the same way: nothing waits for ever.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from imageops.adapters import metrics
from imageops.adapters.kube import ObjectRef
from imageops.models.common import ErrorReason, Phase
from imageops.models.imageoperation import PLURAL, ImageOperationStatus
from imageops.models.imagesession import PLURAL as SESSION_PLURAL
from imageops.services import lifecycle
from imageops.services.errors import OperationError
from imageops.services.overdue import overdue_by_namespace
from imageops.workers.context import ControllerContext, repeat
from imageops.workers.opindex import Body

log = logging.getLogger(__name__)
ACTIVE = (None, Phase.PENDING.value, Phase.RUNNING.value)


class Assigner:
    """Gives unassigned operations a node; fails operations stranded on a dead node."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx

    async def on_operation(self, event_type: str | None, body: Body) -> None:
        """Assign a new unassigned operation at once (the sweeper retries later)."""
        if event_type == "DELETED" or body["metadata"].get("deletionTimestamp"):
            return
        if not (body.get("spec") or {}).get("nodeName"):
            await self._assign(body)

    async def run_sweeper(self) -> None:
        """Every sweep interval: retry assignments and fail operations of dead nodes."""
        await self.ctx.nodes.refreshed.wait()
        await repeat(self.ctx.sweep_interval, self.sweep, "assignment sweep")

    async def sweep(self) -> None:
        """One pass over every active operation."""
        now = datetime.now(UTC)
        grace = self.ctx.node_grace_seconds
        metrics.set_overdue(overdue_by_namespace(self.ctx.index.all(), now, self.ctx.backoff_cap))
        for body in self.ctx.index.all():
            if (body.get("status") or {}).get("phase") not in ACTIVE:
                continue
            node = (body.get("spec") or {}).get("nodeName")
            if not node:
                judge = self.ctx.nodes.can_judge(now)
                if not await self._assign(body) and judge and _age(body, now) > grace:
                    await self._fail(body, "no node with a live agent matches this operation")
            # An operation cannot have waited longer than it exists: a new agent's Lease
            # may not have been read yet when its first operation arrives.
            elif min(self.ctx.nodes.down_for(node, now), _age(body, now)) > grace:
                await self._fail(
                    body,
                    f"node {node} has had no live imageops agent for more than "
                    f"{self.ctx.node_grace_seconds:.0f}s",
                )

    async def _assign(self, body: Body) -> bool:
        spec = body.get("spec") or {}
        node = await self._session_node(body) or self._least_busy(spec.get("nodeSelector") or {})
        if node is None:
            return False
        ref = ObjectRef.from_body(body, PLURAL)
        return await self.ctx.kube.patch_object(ref, {"spec": {"nodeName": node}})

    async def _session_node(self, body: Body) -> str | None:
        session = ((body.get("spec") or {}).get("sessionRef") or {}).get("name")
        if not session:
            return None
        obj = await self.ctx.kube.call(
            self.ctx.kube.sync.get_custom, body["metadata"]["namespace"], SESSION_PLURAL, session
        )
        node = ((obj or {}).get("spec") or {}).get("nodeName")
        return str(node) if node else None

    def _least_busy(self, selector: Mapping[str, str]) -> str | None:
        nodes = self.ctx.nodes.live_nodes(selector)
        if not nodes:
            return None
        load = Counter(
            (b.get("spec") or {}).get("nodeName")
            for b in self.ctx.index.all()
            if (b.get("status") or {}).get("phase") in ACTIVE
        )
        return min(nodes, key=lambda n: (load[n], n))

    async def _fail(self, body: Body, message: str) -> None:
        # The index may lag: read the operation now and leave it if it finished meanwhile.
        meta = body["metadata"]
        fresh = await self.ctx.kube.call(
            self.ctx.kube.sync.get_custom, meta["namespace"], PLURAL, meta["name"]
        )
        if fresh is None or (fresh.get("status") or {}).get("phase") not in ACTIVE:
            return
        body = fresh
        status = ImageOperationStatus.model_validate(body.get("status") or {})
        now = datetime.now(UTC)
        run = lifecycle.RunState(
            generation=int(body["metadata"].get("generation") or 1),
            node=status.node or (body.get("spec") or {}).get("nodeName") or "",
            job_id=status.job_id or uuid.uuid4().hex[:12],
            start_time=status.start_time or now,
            conditions=list(status.conditions),
            attempts=status.attempts,
        )
        error = OperationError(ErrorReason.NODE_UNAVAILABLE, message)
        ref = ObjectRef.from_body(body, PLURAL)
        if await self.ctx.kube.patch_status(ref, lifecycle.failed_patch(run, error, now)):
            action = str((body.get("spec") or {}).get("action") or "Unknown")
            metrics.count_finished(action, Phase.FAILED, str(error.reason))
            await self.ctx.kube.post_event(ref, "Warning", "Failed", f"NodeUnavailable: {message}")


def _age(body: Mapping[str, Any], now: datetime) -> float:
    created = body["metadata"].get("creationTimestamp")
    if not created:
        return 0.0
    when = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    return (now - when).total_seconds()
