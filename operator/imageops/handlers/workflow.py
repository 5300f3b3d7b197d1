"""kopf handler for Workflow: thin, it hands every event to the reconciler.

No finalizer, timer or daemon (each would put a finalizer on the object):
deadlines and TTLs run in the reconciler's sweeper, and a deletion is
handled from the DELETED event, so deleting a Workflow never hangs.
"""

from __future__ import annotations

from typing import Any

import kopf

from imageops.models.base import GROUP, VERSION
from imageops.models.workflow import PLURAL
from imageops.workers.workflows import WorkflowReconciler


def register(registry: kopf.OperatorRegistry, reconciler: WorkflowReconciler) -> None:
    """Route every Workflow event to ``reconciler``."""

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def workflow_event(event: kopf.RawEvent, **_: Any) -> None:
        await reconciler.observe(event.get("type"), event["object"])
