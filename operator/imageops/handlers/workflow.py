"""kopf handler for Workflow: validates the body once and hands it to the reconciler.

No finalizer, timer or daemon (each would put a finalizer on the object):
deadlines and TTLs are requeue-afters of the reconciler's work queue, and a
deletion leaves the children to the garbage collector (owner references),
so deleting a Workflow never hangs.
"""

from __future__ import annotations

from typing import Any

import kopf

from imageops.models.base import GROUP, VERSION
from imageops.models.workflow import PLURAL
from imageops.models.workflow_object import WorkflowObject
from imageops.workers.workflows import WorkflowReconciler


def register(registry: kopf.OperatorRegistry, reconciler: WorkflowReconciler) -> None:
    """Route every Workflow event to ``reconciler``."""

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def workflow_event(event: kopf.RawEvent, **_: Any) -> None:
        await reconciler.observe(event.get("type"), WorkflowObject.from_body(event["object"]))
