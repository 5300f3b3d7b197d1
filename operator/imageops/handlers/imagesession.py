"""kopf handler for ImageSession: thin, it hands every event to the session tracker.

No finalizer, timer or daemon: expiry runs in the tracker's sweeper, and a
deletion is handled from the DELETED event, so deleting a session never hangs.
"""

from __future__ import annotations

from typing import Any

import kopf

from imageops.models.base import GROUP, VERSION
from imageops.models.imagesession import PLURAL
from imageops.workers.sessions import SessionTracker


def register(registry: kopf.OperatorRegistry, tracker: SessionTracker) -> None:
    """Route every ImageSession event to ``tracker``."""

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def imagesession_event(event: kopf.RawEvent, **_: Any) -> None:
        await tracker.observe(event.get("type"), event["object"])
