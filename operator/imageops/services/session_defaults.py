"""What an ImageSession's spec gives the operations that join it.

``merge_defaults`` works on the wire form (camelCase dict) of an operation's
spec: the operation's own values win, the session fills the gaps.
:mod:`imageops.services.effective` does the same on the models for the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imageops.models.imagesession import ImageSessionSpec


def merge_defaults(op_spec: Mapping[str, Any], session_spec: ImageSessionSpec) -> dict[str, Any]:
    """``op_spec`` with nodeName, credentials, backoffLimit and timeoutSeconds from the session.

    Only fields the operation leaves unset (absent or null) are filled in.
    """
    defaults: dict[str, Any] = {
        "nodeName": session_spec.node_name,
        "credentials": session_spec.credentials.to_wire() if session_spec.credentials else None,
        "backoffLimit": session_spec.backoff_limit,
        "timeoutSeconds": session_spec.timeout_seconds,
    }
    merged = dict(op_spec)
    for key, value in defaults.items():
        if merged.get(key) is None and value is not None:
            merged[key] = value
    return merged


def allowed_registries(session_spec: ImageSessionSpec) -> list[str]:
    """Registries the session's operations may use; an empty list allows every registry."""
    return list(session_spec.allowed_registries or [])
