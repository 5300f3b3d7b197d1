"""Pydantic's JSON schema as the *structural* OpenAPI v3 schema a CRD needs.

``$ref``s are inlined, ``anyOf [X, null]`` collapsed to X, titles and null
defaults dropped, JSON-Schema-2020 spellings converted to OpenAPI 3.0 ones. The
``x-kubernetes-*`` extras the models carry are kept where the models put them.
Anything without a structural equivalent raises, so that a model change cannot
silently produce a CRD the API server rejects or misreads. imageops.models.crd
builds the CRDs from it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]

# Keys of apiextensions.k8s.io/v1 JSONSchemaProps that the converter passes through.
_PASSTHROUGH = frozenset(
    {
        "description",
        "type",
        "format",
        "enum",
        "default",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "required",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
    }
)
# Output order of schema keys, so the YAML reads top-down (unknown keys cannot occur).
_KEY_ORDER = [
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
]
# Output order of the keys of one x-kubernetes-validations rule.
_RULE_ORDER = ["rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"]
_NULL = {"type": "null"}
_RULES = "x-kubernetes-validations"
# Lists of these definitions get merge semantics keyed by the given fields (server-side apply).
_LIST_MAP_KEYS = {"Condition": ["type"]}


class SchemaError(ValueError):
    """A model uses a JSON-schema construct that has no structural OpenAPI equivalent."""


class _Converter:
    """Converts one pydantic JSON schema (with its ``$defs``) into a structural schema."""

    def __init__(self, defs: Mapping[str, Schema]) -> None:
        self._defs = defs

    def convert(self, node: Schema) -> Schema:
        """Return the structural form of ``node``."""
        node = self._flatten(node)
        list_keys = _list_map_keys(node)
        out: Schema = {}
        for key, value in node.items():
            self._convert_key(out, key, value)
        if list_keys:
            out["x-kubernetes-list-type"] = "map"
            out["x-kubernetes-list-map-keys"] = list_keys
        return {key: out[key] for key in _KEY_ORDER if key in out}

    def _convert_key(self, out: Schema, key: str, value: Any) -> None:
        if key in ("title", "propertyNames") or (key == "default" and value is None):
            # propertyNames: map keys are checked by the models only (a status map
            # keyed by an enum must not break when the enum grows).
            return
        if key == "properties":
            out[key] = {name: self.convert(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = self.convert(value)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = self.convert(value)
            elif value is not False:  # False: structural schemas prune unknown fields anyway
                raise SchemaError("additionalProperties: true is not structural")
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 gives the bound; OpenAPI 3.0 a flag next to minimum/maximum.
            out[key.removeprefix("exclusive").lower()] = value
            out[key] = True
        elif key == "x-kubernetes-validations":
            out[key] = [_ordered_rule(rule) for rule in value]
        elif key in _PASSTHROUGH:
            out[key] = value
        else:
            raise SchemaError(f"unsupported JSON-schema keyword {key!r}")

    def _flatten(self, node: Schema) -> Schema:
        """Merge ``$ref``, one-branch ``allOf`` and ``anyOf [X, null]`` into one schema.

        Keys next to the reference (a field's description or default) win over the
        referenced definition's.
        """
        while True:
            if "$ref" in node:
                target = self._defs[str(node["$ref"]).rsplit("/", 1)[-1]]
                node = _merge(target, _without(node, "$ref"))
                continue
            combinator = next((k for k in ("anyOf", "oneOf", "allOf") if k in node), None)
            if combinator is None:
                return node
            branches = [b for b in node[combinator] if b != _NULL]
            if len(branches) != 1:
                raise SchemaError(f"{combinator} with {len(branches)} non-null branches")
            node = _merge(branches[0], _without(node, combinator))


def _ordered_rule(rule: Schema) -> Schema:
    unknown = set(rule) - set(_RULE_ORDER)
    if unknown:
        raise SchemaError(f"unsupported keys in a validation rule: {sorted(unknown)}")
    return {key: rule[key] for key in _RULE_ORDER if key in rule}


def _merge(base: Schema, over: Schema) -> Schema:
    """``over``'s keys win, except that CEL rules of both (model and field) are kept."""
    merged = {**base, **over}
    rules = [*base.get(_RULES, []), *over.get(_RULES, [])]
    if rules:
        merged[_RULES] = rules
    return merged


def _without(node: Schema, key: str) -> Schema:
    return {k: v for k, v in node.items() if k != key}


def _list_map_keys(node: Schema) -> list[str] | None:
    """The list-map keys for an array of a known keyed definition, else None."""
    items = node.get("items")
    if node.get("type") != "array" or not isinstance(items, dict) or "$ref" not in items:
        return None
    return _LIST_MAP_KEYS.get(str(items["$ref"]).rsplit("/", 1)[-1])


def structural_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of ``model``, as a CRD's ``openAPIV3Schema`` needs."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    # A copy, so that no two places of a CRD share (and mutate) one list or dict.
    return copy.deepcopy(_Converter(defs).convert(raw))
