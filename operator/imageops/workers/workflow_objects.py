"""API calls of the Workflow controller beyond AsyncKube's: a status patch with a
version precondition, the workflow's own ImageSession, and deleting what it owned.

The test bed has no garbage collector, and a real cluster's may lag: what a
workflow owned is deleted explicitly, matched by owner uid so that objects of
a newer workflow of the same name are left alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from imageops.adapters.kube import MERGE_PATCH, AsyncKube, Kube, ObjectRef, custom_path
from imageops.models.base import API_VERSION
from imageops.models.imageoperation import PLURAL as OPERATIONS
from imageops.models.imagesession import KIND as SESSION_KIND
from imageops.models.imagesession import PLURAL as SESSIONS
from imageops.models.labels import WORKFLOW_LABEL
from imageops.services import dag, workflow_status
from imageops.services.workflow_run import RunContext

log = logging.getLogger(__name__)


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


async def cleanup(kube: AsyncKube, namespace: str, name: str, uid: str, session: bool) -> None:
    """Delete the ImageOperations (and with ``session``, the ImageSession) that the
    workflow ``uid`` owned."""
    selector = f"{WORKFLOW_LABEL}={dag.label_value(name)}"
    children = await kube.call(kube.sync.list_custom, namespace, OPERATIONS, selector)
    await delete_operations(
        kube,
        namespace,
        [str(c["metadata"]["name"]) for c in children if workflow_status.owned_by(c, uid)],
    )
    if session:
        obj = await kube.call(kube.sync.get_custom, namespace, SESSIONS, name)
        if obj is not None and workflow_status.owned_by(obj, uid):
            await kube.call(kube.sync.delete_custom, namespace, SESSIONS, name)


async def list_children(kube: AsyncKube, namespace: str, name: str) -> list[dict[str, Any]]:
    """The workflow's ImageOperations as the API server has them (not the index)."""
    selector = f"{WORKFLOW_LABEL}={dag.label_value(name)}"
    return await kube.call(kube.sync.list_custom, namespace, OPERATIONS, selector)


def api_message(exc: Exception) -> str:
    """The message of an API error's Status body, else the exception's text."""
    try:
        return str(json.loads(getattr(exc, "body", "") or "{}").get("message") or exc)
    except ValueError:
        return str(exc)
