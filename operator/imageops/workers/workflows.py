"""The Workflow controller: runs each workflow's steps as child ImageOperations.

Every Workflow event and every change of one of its children (through the
OperationIndex) adds the workflow's key to one :class:`WorkQueue`; its
reconcile is one idempotent pass (:mod:`imageops.workers.workflow_pass`):
read the children, plan (services.workflow_run), write the status delta,
then create and delete children. State lives only in the API server
(children and status), so a restarted controller carries on where the last
one stopped.

Time is requeue-afters, not a sweep: a pass returns when it wants the next
one — at the activeDeadlineSeconds, at the ttlSecondsAfterFinished, every
``ctx.sweep_interval`` while it waits for a node or its session (nothing
signals those), and every ``ctx.resync_interval`` as a safety net while it
runs (a missed child event cannot stall a run).

No finalizers, and no deleting of children here: every child and the
workflow's own ImageSession carry an owner reference to the workflow, so
deleting the Workflow (a user's, or ours at the TTL, with background
propagation) leaves them to the cluster's garbage collector
(kube-controller-manager; the test bed runs it too). Children of an earlier
generation are still deleted by the pass: that is the run's logic, not
garbage collection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from imageops.adapters.kube import ObjectRef
from imageops.models.workflow import PLURAL
from imageops.models.workflow_object import WorkflowObject
from imageops.services import workflow_status
from imageops.services.workflow_status import FINISHED
from imageops.workers.context import ControllerContext
from imageops.workers.opindex import workflow_of
from imageops.workers.queue import WorkQueue
from imageops.workers.workflow_pass import Key, Rejected, WorkflowPass

log = logging.getLogger(__name__)


class WorkflowReconciler:
    """Drives every Workflow the controller sees."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.workflows: dict[Key, WorkflowObject] = {}
        self.queue: WorkQueue[Key] = WorkQueue("workflows", self.reconcile, workers=ctx.workers)
        self._rejected: dict[Key, Rejected] = {}
        self._pass = WorkflowPass(ctx, self.workflows, self._rejected, self.queue.add)

    async def observe(self, event_type: str | None, wf: WorkflowObject) -> None:
        """Handle one watch event of a Workflow (validated by the handler)."""
        key = wf.meta.key
        if event_type == "DELETED":
            # Its children and session are the garbage collector's (owner references).
            self.workflows.pop(key, None)
            self._rejected.pop(key, None)
            self.queue.forget(key)
            return
        held = self.workflows.get(key)
        if workflow_status.is_older(held.meta if held else None, wf.meta, same=True):
            return  # an older version, or the one this controller's last write returned
        self.workflows[key] = wf
        self.queue.add(key)

    async def on_operation(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """OperationIndex listener: a child changed, so its workflow takes another pass."""
        name = workflow_of(body)
        if name is None:
            return
        key = (str(body["metadata"]["namespace"]), name)
        if key in self.workflows:
            self.queue.add(key)

    async def run(self) -> None:
        """Serve the queue until cancelled."""
        await self.queue.run()

    async def reconcile(self, key: Key) -> float | None:
        """One pass over one workflow; returns when the next one is due (None: on events only)."""
        wf = self.workflows.get(key)
        if wf is None:
            return None
        now = self.ctx.clock.now().replace(microsecond=0)
        status = wf.status
        if status.observed_generation == wf.meta.generation and status.phase in FINISHED:
            return await self._finished(key, wf, now)
        if wf.meta.deletion_timestamp is not None:
            return None
        return await self._pass.run(key, wf, now)

    async def _finished(self, key: Key, wf: WorkflowObject, now: datetime) -> float | None:
        """ttlSecondsAfterFinished: wait for it, then delete the workflow."""
        ttl, done = wf.ttl_seconds_after_finished, wf.status.completion_time
        if ttl is None or done is None:
            return None
        left = (done + timedelta(seconds=ttl) - now).total_seconds()
        if left > 0:
            return left
        log.info("deleting workflow %s/%s: ttlSecondsAfterFinished passed", *key)
        ref = ObjectRef(wf.api_version, wf.kind, PLURAL, key[0], key[1], wf.meta.uid)
        await self.ctx.kube.call(self.ctx.kube.sync.delete_custom, ref.namespace, PLURAL, ref.name)
        if self.workflows.get(key) is wf:
            self.workflows.pop(key, None)
            self.queue.forget(key)
        return None

    async def wait_idle(self) -> None:
        """Until no pass waits or runs (tests)."""
        await asyncio.sleep(0)
        await self.queue.wait_idle()
