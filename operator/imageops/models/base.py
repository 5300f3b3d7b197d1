"""Base classes shared by every custom-resource model.

The models are the single source of truth for the CRDs: ``imageops crds``
turns their JSON schema (including the ``x-kubernetes-*`` extras given here)
into ``crds/*.yaml``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict, JsonValue

GROUP = "imageops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "imageops"


class CamelModel(BaseModel):
    """A model whose fields are camelCase on the wire and snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """Serialise to the camelCase dictionary the API server stores, without unset fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(rule: str, message: str, **extra: JsonValue) -> JsonDict:
    """Build one ``x-kubernetes-validations`` entry (a CEL rule the API server enforces)."""
    return {"rule": rule, "message": message, **extra}


def validations(*rules: JsonDict) -> JsonDict:
    """A ``json_schema_extra`` that puts CEL rules on a model's (or field's) schema."""
    return {"x-kubernetes-validations": [*rules]}
