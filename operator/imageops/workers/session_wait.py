"""Fail closed on a missing ImageSession: wait for it, bounded, never run without it.

An operation whose ``sessionRef`` names no ImageSession must not run without the
session's policy (allowedRegistries, credentials, defaults): a typo would turn a
policy boundary off. GitOps may apply the session after its operations, so the
run waits for it (Pending, reason SessionNotFound) up to a bound, then fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from imageops.adapters.kube import AsyncKube, ObjectRef
from imageops.models.common import ErrorReason
from imageops.models.imagesession import PLURAL as SESSION_PLURAL
from imageops.models.imagesession import ImageSessionSpec
from imageops.services import clock
from imageops.services.errors import OperationError


async def wait_for_session(
    kube: AsyncKube,
    ref: ObjectRef,
    name: str,
    since: datetime,
    limit: float,
    poll: float,
    waiting: Callable[[str], Awaitable[None]],
    found: Callable[[], Awaitable[None]],
) -> ImageSessionSpec:
    """The session ``name`` of ``ref``'s namespace, once it exists.

    ``waiting(message)`` runs once when the session is first found missing and
    ``found()`` when it then appears; after ``limit`` seconds from ``since`` the
    wait ends with OperationError(SessionNotFound).
    """
    missed = False
    while True:
        body = await kube.retrying(
            lambda: kube.call(kube.sync.get_custom, ref.namespace, SESSION_PLURAL, name),
            f"read ImageSession {ref.namespace}/{name}",
        )
        if body is not None:
            if missed:
                await found()
            return ImageSessionSpec.model_validate(body.get("spec") or {})
        waited = (clock.now() - since).total_seconds()
        missing = f"ImageSession {name} not found in namespace {ref.namespace}"
        if waited >= limit:
            raise OperationError(ErrorReason.SESSION_NOT_FOUND, f"{missing} (waited {limit:.0f}s)")
        if not missed:
            missed = True
            await waiting(f"{missing}; waiting up to {limit:.0f}s for it")
        await asyncio.sleep(min(poll, max(limit - waited, 0.05)))
