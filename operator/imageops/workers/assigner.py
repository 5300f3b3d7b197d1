"""Assignment of ImageOperations to nodes, and failure when a node's agent is gone.

An operation created without ``spec.nodeName`` goes where the placement
policy (services.placement) puts it: its session's node, else the least
busy node with a live agent that matches its ``nodeSelector``. An operation
whose node has had no live agent for longer than the grace period fails with
``NodeUnavailable``; an unassigned one that finds no node in that time fails
the same way: nothing waits for ever.

Every decision is a reconcile of one operation (keyed by uid) on a
:class:`WorkQueue`: a new unassigned operation is added by its event, and
one that finds no node asks again after ``sweep_interval``. Node liveness
has no event of its own (the NodeDirectory polls the Leases), so one
periodic check, in memory and without API calls, adds the operations of
nodes gone for longer than the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from imageops.adapters import metrics
from imageops.adapters.kube import ObjectRef
from imageops.models.common import ErrorReason, Phase
from imageops.models.imageoperation import PLURAL, ImageOperationStatus
from imageops.models.imagesession import PLURAL as SESSION_PLURAL
from imageops.services import lifecycle, placement
from imageops.services.errors import OperationError
from imageops.services.overdue import overdue_by_namespace
from imageops.services.placement import ACTIVE_PHASES
from imageops.workers.context import ControllerContext, repeat
from imageops.workers.queue import WorkQueue

log = logging.getLogger(__name__)


class Assigner:
    """Gives unassigned operations a node; fails operations stranded on a dead node."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.queue: WorkQueue[str] = WorkQueue("assigner", self.reconcile, workers=ctx.workers)

    async def on_operation(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Queue a new unassigned operation for assignment."""
        meta = body["metadata"]
        if event_type == "DELETED":
            self.queue.forget(str(meta["uid"]))
        elif not meta.get("deletionTimestamp") and not (body.get("spec") or {}).get("nodeName"):
            self.queue.add(str(meta["uid"]))

    async def run(self) -> None:
        """Serve the queue and, once the node directory is read, check nodes periodically."""
        await asyncio.gather(self.queue.run(), self._check_forever())

    async def _check_forever(self) -> None:
        await self.ctx.nodes.refreshed.wait()
        await repeat(self.ctx.sweep_interval, self.check_nodes, "node check")

    async def check_nodes(self) -> None:
        """Queue every active operation whose node has been gone past the grace period."""
        now = self.ctx.clock.now()
        metrics.set_overdue(overdue_by_namespace(self.ctx.index.all(), now, self.ctx.backoff_cap))
        for body in self.ctx.index.all():
            node = (body.get("spec") or {}).get("nodeName")
            if node and _active(body) and self._stranded(str(node), body, now):
                self.queue.add(str(body["metadata"]["uid"]))

    def _stranded(self, node: str, body: Mapping[str, Any], now: datetime) -> bool:
        # An operation cannot have waited longer than it exists: a new agent's Lease
        # may not have been read yet when its first operation arrives.
        grace = self.ctx.node_grace_seconds
        return min(self.ctx.nodes.down_for(node, now), _age(body, now)) > grace

    async def reconcile(self, uid: str) -> float | None:
        """Assign one operation, or fail it; the delay of the next try, if any."""
        body = self.ctx.index.get(uid)
        if body is None or body["metadata"].get("deletionTimestamp") or not _active(body):
            return None
        now = self.ctx.clock.now()
        node = (body.get("spec") or {}).get("nodeName")
        if node:
            if self._stranded(str(node), body, now):
                await self._fail(
                    body,
                    f"node {node} has had no live imageops agent for more than "
                    f"{self.ctx.node_grace_seconds:.0f}s",
                )
            return None
        if await self._assign(body):
            return None
        judge = self.ctx.nodes.can_judge(now)
        if judge and _age(body, now) > self.ctx.node_grace_seconds:
            await self._fail(body, "no node with a live agent matches this operation")
            return None
        return self.ctx.sweep_interval

    async def _assign(self, body: Mapping[str, Any]) -> bool:
        spec = body.get("spec") or {}
        request = placement.Request(session_node=await self._session_node(body))
        live = (
            []
            if request.session_node
            else self.ctx.nodes.live_nodes(spec.get("nodeSelector") or {})
        )
        node = placement.place_operation(request, live, self.ctx.index.node_load())
        if node is None:
            return False
        ref = ObjectRef.from_body(body, PLURAL)
        return await self.ctx.kube.patch_object(ref, {"spec": {"nodeName": node}})

    async def _session_node(self, body: Mapping[str, Any]) -> str | None:
        session = ((body.get("spec") or {}).get("sessionRef") or {}).get("name")
        if not session:
            return None
        obj = await self.ctx.kube.call(
            self.ctx.kube.sync.get_custom, body["metadata"]["namespace"], SESSION_PLURAL, session
        )
        node = ((obj or {}).get("spec") or {}).get("nodeName")
        return str(node) if node else None

    async def _fail(self, body: Mapping[str, Any], message: str) -> None:
        # The index may lag: read the operation now and leave it if it finished meanwhile.
        meta = body["metadata"]
        fresh = await self.ctx.kube.call(
            self.ctx.kube.sync.get_custom, meta["namespace"], PLURAL, meta["name"]
        )
        if fresh is None or not _active(fresh):
            return
        body = fresh
        status = ImageOperationStatus.model_validate(body.get("status") or {})
        now = self.ctx.clock.now()
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


def _active(body: Mapping[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") in ACTIVE_PHASES


def _age(body: Mapping[str, Any], now: datetime) -> float:
    created = body["metadata"].get("creationTimestamp")
    if not created:
        return 0.0
    when = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    return (now - when).total_seconds()
