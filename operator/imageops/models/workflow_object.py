"""A Workflow as the controller's workers take it: validated once, at the kopf edge.

Unlike :class:`imageops.models.workflow.Workflow` (the CRD's shape), a spec
that does not validate is kept as the reason it does not (``spec_error``):
the reconciler reports it in the status (InvalidWorkflow) instead of
dropping the event. The stored status is parsed leniently and kept raw too,
because status writes are merge-patch deltas against what is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from imageops.models.base import API_VERSION
from imageops.models.common import Phase
from imageops.models.meta import ObjectMeta
from imageops.models.workflow import KIND, WorkflowSpec, WorkflowStatus


@dataclass(frozen=True)
class WorkflowObject:
    """One version of a Workflow: typed metadata, spec (or why not) and status."""

    meta: ObjectMeta
    spec: WorkflowSpec | None
    spec_error: str | None
    status: WorkflowStatus
    raw_status: Mapping[str, Any] = field(default_factory=dict)
    api_version: str = API_VERSION
    kind: str = KIND

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WorkflowObject:
        """Validate a watch event's (or a read's) body."""
        raw_status: Mapping[str, Any] = body.get("status") or {}
        spec: WorkflowSpec | None = None
        error: str | None = None
        try:
            spec = WorkflowSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            error = str(exc)
        return cls(
            meta=ObjectMeta.model_validate(body["metadata"]),
            spec=spec,
            spec_error=error,
            status=parse_status(raw_status),
            raw_status=dict(raw_status),
            api_version=str(body.get("apiVersion") or API_VERSION),
            kind=str(body.get("kind") or KIND),
        )

    @property
    def ttl_seconds_after_finished(self) -> int | None:
        """spec.ttlSecondsAfterFinished, when the spec is valid."""
        return self.spec.ttl_seconds_after_finished if self.spec else None

    @property
    def creates_session(self) -> bool:
        """spec.createSession: the workflow owns an ImageSession of its name."""
        return bool(self.spec and self.spec.create_session)


def parse_status(raw: Mapping[str, Any]) -> WorkflowStatus:
    """A stored status; when it does not validate, only its generation and phase.

    Keeping those two is what matters: they decide whether the run is
    current and finished, so that an odd status never makes a run start again.
    """
    try:
        return WorkflowStatus.model_validate(raw)
    except ValueError:
        generation = raw.get("observedGeneration")
        phase = raw.get("phase")
        return WorkflowStatus(
            observed_generation=generation if isinstance(generation, int) else None,
            phase=Phase(phase) if phase in {p.value for p in Phase} else None,
        )
