"""The controller's in-memory index of ImageOperations.

Fed by the controller's watch of every ImageOperation; workflows and
sessions look their operations up here instead of listing the API server,
and subscribe to be told when one of theirs changes.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from imageops.models.labels import WORKFLOW_LABEL
from imageops.models.meta import ObjectMeta
from imageops.services import placement

log = logging.getLogger(__name__)


# ImageOperation bodies stay raw here: the typed ImageOperation is the agent's side
# of the redesign (models.imageoperation); the index hands on what kopf delivered.
Listener = Callable[[str | None, Mapping[str, Any]], Awaitable[None]]
Key = tuple[str, str]  # (namespace, name)


def session_of(body: Mapping[str, Any]) -> str | None:
    """The ImageSession an operation belongs to (spec.sessionRef), if any."""
    ref = (body.get("spec") or {}).get("sessionRef") or {}
    name = ref.get("name")
    return str(name) if name else None


def lean(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without metadata.managedFields, which nothing here reads.

    It is about half of an operation's body: at 3,000 children of a 1,000-node
    fan-out the index held ~25 MiB of it.
    """
    meta = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
    return {**body, "metadata": meta}


def workflow_of(body: Mapping[str, Any]) -> str | None:
    """The Workflow that created an operation (its label), if any."""
    labels = body.get("metadata", {}).get("labels") or {}
    name = labels.get(WORKFLOW_LABEL)
    return str(name) if name else None


@dataclass(frozen=True)
class OperationView:
    """What the controller's workers read of an ImageOperation, parsed once per event."""

    meta: ObjectMeta
    node: str | None
    phase: str | None
    session: str | None
    selector: Mapping[str, str]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> OperationView:
        """Read one watch event's body."""
        spec, status = body.get("spec") or {}, body.get("status") or {}
        node, phase = spec.get("nodeName"), status.get("phase")
        return cls(
            meta=ObjectMeta.model_validate(body["metadata"]),
            node=str(node) if node else None,
            phase=str(phase) if phase else None,
            session=session_of(body),
            selector=dict(spec.get("nodeSelector") or {}),
        )

    @property
    def active(self) -> bool:
        """Pending or running (what the placement policy counts as load)."""
        return self.phase in placement.ACTIVE_PHASES


class OperationIndex:
    """Latest body of every ImageOperation, by uid, workflow and session."""

    def __init__(self) -> None:
        self._bodies: dict[str, Mapping[str, Any]] = {}
        self._views: dict[str, OperationView] = {}
        self._by_workflow: dict[Key, set[str]] = defaultdict(set)
        self._by_session: dict[Key, set[str]] = defaultdict(set)
        self._listeners: list[Listener] = []

    def __len__(self) -> int:
        return len(self._bodies)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event_type, body)`` after each indexed event."""
        self._listeners.append(listener)

    async def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Index one watch event, then tell the listeners."""
        self._update(event_type, body)
        for listener in self._listeners:
            try:
                await listener(event_type, body)
            except Exception:
                # One listener's bug must not stop the others from seeing the event.
                log.exception("listener failed on %s", body.get("metadata", {}).get("name"))

    def _update(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        uid, ns = meta["uid"], meta["namespace"]
        wf, session = workflow_of(body), session_of(body)
        if event_type == "DELETED":
            self._bodies.pop(uid, None)
            self._views.pop(uid, None)
            if wf:
                self._by_workflow[ns, wf].discard(uid)
            if session:
                self._by_session[ns, session].discard(uid)
            return
        self._bodies[uid] = lean(body)
        self._views[uid] = OperationView.from_body(body)
        if wf:
            self._by_workflow[ns, wf].add(uid)
        if session:
            self._by_session[ns, session].add(uid)

    def get(self, uid: str) -> Mapping[str, Any] | None:
        """The latest body of one operation."""
        return self._bodies.get(uid)

    def by_workflow(self, namespace: str, name: str) -> list[Mapping[str, Any]]:
        """Operations created for a Workflow (label imageops.dev/workflow)."""
        return self._collect(self._by_workflow.get((namespace, name), set()))

    def by_session(self, namespace: str, name: str) -> list[Mapping[str, Any]]:
        """Operations whose spec.sessionRef names the session."""
        return self._collect(self._by_session.get((namespace, name), set()))

    def all(self) -> list[Mapping[str, Any]]:
        """Every indexed operation."""
        return list(self._bodies.values())

    def view(self, uid: str) -> OperationView | None:
        """The typed view of one operation."""
        return self._views.get(uid)

    def views(self) -> list[OperationView]:
        """The typed view of every indexed operation."""
        return list(self._views.values())

    def node_load(self) -> Counter[str]:
        """Pending or running operations per node (for services.placement)."""
        return placement.node_load((v.node, v.phase) for v in self._views.values())

    def _collect(self, uids: set[str]) -> list[Mapping[str, Any]]:
        return [self._bodies[u] for u in sorted(uids) if u in self._bodies]
