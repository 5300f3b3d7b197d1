"""The generated CRDs against the real kube-apiserver: what it rejects, accepts and defaults.

Creations are server-side dry runs (validated, defaulted, never stored) unless a test
needs a stored object, so nothing is left for an operator running in the same session.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imageops.models.base import API_VERSION, GROUP, VERSION
from imageops.models.common import IMAGE_REF_MESSAGE
from imageops.models.crd import RESOURCES
from imageops.services.reference import parse_reference

pytestmark = pytest.mark.e2e

Obj = dict[str, Any]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
DIGEST = "sha256:" + "a" * 64


class Objects:
    """Our custom objects in one namespace, through the custom-objects API."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def create(self, kind: str, spec: Obj | None, name: str = "x", dry_run: bool = True) -> Obj:
        """Create (by default: dry-run) an object and return what the server made of it."""
        body: Obj = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}}
        if spec is not None:
            body["spec"] = spec
        created = self.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            RESOURCES[kind].plural,
            body,
            dry_run="All" if dry_run else None,
            field_validation="Strict",
        )
        return cast(Obj, created)

    def rejection(self, kind: str, spec: Obj | None) -> str:
        """The API server's message for an object it must refuse."""
        try:
            self.create(kind, spec)
        except ApiException as exc:
            assert exc.status in (400, 422), exc.body
            return str(json.loads(str(exc.body))["message"])
        raise AssertionError(f"the API server accepted {kind} spec {spec}")

    def patch_spec(self, kind: str, name: str, spec: Obj, dry_run: bool = True) -> Obj:
        """Merge-patch an object's spec."""
        patched = self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            RESOURCES[kind].plural,
            name,
            {"spec": spec},
            dry_run="All" if dry_run else None,
        )
        return cast(Obj, patched)

    def delete(self, kind: str, name: str) -> None:
        """Delete an object (the bed has no namespace controller to do it)."""
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, RESOURCES[kind].plural, name
        )


@pytest.fixture
def objects(kube: client.ApiClient, namespace: str) -> Objects:
    """Custom objects in this test's namespace."""
    return Objects(kube, namespace)


def pull(**extra: Any) -> Obj:
    """A valid Pull spec, changed by ``extra``."""
    return {"action": "Pull", "image": "registry.local:5000/app:1.0", **extra}


def step(name: str, **extra: Any) -> Obj:
    """A valid Pull step, changed by ``extra``."""
    return {"name": name, **pull(**extra)}


# ---------------------------------------------------------------------------- ImageOperation


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"action": "Tag", "image": "app:1"}, "spec.target is required when action is Tag"),
        (pull(target="app:2"), "spec.target is not allowed when action is Pull"),
        (
            {"action": "Push", "image": "r.local:5000/app:1", "pullPolicy": "Always"},
            "spec.pullPolicy applies only when action is Pull",
        ),
        (pull(force=True), "spec.force applies only to Tag and Push"),
        (
            {"action": "Tag", "image": "app:1", "target": "app:1"},
            "spec.target must differ from spec.image",
        ),
        (pull(expectedDigest="sha256:abc"), "spec.expectedDigest in body should match"),
        (pull(backoffLimit=21), "spec.backoffLimit in body should be less than or equal to 20"),
        (pull(backoffLimit=-1), "spec.backoffLimit in body should be greater than or equal to 0"),
        (pull(timeoutSeconds=0), "spec.timeoutSeconds in body should be greater than or equal"),
        (pull(action="Delete"), 'spec.action: Unsupported value: "Delete"'),
        (pull(image="Not A Reference"), "spec.image in body should match"),
        (pull(image="UPPER/Case::bad"), "spec.image in body should match"),
        (pull(image="UPPER/Case::bad"), f"image {IMAGE_REF_MESSAGE}"),
        (pull(image="app/Upper:1"), f"image {IMAGE_REF_MESSAGE}"),
        (pull(image="host:port/repo"), f"image {IMAGE_REF_MESSAGE}"),
        (pull(image="busybox:-tag"), f"image {IMAGE_REF_MESSAGE}"),
        (pull(image="busybox@sha256:abc"), f"image {IMAGE_REF_MESSAGE}"),
        ({"action": "Tag", "image": "app:1", "target": "a//b"}, f"target {IMAGE_REF_MESSAGE}"),
        (pull(nodeName="Upper_Case"), "spec.nodeName in body should match"),
        (pull(bogus=1), 'unknown field "spec.bogus"'),
        (None, "spec: Required value"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_image_operations_are_rejected(
    objects: Objects, spec: Obj | None, message: str
) -> None:
    assert message in objects.rejection("ImageOperation", spec)


def test_valid_image_operations_are_accepted_with_defaults(objects: Objects) -> None:
    created = objects.create("ImageOperation", pull(expectedDigest=DIGEST, platform="linux/amd64"))
    assert created["spec"] == {
        **pull(expectedDigest=DIGEST, platform="linux/amd64"),
        "force": False,
        "dryRun": False,
    }
    for spec in (
        {"action": "Tag", "image": "app:1", "target": "app:2", "force": True},
        {"action": "Push", "image": "r.local:5000/app:1", "target": "r.local:5000/app:2"},
        pull(pullPolicy="IfNotPresent", credentials={"secretRef": {"name": "regcred"}}),
    ):
        objects.create("ImageOperation", spec)


@pytest.fixture
def stored_operation(objects: Objects) -> Iterator[str]:
    """A stored ImageOperation assigned to node-a."""
    objects.create("ImageOperation", pull(nodeName="node-a"), name="assigned", dry_run=False)
    yield "assigned"
    objects.delete("ImageOperation", "assigned")


def test_node_name_cannot_change_once_set(objects: Objects, stored_operation: str) -> None:
    for change in ({"nodeName": "node-b"}, {"nodeName": None}):
        with pytest.raises(ApiException) as raised:
            objects.patch_spec("ImageOperation", stored_operation, change)
        assert raised.value.status == 422
        assert "spec.nodeName cannot be changed once set" in str(raised.value.body)
    # Other fields may change, and an unassigned operation may be assigned.
    objects.patch_spec("ImageOperation", stored_operation, {"timeoutSeconds": 60})
    # A selector no node matches keeps an operator running in this session from assigning it.
    unassigned = pull(nodeSelector={"e2e.imageops.dev/no-such-node": "true"})
    objects.create("ImageOperation", unassigned, name="unassigned", dry_run=False)
    try:
        patched = objects.patch_spec("ImageOperation", "unassigned", {"nodeName": "node-b"})
        assert patched["spec"]["nodeName"] == "node-b"
    finally:
        objects.delete("ImageOperation", "unassigned")


def test_field_selector_on_node_name(objects: Objects, kubectl: Kubectl) -> None:
    names = {"on-x": "x", "on-y": "y"}
    for name, node in names.items():
        objects.create("ImageOperation", pull(nodeName=node), name=name, dry_run=False)
    try:
        ns = objects.namespace
        got = kubectl("get", "imgop", "-n", ns, "--field-selector", "spec.nodeName=x", "-o", "name")
        assert got.stdout.split() == ["imageoperation.imageops.dev/on-x"]
        listed: Obj = objects.custom.list_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, ns, "imageoperations", field_selector="spec.nodeName=y"
        )
        assert [o["metadata"]["name"] for o in listed["items"]] == ["on-y"]
        other = kubectl("get", "imgop", "-n", ns, "--field-selector", "spec.image=a", check=False)
        assert other.returncode != 0 and "field label not supported" in other.stderr
        table = kubectl("get", "imageops", "-n", ns, "-o", "wide").stdout.splitlines()[0].split()
        assert table == [
            "NAME",
            "PHASE",
            "ACTION",
            "IMAGE",
            "NODE",
            "DIGEST",
            "PROGRESS",
            "ATTEMPTS",
            "AGE",
        ]
    finally:
        for name in names:
            objects.delete("ImageOperation", name)


# ---------------------------------------------------------------------------------- Workflow


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"steps": [step("a"), step("a")]}, "spec.steps names must be unique"),
        (
            {"steps": [step("a", dependsOn=["nope"])]},
            "spec.steps[].dependsOn must name steps of this workflow",
        ),
        (
            {"steps": [step("a")], "allNodes": True},
            "spec.allNodes requires a non-empty spec.nodeSelector",
        ),
        (
            {"steps": [step("a")], "allNodes": True, "nodeSelector": {}},
            "spec.allNodes requires a non-empty spec.nodeSelector",
        ),
        (
            {"steps": [step("a")], "allNodes": True, "nodeSelector": {"a": "b"}, "nodeName": "n"},
            "spec.nodeName and spec.allNodes are mutually exclusive",
        ),
        (
            {"steps": [step("a")], "createSession": True, "sessionRef": {"name": "s"}},
            "spec.createSession and spec.sessionRef are mutually exclusive",
        ),
        (
            {"steps": [{"name": "t", "action": "Tag", "image": "app:1"}]},
            "step t: target is required when action is Tag",
        ),
        (
            {"steps": [step("p", pullPolicy="Always", action="Push")]},
            "step p: pullPolicy applies only when action is Pull",
        ),
        ({"steps": [{"name": "n", "action": "Pull"}]}, "step n: set exactly one of image"),
        (
            {"steps": [step("a"), step("b", dependsOn=["a"], imageFrom={"step": "a"})]},
            "step b: set exactly one of image and imageFrom",
        ),
        (
            {
                "steps": [
                    step("a"),
                    {
                        "name": "b",
                        "action": "Tag",
                        "target": "app:2",
                        "imageFrom": {"step": "nope"},
                    },
                ]
            },
            "spec.steps[].imageFrom.step must name a step of this workflow",
        ),
        (
            {
                "steps": [
                    step("a"),
                    {"name": "b", "action": "Tag", "target": "app:2", "imageFrom": {"step": "b"}},
                ]
            },
            "step b: imageFrom cannot name the step itself",
        ),
        (
            {"steps": [step("a", image="Registry.local/UP:1")]},
            f"image {IMAGE_REF_MESSAGE}",
        ),
        ({"steps": [step("a", dependsOn=["a"])]}, "step a: a step cannot depend on itself"),
        ({"steps": []}, "spec.steps in body should have at least 1 items"),
        (
            {"steps": [step(f"s{i}") for i in range(51)]},
            "spec.steps: Too many: 51: must have at most 50 items",
        ),
        ({"steps": [step("a")], "parallelism": 0}, "spec.parallelism in body should be greater"),
        (
            {"steps": [step("a")], "defaults": {"backoffLimit": 99}},
            "spec.defaults.backoffLimit in body should be less than or equal to 20",
        ),
        ({"steps": [step("a")], "onFailure": "Retry"}, 'Unsupported value: "Retry"'),
        (None, "spec: Required value"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_workflows_are_rejected(objects: Objects, spec: Obj | None, message: str) -> None:
    assert message in objects.rejection("Workflow", spec)


def test_valid_workflow_is_accepted_with_defaults(objects: Objects) -> None:
    steps = [
        step("pull"),
        {
            "name": "retag",
            "dependsOn": ["pull"],
            "imageFrom": {"step": "pull"},
            "action": "Tag",
            "target": "registry.local:5000/app:stable",
        },
        {
            "name": "push",
            "dependsOn": ["retag"],
            "action": "Push",
            "image": "registry.local:5000/app:stable",
            "timeoutSeconds": 60,
        },
    ]
    spec = {"steps": steps, "allNodes": True, "nodeSelector": {"pool": "build"}}
    created = objects.create("Workflow", spec)["spec"]
    assert (created["failFast"], created["parallelism"], created["onFailure"]) == (True, 1, "None")
    assert (created["allNodes"], created["createSession"]) == (True, False)
    assert created["steps"][1] == {**steps[1], "force": False, "dryRun": False}
    assert "backoffLimit" not in created["steps"][2]  # inherited from spec.defaults later


def test_image_from_implies_the_dependency_on_an_ancestor(objects: Objects) -> None:
    """pull -> tag -> push, the push taking the pull's image: no dependsOn on pull needed."""
    steps = [
        step("pull"),
        {
            "name": "tag",
            "action": "Tag",
            "imageFrom": {"step": "pull"},
            "target": "registry.local:5000/app:stable",
        },
        {
            "name": "push",
            "action": "Push",
            "imageFrom": {"step": "pull"},
            "dependsOn": ["tag"],
            "target": "registry.local:5000/app:2.0",
        },
    ]
    assert [s["name"] for s in objects.create("Workflow", {"steps": steps})["spec"]["steps"]] == [
        "pull",
        "tag",
        "push",
    ]


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "busybox:1.36",
        "library/busybox:latest",
        "127.0.0.1:5000/team/app:1.0",
        "localhost/app",
        "localhost:5000/a__b/c--d/e.f_g:_t",
        "Registry.Example.com/app",
        "[2001:db8::1]:5000/repo:t",
        f"app@{DIGEST}",
        f"r.local:5000/app:1@{DIGEST}",
        DIGEST,
    ],
)
def test_image_reference_grammar_accepts_what_the_agent_parses(
    objects: Objects, image: str
) -> None:
    parse_reference(image)  # the agent's parser agrees
    assert objects.create("ImageOperation", pull(image=image))["spec"]["image"] == image


def test_fresh_objects_read_not_yet_observed(objects: Objects) -> None:
    """status.observedGeneration 0 from the first moment (status is dropped on create)."""
    for kind, spec in (
        ("ImageOperation", pull(nodeName="nobody")),
        ("Workflow", {"steps": [step("a")]}),
        ("ImageSession", None),
    ):
        created = objects.create(kind, spec, name="fresh", dry_run=False)
        try:
            assert created["metadata"]["generation"] == 1
            assert created["status"]["observedGeneration"] == 0, created.get("status")
            got = objects.custom.get_namespaced_custom_object(
                GROUP, VERSION, objects.namespace, RESOURCES[kind].plural, "fresh"
            )
            assert got["status"]["observedGeneration"] == 0  # type: ignore[index]
        finally:
            objects.delete(kind, "fresh")


def test_largest_workflow_fits_the_cel_cost_budget(objects: Objects) -> None:
    # 50 steps that each depend on 20 others: the worst case of the O(n^2) rules.
    names = [f"step-{i:02d}-" + "x" * 54 for i in range(50)]
    steps = [
        step(name, dependsOn=names[max(0, i - 20) : i] or None) for i, name in enumerate(names)
    ]
    steps = [{k: v for k, v in s.items() if v is not None} for s in steps]
    assert len(objects.create("Workflow", {"steps": steps})["spec"]["steps"]) == 50


# ------------------------------------------------------------------------------ ImageSession


def test_image_session_defaults_an_absent_spec(objects: Objects) -> None:
    created = objects.create("ImageSession", None)
    assert created["spec"] == {"historyLimit": 50, "preserveLogs": False}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"historyLimit": 501}, "spec.historyLimit in body should be less than or equal to 500"),
        ({"allowedRegistries": ["https://r.example"]}, "spec.allowedRegistries[0] in body should"),
        ({"timeoutSeconds": 0}, "spec.timeoutSeconds in body should be greater than or equal"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_image_sessions_are_rejected(objects: Objects, spec: Obj, message: str) -> None:
    assert message in objects.rejection("ImageSession", spec)


def test_image_session_status_is_a_subresource(objects: Objects) -> None:
    spec = {"allowedRegistries": ["*.corp.example", "127.0.0.1:5000"], "ttlSecondsAfterIdle": 60}
    objects.create("ImageSession", spec, name="s", dry_run=False)
    try:
        custom = objects.custom
        status = {"phase": "Active", "jobs": {"active": 1, "total": 1}, "cacheHitRatio": 0.5}
        body = {"status": status}
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, objects.namespace, "imagesessions", "s", body
        )
        got: Obj = custom.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, objects.namespace, "imagesessions", "s"
        )
        assert got["status"]["jobs"] == {"active": 1, "total": 1, "succeeded": 0, "failed": 0}
        with pytest.raises(ApiException) as raised:
            custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                objects.namespace,
                "imagesessions",
                "s",
                {"status": {"cacheHitRatio": 2}},
            )
        error = json.loads(str(raised.value.body))
        assert error["details"]["causes"][0]["field"] == "status.cacheHitRatio"
        assert "should be less than or equal to 1" in error["message"]
    finally:
        objects.delete("ImageSession", "s")
