"""kopf handler for ImageSession: validates the body once and hands it to the tracker.

No finalizer, timer or daemon: expiry is a requeue-after of the tracker's
work queue, and a deletion is handled from the DELETED event, so deleting a
session never hangs.
"""

from __future__ import annotations

from typing import Any

import kopf

from imageops.models.base import GROUP, VERSION
from imageops.models.imagesession import PLURAL, ImageSession
from imageops.workers.sessions import SessionTracker


def register(registry: kopf.OperatorRegistry, tracker: SessionTracker) -> None:
    """Route every ImageSession event to ``tracker``."""

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def imagesession_event(event: kopf.RawEvent, **_: Any) -> None:
        await tracker.observe(event.get("type"), ImageSession.from_body(event["object"]))
