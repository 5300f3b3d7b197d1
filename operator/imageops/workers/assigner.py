"""Assigns ImageOperations created without ``spec.nodeName`` to a node.

In this version the candidate nodes are the ones the operator was told of
(``imageops run`` on a single machine assigns to its own node).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from imageops.adapters.kube import AsyncKube, ObjectRef
from imageops.models.imageoperation import PLURAL

log = logging.getLogger(__name__)


class Assigner:
    """Writes ``spec.nodeName`` on unassigned operations."""

    def __init__(self, kube: AsyncKube, candidates: Callable[[Mapping[str, str]], Sequence[str]]) -> None:
        self.kube = kube
        self.candidates = candidates

    async def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Assign the operation when it has no node yet."""
        spec = body.get("spec") or {}
        if event_type == "DELETED" or spec.get("nodeName") or body["metadata"].get("deletionTimestamp"):
            return
        nodes = self.candidates(spec.get("nodeSelector") or {})
        if not nodes:
            log.info("no node for %s/%s yet", body["metadata"]["namespace"], body["metadata"]["name"])
            return
        ref = ObjectRef.from_body(body, PLURAL)
        await self.kube.patch_object(ref, {"spec": {"nodeName": nodes[0]}})
