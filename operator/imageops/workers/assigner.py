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
from imageops.models.base import API_VERSION
from imageops.models.common import ErrorReason, Phase
from imageops.models.imageoperation import KIND, PLURAL, ImageOperationStatus
from imageops.models.imagesession import PLURAL as SESSION_PLURAL
from imageops.models.imagesession import ImageSession
from imageops.services import lifecycle, placement
from imageops.services.errors import OperationError
from imageops.services.overdue import overdue_by_namespace
from imageops.workers.context import ControllerContext, repeat
from imageops.workers.opindex import OperationView
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
        for op in self.ctx.index.views():
            if op.node and op.active and self._stranded(op.node, op, now):
                self.queue.add(op.meta.uid)

    def _stranded(self, node: str, op: OperationView, now: datetime) -> bool:
        # An operation cannot have waited longer than it exists: a new agent's Lease
        # may not have been read yet when its first operation arrives.
        grace = self.ctx.node_grace_seconds
        return min(self.ctx.nodes.down_for(node, now), _age(op, now)) > grace

    async def reconcile(self, uid: str) -> float | None:
        """Assign one operation, or fail it; the delay of the next try, if any."""
        op = self.ctx.index.view(uid)
        if op is None or op.meta.deletion_timestamp is not None or not op.active:
            return None
        now = self.ctx.clock.now()
        if op.node:
            if self._stranded(op.node, op, now):
                await self._fail(
                    op,
                    f"node {op.node} has had no live imageops agent for more than "
                    f"{self.ctx.node_grace_seconds:.0f}s",
                )
            return None
        if await self._assign(op):
            return None
        judge = self.ctx.nodes.can_judge(now)
        if judge and _age(op, now) > self.ctx.node_grace_seconds:
            await self._fail(op, "no node with a live agent matches this operation")
            return None
        return self.ctx.sweep_interval

    async def _assign(self, op: OperationView) -> bool:
        request = placement.Request(session_node=await self._session_node(op))
        live = [] if request.session_node else self.ctx.nodes.live_nodes(op.selector)
        node = placement.place_operation(request, live, self.ctx.index.node_load())
        if node is None:
            return False
        return await self.ctx.kube.patch_object(_ref(op), {"spec": {"nodeName": node}})

    async def _session_node(self, op: OperationView) -> str | None:
        if not op.session:
            return None
        obj = await self.ctx.kube.call(
            self.ctx.kube.sync.get_custom, op.meta.namespace, SESSION_PLURAL, op.session
        )
        if obj is None:
            return None
        return ImageSession.from_body(obj).spec.node_name

    async def _fail(self, op: OperationView, message: str) -> None:
        # The index may lag: read the operation now and leave it if it finished meanwhile.
        body = await self.ctx.kube.call(
            self.ctx.kube.sync.get_custom, op.meta.namespace, PLURAL, op.meta.name
        )
        if body is None or not OperationView.from_body(body).active:
            return
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


def _ref(op: OperationView) -> ObjectRef:
    return ObjectRef(API_VERSION, KIND, PLURAL, op.meta.namespace, op.meta.name, op.meta.uid)


def _age(op: OperationView, now: datetime) -> float:
    created = op.meta.creation_timestamp
    return 0.0 if created is None else (now - created).total_seconds()
