"""The archive of an ImageSession's history (preserveLogs): a ConfigMap document.

Written when a session with ``preserveLogs`` expires or is deleted, before
anything of it is deleted, so that its statistics, recent executions and
errors outlive it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imageops.models.imagesession import ImageSessionSpec, ImageSessionStatus
from imageops.services.session_stats import seconds

ARCHIVE_KEY = "history.json"
ARCHIVE_SUFFIX = "-history"


def archive_name(session: str) -> str:
    """The ConfigMap that keeps a session's history: ``<session>-history``."""
    if len(session) + len(ARCHIVE_SUFFIX) <= 253:
        return session + ARCHIVE_SUFFIX
    return session  # already at the name length limit: the session's own name


def build_archive(
    namespace: str,
    name: str,
    uid: str,
    spec: ImageSessionSpec,
    status: ImageSessionStatus,
    reason: str,
    now: datetime,
) -> dict[str, Any]:
    """The document archived for preserveLogs: spec, statistics, executions and errors."""
    history = status.model_copy(deep=True)
    history.recorded = None
    history.archived_to = None
    kept = history.to_wire()
    kept.pop("conditions", None)
    return {
        "apiVersion": "imageops.dev/v1alpha1",
        "kind": "ImageSessionHistory",
        "session": {"namespace": namespace, "name": name, "uid": uid},
        "reason": reason,
        "archivedAt": (seconds(now) or now).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "spec": spec.to_wire(),
        "status": kept,
    }
