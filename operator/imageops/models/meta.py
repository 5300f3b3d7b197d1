"""Typed object metadata, and status merge patches serialised from the status models.

Handlers validate a watched body's ``metadata`` into :class:`ObjectMeta` once, so
that workers read ``meta.generation`` instead of digging in dicts. Every status
patch is a status model serialised by :func:`merge_patch`: a misspelled field is a
validation error, never a key the API server silently prunes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from imageops.models.base import CamelModel


class OwnerReference(CamelModel):
    """metav1.OwnerReference: the object that owns this one (garbage collection)."""

    model_config = ConfigDict(extra="ignore")

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(CamelModel):
    """The metav1.ObjectMeta fields the operator reads (the rest is ignored)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    namespace: str = ""
    uid: str = ""
    # The API server sets it on every object of a CRD with a status subresource;
    # an object without one (a test fixture) counts as generation 1.
    generation: int = 1
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)
    deletion_timestamp: datetime | None = None


def merge_patch(status: CamelModel) -> dict[str, Any]:
    """The JSON merge patch of ``status``: exactly the fields set when it was built.

    A field set to None becomes ``null`` (the merge patch deletes it); a field not
    set is left out (the stored value stays). Inside a field's value (a list of
    conditions, the progress) nulls are dropped: a merge patch replaces those
    values whole, and a null there would be stored, not deleted.
    """
    # Nested values without their nulls; then exactly the set fields, None as null.
    wire = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    fields = type(status).model_fields
    keys = (fields[name].alias or name for name in status.model_fields_set)
    return {key: wire.get(key) for key in keys}


__all__ = ["ObjectMeta", "OwnerReference", "merge_patch"]
