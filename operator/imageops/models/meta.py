"""The typed object metadata every resource carries (the part of ObjectMeta we read).

Handlers validate a watch event's body once into a model with this metadata;
workers read ``obj.meta.generation`` instead of digging in dictionaries.
Unknown metadata fields (managedFields, finalizers, ...) are ignored.

Every status patch is a status model serialised by :func:`merge_patch`: a
misspelled field is a validation error, never a key the API server silently prunes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imageops.models.base import CamelModel

M = TypeVar("M", bound=BaseModel)


class OwnerReference(CamelModel):
    """One entry of metadata.ownerReferences."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(CamelModel):
    """metadata of a namespaced object, as the API server sends it."""

    model_config = ConfigDict(extra="ignore")

    name: str
    namespace: str = ""
    uid: str = ""
    generation: int = 1
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)
    deletion_timestamp: datetime | None = None
    creation_timestamp: datetime | None = None
    resource_version: str | None = None

    @field_validator("generation", mode="before")
    @classmethod
    def _generation(cls, value: Any) -> Any:
        # Absent (or 0) before the API server sets it: generation 1, as it would.
        return value or 1

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _no_map(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("owner_references", mode="before")
    @classmethod
    def _no_list(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name): how workers key their queues."""
        return self.namespace, self.name

    def owned_by(self, uid: str) -> bool:
        """Whether an owner reference points at ``uid``."""
        return any(ref.uid == uid for ref in self.owner_references)


def lenient(model: type[M], raw: Mapping[str, Any] | None) -> M:
    """``raw`` validated, ignoring the fields this version does not know; the model's
    defaults when the rest does not validate either.

    A newer controller may have written fields this one does not know: keep the rest.
    """
    known = {f.alias or n for n, f in model.model_fields.items()}
    try:
        return model.model_validate({k: v for k, v in (raw or {}).items() if k in known})
    except ValidationError:
        return model()


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
