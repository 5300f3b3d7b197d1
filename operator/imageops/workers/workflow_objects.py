"""API calls of the Workflow controller beyond AsyncKube's: a status patch with a
version precondition, the workflow's own ImageSession, and deleting children.

What a deleted workflow owned (its children and its own ImageSession) is the
garbage collector's: each carries an owner reference to the workflow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from imageops.adapters.kube import MERGE_PATCH, AsyncKube, Kube, ObjectRef, custom_path
from imageops.models.base import API_VERSION
from imageops.models.imageoperation import PLURAL as OPERATIONS
from imageops.models.imagesession import KIND as SESSION_KIND
from imageops.models.imagesession import PLURAL as SESSIONS
from imageops.models.labels import WORKFLOW_LABEL
from imageops.services import dag, workflow_status
from imageops.services.dag import ChildView
from imageops.services.workflow_run import RunContext

log = logging.getLogger(__name__)
# Children created at once: a fan-out step that finishes on 100 nodes starts 100
# children, and one create after the other made each wait for all the earlier
# round trips (seconds on a busy API server). Below the client's connection pool (10).
CREATE_CONCURRENCY = 8


def patch_status(
    sync: Kube, ref: ObjectRef, version: str | None, patch: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge-patch the status of ``version`` of the object (blocking).

    Returns the updated object, or None when the object is gone or no longer
    at that version (409: it changed, or was deleted and created again).
    """
    body: dict[str, Any] = {"status": patch}
    if version:
        body["metadata"] = {"resourceVersion": version}
    try:
        path = custom_path(ref.namespace, ref.plural, ref.name, "status")
        obj: Any = sync.request("PATCH", path, body, MERGE_PATCH)
    except Exception as exc:
        if getattr(exc, "status", None) in (404, 409):
            log.debug("status of %s/%s not written: %s", ref.namespace, ref.name, exc)
            return None
        raise
    return dict(obj)


async def delete_operations(kube: AsyncKube, namespace: str, names: Sequence[str]) -> None:
    """Delete ImageOperations by name (the ones already gone are fine)."""
    for name in names:
        await kube.call(kube.sync.delete_custom, namespace, OPERATIONS, name)


async def ensure_session(kube: AsyncKube, namespace: str, name: str, uid: str) -> None:
    """Create the workflow's own ImageSession (same name, owned by it) unless it exists."""
    owner = RunContext(namespace, name, uid, 0).owner()
    session = {
        "apiVersion": API_VERSION,
        "kind": SESSION_KIND,
        "metadata": {
            "name": name,
            "ownerReferences": [owner],
            "labels": {WORKFLOW_LABEL: dag.label_value(name)},
        },
        "spec": {},
    }
    await kube.call(kube.sync.create_custom, namespace, SESSIONS, session)


async def list_children(kube: AsyncKube, namespace: str, name: str) -> list[dict[str, Any]]:
    """The workflow's ImageOperations as the API server has them (not the index)."""
    selector = f"{WORKFLOW_LABEL}={dag.label_value(name)}"
    return await kube.call(kube.sync.list_custom, namespace, OPERATIONS, selector)


async def run_limited(
    calls: Sequence[Callable[[], Awaitable[None]]], limit: int = CREATE_CONCURRENCY
) -> None:
    """Await every call, at most ``limit`` at once; then raise the first failure, if any."""
    slots = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[None]]) -> None:
        async with slots:
            await call()

    results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class ChildViews:
    """Each child's ChildView, read once per version of the child, not once per pass.

    A pass over a 1,000-node fan-out reads 3,000 children; validating each
    status again on every pass was a third of the pass. Keyed by uid and
    resourceVersion: a new version is read again. Entries of children no pass
    has asked for lately are dropped (kept: those of the last ``keep`` lookups).
    """

    def __init__(self, keep: int = 50_000) -> None:
        self.keep = keep
        self._views: dict[str, tuple[str, ChildView | None]] = {}

    def of(self, children: Sequence[Mapping[str, Any]]) -> list[ChildView]:
        """The views of the children that a run can use (see workflow_status.child_view)."""
        if len(self._views) > self.keep:
            self._views.clear()
        views = []
        for body in children:
            meta = body["metadata"]
            uid, version = str(meta.get("uid")), str(meta.get("resourceVersion"))
            held = self._views.get(uid)
            if held is None or held[0] != version or not version:
                held = (version, workflow_status.child_view(body))
                self._views[uid] = held
            if held[1] is not None:
                views.append(held[1])
        return views


class RecentCreates:
    """Children created moments ago, which the controller's index may not show yet.

    A pass right after another one (its own status write's watch event, or a
    sibling's) would otherwise create them again: harmless (409) but one more
    write to the API server per child. Forgotten after ``ttl`` seconds, so a
    child deleted meanwhile by someone else is created again then.
    """

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._at: dict[tuple[str, str], float] = {}
        self._prune_at = 1000  # size that triggers the next clean-up (doubles with the memo)

    @staticmethod
    def _key(body: Mapping[str, Any]) -> tuple[str, str]:
        meta = body["metadata"]
        return str(meta["namespace"]), str(meta["name"])

    def fresh(self, body: Mapping[str, Any]) -> bool:
        """Whether this child was created less than ``ttl`` seconds ago."""
        at = self._at.get(self._key(body))
        return at is not None and time.monotonic() - at < self.ttl

    def add(self, body: Mapping[str, Any]) -> None:
        """Record a creation (and forget the expired ones, so the memo stays small)."""
        now = time.monotonic()
        if len(self._at) > self._prune_at:
            self._at = {k: t for k, t in self._at.items() if now - t < self.ttl}
            self._prune_at = max(1000, 2 * len(self._at))  # not again at every add
        self._at[self._key(body)] = now


def api_message(exc: Exception) -> str:
    """The message of an API error's Status body, else the exception's text."""
    try:
        return str(json.loads(getattr(exc, "body", "") or "{}").get("message") or exc)
    except ValueError:
        return str(exc)
