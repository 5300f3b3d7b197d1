"""The generated CRDs: in sync with the models, structural, and carrying what kubectl shows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ConfigDict, Field

from imageops.models.base import CamelModel, cel, validations
from imageops.models.crd import (
    HEADER,
    RESOURCES,
    SchemaError,
    build_crd,
    render_crds,
    structural_schema,
    write_crds,
)

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"
KINDS = sorted(RESOURCES)


def _root(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below ``schema`` with its path."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _keys(value: Any) -> Iterator[str]:
    """Every mapping key anywhere in ``value``."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield key
            yield from _keys(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from _keys(sub)


def _rules(schema: dict[str, Any]) -> list[str]:
    return [rule["rule"] for rule in schema.get("x-kubernetes-validations", [])]


def test_committed_crds_match_the_models() -> None:
    rendered = render_crds()
    committed = {path.name: path.read_text(encoding="utf-8") for path in CRDS_DIR.glob("*.yaml")}
    assert committed == rendered, "crds/ is stale: run `make crds` and commit the result"


def test_files_are_named_by_group_and_plural_and_carry_the_header() -> None:
    rendered = render_crds()
    assert list(rendered) == [
        "imageops.dev_imageoperations.yaml",
        "imageops.dev_imagesessions.yaml",
        "imageops.dev_workflows.yaml",
    ]
    for text in rendered.values():
        assert text.startswith(HEADER)
        assert "&id" not in text and "*id" not in text  # no YAML aliases
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


def test_render_is_stable() -> None:
    assert render_crds() == render_crds()


@pytest.mark.parametrize("kind", KINDS)
def test_names_scope_and_version(kind: str) -> None:
    crd = build_crd(kind)
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.imageops.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["categories"] == ["imageops"]
    assert spec["names"]["shortNames"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    root = _root(kind)
    forbidden = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "propertyNames"}
    assert not forbidden & set(_keys(root))
    for path, node in _walk(root):
        assert "type" in node, f"{kind}{path} has no type"
        assert node.get("additionalProperties") is not False, f"{kind}{path}"
        assert "default" not in node or node["default"] is not None, f"{kind}{path}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_is_described(kind: str) -> None:
    missing = [
        path
        for path, node in _walk(_root(kind))
        if path
        and path != ".metadata"
        and not node.get("description")
        and not path.endswith(("[]", "{}"))
    ]
    assert not missing, f"{kind}: fields without description: {missing}"


@pytest.mark.parametrize("kind", ["Workflow", "ImageSession"])
def test_strings_lists_and_maps_are_bounded(kind: str) -> None:
    unbounded = []
    for path, node in _walk(_root(kind)):
        bound = {
            "string": ("maxLength", "enum", "format"),
            "array": ("maxItems",),
            "object": ("maxProperties",),
        }.get(node["type"])
        is_map = node["type"] == "object" and "additionalProperties" in node
        if bound and (node["type"] != "object" or is_map) and not set(bound) & set(node):
            unbounded.append(path)
    unbounded = [p for p in unbounded if p not in (".apiVersion", ".kind")]
    assert not unbounded, f"{kind}: unbounded: {unbounded}"


def test_spec_is_required_for_operations_and_workflows_only() -> None:
    assert _root("ImageOperation")["required"] == ["spec"]
    assert _root("Workflow")["required"] == ["spec"]
    session = _root("ImageSession")
    assert "required" not in session
    assert session["properties"]["spec"]["default"] == {}


def test_defaults_reach_the_schema() -> None:
    op = _root("ImageOperation")["properties"]["spec"]["properties"]
    assert {k: op[k]["default"] for k in ("force", "dryRun")} == {"force": False, "dryRun": False}
    # Unset, they come from the operation's ImageSession, else 3 and 600 (services.effective).
    assert "default" not in op["backoffLimit"] and "default" not in op["timeoutSeconds"]
    wf = _root("Workflow")["properties"]["spec"]["properties"]
    assert wf["failFast"]["default"] is True
    assert wf["parallelism"]["default"] == 1
    assert wf["allNodes"]["default"] is False
    assert wf["onFailure"]["default"] == "None"
    step = wf["steps"]["items"]["properties"]
    assert "default" not in step["backoffLimit"]  # inherited from spec.defaults when unset
    session = _root("ImageSession")["properties"]["spec"]["properties"]
    assert session["historyLimit"] == {
        "description": session["historyLimit"]["description"],
        "type": "integer",
        "default": 50,
        "minimum": 1,
        "maximum": 500,
    }


def test_datetimes_are_date_time_strings() -> None:
    status = _root("ImageOperation")["properties"]["status"]["properties"]
    assert status["startTime"]["type"] == "string"
    assert status["startTime"]["format"] == "date-time"


@pytest.mark.parametrize("kind", KINDS)
def test_conditions_merge_by_type(kind: str) -> None:
    conditions = _root(kind)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


def test_string_maps_keep_their_value_schema() -> None:
    selector = _root("ImageOperation")["properties"]["spec"]["properties"]["nodeSelector"]
    assert selector == {
        "description": selector["description"],
        "type": "object",
        "additionalProperties": {"type": "string"},
    }


def test_printer_columns_and_selectable_fields() -> None:
    def columns(kind: str) -> dict[str, str]:
        version = build_crd(kind)["spec"]["versions"][0]
        return {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}

    assert columns("ImageOperation") == {
        "Phase": ".status.phase",
        "Action": ".spec.action",
        "Image": ".spec.image",
        "Node": ".status.node",
        "Digest": ".status.shortDigest",
        "Progress": ".status.progress.summary",
        "Attempts": ".status.attempts",
        "Age": ".metadata.creationTimestamp",
    }
    assert columns("Workflow") == {
        "Phase": ".status.phase",
        "Progress": ".status.progress",
        "Nodes": ".status.nodesProgress",
        "Node": ".status.node",
        "Age": ".metadata.creationTimestamp",
    }
    assert columns("ImageSession") == {
        "Phase": ".status.phase",
        "Active": ".status.jobs.active",
        "Succeeded": ".status.jobs.succeeded",
        "Failed": ".status.jobs.failed",
        "Age": ".metadata.creationTimestamp",
    }
    op = build_crd("ImageOperation")["spec"]["versions"][0]
    assert op["selectableFields"] == [{"jsonPath": ".spec.nodeName"}]
    attempts = next(c for c in op["additionalPrinterColumns"] if c["name"] == "Attempts")
    assert (attempts["type"], attempts["priority"]) == ("integer", 1)


def test_cel_rules_sit_where_the_models_put_them() -> None:
    op_spec = _root("ImageOperation")["properties"]["spec"]
    assert "self.action != 'Tag' || has(self.target)" in _rules(op_spec)
    immutable = op_spec["x-kubernetes-validations"][-1]
    assert "oldSelf.nodeName" in immutable["rule"]
    assert immutable["optionalOldSelf"] is False

    wf_spec = _root("Workflow")["properties"]["spec"]
    assert "self.steps.all(s, self.steps.exists_one(t, t.name == s.name))" in _rules(wf_spec)
    assert any("dependsOn.all" in r for r in _rules(wf_spec))
    assert any("allNodes" in r and "nodeSelector" in r for r in _rules(wf_spec))
    step = wf_spec["properties"]["steps"]["items"]
    assert "has(self.image) != has(self.imageFrom)" in _rules(step)
    assert "self.action != 'Tag' || has(self.target)" in _rules(step)
    for rule in step["x-kubernetes-validations"]:
        assert rule["messageExpression"].startswith('"step " + self.name')
        assert list(rule)[:2] == ["rule", "message"]


def test_write_crds_writes_every_file_and_removes_stale_ones(tmp_path: Path) -> None:
    stale = tmp_path / "imageops.dev_gone.yaml"
    stale.write_text("old")
    unrelated = tmp_path / "other.yaml"
    unrelated.write_text("keep")
    paths = write_crds(tmp_path / ".")
    assert sorted(p.name for p in paths) == sorted(render_crds())
    assert not stale.exists() and unrelated.exists()
    assert paths[0].read_text(encoding="utf-8") == render_crds()[paths[0].name]


class _Bounds(CamelModel):
    """Fixture model for the converter."""

    ratio: float = Field(gt=0, lt=1, description="Exclusive bounds.")
    fixed: str = Field(default="x", json_schema_extra={"const": "x"}, description="A constant.")


class _Union(CamelModel):
    """Fixture model with a non-structural union."""

    value: int | str = Field(description="Either.")


def test_converter_translates_json_schema_2020_to_openapi_3_0() -> None:
    props = structural_schema(_Bounds)["properties"]
    assert props["ratio"] == {
        "description": "Exclusive bounds.",
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "exclusiveMaximum": True,
    }
    assert props["fixed"]["enum"] == ["x"]


def test_converter_refuses_non_structural_unions() -> None:
    with pytest.raises(SchemaError, match="anyOf with 2"):
        structural_schema(_Union)


class _Inner(CamelModel):
    """Fixture model with a model-level rule."""

    model_config = ConfigDict(json_schema_extra=validations(cel("self.a > 0", "model rule")))

    a: int = Field(description="A number.")


class _Outer(CamelModel):
    """Fixture model adding a field-level rule to a model-typed field."""

    inner: _Inner | None = Field(
        default=None,
        description="Field description wins.",
        json_schema_extra=validations(cel("self.a < 10", "field rule")),
    )


def test_field_rules_add_to_model_rules_and_field_descriptions_win() -> None:
    inner = structural_schema(_Outer)["properties"]["inner"]
    assert inner["description"] == "Field description wins."
    assert [r["message"] for r in inner["x-kubernetes-validations"]] == ["model rule", "field rule"]
