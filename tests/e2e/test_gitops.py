"""GitOps: every kind in every state, read by the libraries Flux, Argo CD and kubectl use.

Real objects from the real operator on the bed's API server are judged by
``imageops-health`` (hack/tools/health, built by hack/build-tools.sh): kstatus
``status.Compute`` of sigs.k8s.io/cli-utils v0.37.2 and of Flux's fork, Flux's
``ssa.ResourceManager.WaitForSet`` (kustomize-controller's ``wait: true``) polling the
live objects, and docs/argocd-health.lua run by gopher-lua loaded as Argo CD v3.5.1
loads an argocd-cm health script, with useOpenLibs off (Argo's default) and on.
``kubectl wait --for=condition=Ready|Stalled`` is checked on the same objects. Every
row of the table in docs/gitops.md is one ``expect`` call here; what the libraries
returned is written to ``gitops-health.json`` (see the ``tool`` fixture).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from imageops.models.base import GROUP, VERSION
from tests.e2e.conftest import missing
from tests.e2e.fixtures import MAIN_NODE
from tests.e2e.harness import OperatorProcess, Ops, condition, running_operator, wait_until
from tests.faults import FakeSlowLink, FakeStalledRegistry
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HEALTH = REPO / "docs/argocd-health.lua"
Obj = dict[str, Any]
PLURALS = {
    "ImageOperation": "imageoperations",
    "Workflow": "workflows",
    "ImageSession": "imagesessions",
}
# What each library answers for the three outcomes of the table.
WORKING = ("InProgress", "Progressing", None)
DONE = ("Current", "Healthy", "Ready")
FAILED = ("Failed", "Degraded", "Stalled")
RESULTS: list[Obj] = []


@pytest.fixture(scope="module")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The imageops-health binary; the rows it judged are written out at the end.

    To $IMAGEOPS_GITOPS_HEALTH_OUT if set, else gitops-health.json in pytest's tmp dir.
    """
    binary = shutil.which("imageops-health")
    if binary is None:
        missing("imageops-health is missing: hack/build-tools.sh builds it into the bed's bin")
    yield binary
    default = tmp_path_factory.getbasetemp() / "gitops-health.json"
    Path(os.environ.get("IMAGEOPS_GITOPS_HEALTH_OUT") or default).write_text(
        json.dumps(RESULTS, indent=1)
    )


@dataclass
class Objects:
    """Custom objects of one namespace, and what the GitOps libraries make of them."""

    custom: client.CustomObjectsApi
    namespace: str
    tool: str

    def create(self, kind: str, name: str, spec: Obj | None) -> Obj:
        """Create an object; the API server's response is its first moment."""
        body: Obj = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}}
        if spec is not None:
            body["spec"] = spec
        return cast(
            Obj,
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURALS[kind], body
            ),
        )

    def get(self, kind: str, name: str) -> Obj:
        """The object as stored."""
        return cast(
            Obj,
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURALS[kind], name
            ),
        )

    def wait(self, kind: str, name: str, check: Any, what: str, timeout: float = 90) -> Obj:
        """Wait until ``check(obj)`` holds; return the object then."""

        def probe() -> Obj | None:
            obj = self.get(kind, name)
            return obj if check(obj) else None

        return cast(Obj, wait_until(probe, timeout, f"{kind}/{name}: {what}"))

    def judge(self, obj: Obj) -> Obj:
        """kstatus, Flux's kstatus and Argo CD (useOpenLibs off and on) on ``obj``."""
        out = subprocess.run(
            [self.tool, "status", "--script", str(HEALTH)],
            input=json.dumps(obj),
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return cast(Obj, json.loads(out.stdout))

    def flux_wait(self, objs: list[tuple[str, str]], timeout: str = "2s") -> Obj:
        """Flux's WaitForSet (fail-fast, as kustomize-controller) on live objects."""
        names = [f"{self.namespace}/{kind}/{name}" for kind, name in objs]
        out = subprocess.run(
            [self.tool, "wait", "--timeout", timeout, "--interval", "500ms", "--fail-fast", *names],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return cast(Obj, json.loads(out.stdout))

    def kubectl_wait(self, kind: str, name: str, ctype: str) -> bool:
        """``kubectl wait --for=condition=ctype`` checked once (--timeout=0s)."""
        out = subprocess.run(
            [
                "kubectl",
                "wait",
                "-n",
                self.namespace,
                "--timeout=0s",
                f"--for=condition={ctype}",
                f"{PLURALS[kind]}/{name}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        return out.returncode == 0

    def expect(
        self, row: str, obj: Obj, want: tuple[str, str, str | None], live: bool = True
    ) -> Obj:
        """Assert one row of the table: all libraries agree with ``want``."""
        kstatus, argo, met = want
        verdict = self.judge(obj)
        kind, name = obj["kind"], obj["metadata"]["name"]
        record: Obj = {
            "row": row,
            "kind": kind,
            "phase": (obj.get("status") or {}).get("phase"),
            **{k: verdict[k] for k in ("kstatus", "fluxKstatus", "argocd", "argocdOpenLibs")},
        }
        RESULTS.append(record)
        assert verdict["kstatus"]["status"] == kstatus, (row, verdict)
        assert verdict["fluxKstatus"]["status"] == kstatus, (row, verdict)
        for key in ("argocd", "argocdOpenLibs"):
            assert verdict[key]["status"] == argo and not verdict[key].get("error"), (row, verdict)
            assert verdict[key]["message"], (row, verdict)
        if not live:
            return verdict
        conditions = {c: self.kubectl_wait(kind, name, c) for c in ("Ready", "Stalled")}
        record["kubectlWait"] = [c for c, ok in conditions.items() if ok]
        assert conditions == {c: c == met for c in conditions}, (row, conditions)
        flux = self.flux_wait([(kind, name)], "2s" if kstatus == "InProgress" else "20s")
        record["fluxWait"] = flux
        assert flux["ok"] is (kstatus == "Current"), (row, flux)
        if kstatus == "Failed":
            assert "failed early due to stalled resources" in flux["error"], (row, flux)
        if kstatus == "InProgress":
            assert "timeout waiting for" in flux["error"], (row, flux)
        return verdict


@pytest.fixture
def objects(kube: client.ApiClient, namespace: str, tool: str) -> Objects:
    """This test's namespace, judged by imageops-health."""
    return Objects(client.CustomObjectsApi(kube), namespace, tool)


def phase_is(*phases: str) -> Any:
    """A check: status.phase is one of ``phases`` for the current generation."""

    def check(obj: Obj) -> bool:
        status = obj.get("status") or {}
        return bool(
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("phase") in phases
        )

    return check


def reason_is(reason: str) -> Any:
    """A check: Reconciling=True with ``reason``."""

    def check(obj: Obj) -> bool:
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == "Reconciling":
                return bool(cond["status"] == "True" and cond["reason"] == reason)
        return False

    return check


def failed_with(reason: str) -> Any:
    """A check: Failed for the current generation with lastError.reason ``reason``."""

    def check(obj: Obj) -> bool:
        status = obj.get("status") or {}
        return bool(
            phase_is("Failed")(obj) and (status.get("lastError") or {}).get("reason") == reason
        )

    return check


def test_fresh_objects_are_in_progress_from_their_first_moment(
    operator: OperatorProcess, objects: Objects, testbed: Testbed
) -> None:
    """Flux's wait must not pass on objects nobody has looked at yet (it did in 0.03 s)."""
    source = testbed.make_image(testbed.unique())
    created = [
        objects.create(
            "ImageOperation",
            "fresh",
            {"action": "Pull", "image": testbed.unique(), "nodeName": MAIN_NODE},
        ),
        objects.create(
            "Workflow",
            "fresh",
            {
                "nodeName": MAIN_NODE,
                "steps": [{"name": "missing", "action": "Pull", "image": testbed.unique()}],
            },
        ),
        objects.create("ImageSession", "fresh", None),
        objects.create(
            "ImageOperation",
            "unserved",
            {
                "action": "Tag",
                "image": source,
                "target": testbed.unique(),
                "nodeName": f"no-agent-{uuid.uuid4().hex[:8]}",
            },
        ),
    ]
    # Right away, as a wait started by the same sync sees them: not ready, and then failed.
    flux = objects.flux_wait([("ImageOperation", "fresh"), ("Workflow", "fresh")], "60s")
    assert flux["ok"] is False and "failed early due to stalled resources" in flux["error"], flux
    for obj in created:
        objects.expect(
            f"{obj['kind']} fresh (create response, no status written)", obj, WORKING, live=False
        )
    unserved = objects.get("ImageOperation", "unserved")
    if unserved["status"].get("phase") is None:
        objects.expect("ImageOperation for a node without agent", unserved, WORKING)
    failed = objects.wait(
        "ImageOperation",
        "unserved",
        failed_with("NodeUnavailable"),
        "NodeUnavailable after the grace period",
        timeout=60,
    )
    objects.expect("ImageOperation Failed NodeUnavailable", failed, FAILED)


def test_image_operation_outcomes(
    operator: OperatorProcess,
    objects: Objects,
    ops: Ops,
    testbed: Testbed,
    request: pytest.FixtureRequest,
) -> None:
    """Succeeded and every Failed reason the bed can produce, each read the same way."""
    stalled = FakeStalledRegistry()
    request.addfinalizer(stalled.close)
    source = testbed.make_image(testbed.unique())  # imported locally: never pushed
    other = testbed.make_image(testbed.unique())
    taken = testbed.unique()
    testbed.docker("tag", other, taken)
    bad_digest = "sha256:" + "0" * 64
    cases = {
        "NotFound": {"action": "Pull", "image": testbed.unique()},
        "Conflict": {"action": "Tag", "image": source, "target": taken},
        "DigestMismatch": {
            "action": "Tag",
            "image": source,
            "target": testbed.unique(),
            "expectedDigest": bad_digest,
        },
        "InvalidReference": {"action": "Pull", "image": "busybox@sha256:" + "F" * 64},
        "CredentialsNotFound": {
            "action": "Pull",
            "image": testbed.unique(testbed.auth_registry),
            "credentials": {"secretRef": {"name": "absent"}},
        },
        "AuthFailed": {
            "action": "Pull",
            "image": testbed.unique(testbed.auth_registry),
            "backoffLimit": 0,
        },
        "Forbidden": {
            "action": "Pull",
            "image": testbed.unique(),
            "sessionRef": {"name": "strict"},
        },
        "Timeout": {
            "action": "Pull",
            "image": f"{stalled.address}/hung/app:1",
            "timeoutSeconds": 2,
            "backoffLimit": 0,
        },
    }
    objects.create("ImageSession", "strict", {"allowedRegistries": ["registry.example.com"]})
    ops.create(
        "tag", {"action": "Tag", "image": source, "target": testbed.unique(), "nodeName": MAIN_NODE}
    )
    for reason, spec in cases.items():
        ops.create(reason.lower(), {**spec, "nodeName": MAIN_NODE})
    done = objects.wait("ImageOperation", "tag", phase_is("Succeeded"), "Succeeded")
    objects.expect("ImageOperation Succeeded", done, DONE)
    # A local image's digest is its image ID (README: What "Succeeded" means).
    assert done["status"]["digest"] == testbed.image_id(source) == done["status"]["imageId"]
    for reason in cases:
        obj = objects.wait("ImageOperation", reason.lower(), failed_with(reason), reason)
        objects.expect(f"ImageOperation Failed {reason}", obj, FAILED)


def test_running_retrying_and_a_succeeded_pull(
    operator: OperatorProcess, objects: Objects, ops: Ops, testbed: Testbed
) -> None:
    ref = remote_only(testbed)
    with FakeSlowLink(testbed.registry, rate=48 * 1024) as link:
        slow = ref.replace(testbed.registry, link.address, 1)
        ops.create("slow", {"action": "Pull", "image": slow, "nodeName": MAIN_NODE})
        # Nothing listens on port 1: a retryable failure, retried for a long while.
        ops.create(
            "retrying",
            {
                "action": "Pull",
                "image": "127.0.0.1:1/none/such:1",
                "backoffLimit": 20,
                "nodeName": MAIN_NODE,
            },
        )
        running = objects.wait("ImageOperation", "slow", phase_is("Running"), "Running")
        objects.expect("ImageOperation Running", running, WORKING)
        retrying = objects.wait("ImageOperation", "retrying", reason_is("Retrying"), "Retrying")
        assert retrying["status"]["phase"] == "Running"
        objects.expect("ImageOperation Running, retrying", retrying, WORKING)
        pulled = objects.wait("ImageOperation", "slow", phase_is("Succeeded"), "Succeeded")
    progress = pulled["status"]["progress"]
    assert progress["layersDone"] == progress["layersTotal"] >= 1, progress
    assert progress["bytesDone"] == progress["bytesTotal"] > 0, progress
    objects.expect("ImageOperation Succeeded (pull)", pulled, DONE)


def test_queued_behind_max_concurrent_is_pending_and_the_slot_holder_running(
    operator: OperatorProcess, objects: Objects, ops: Ops, testbed: Testbed, log_dir: Path
) -> None:
    """One slot: the pull holding it is Running since it started, the next one is Pending."""
    node = f"gitops-{uuid.uuid4().hex[:8]}"
    ref = remote_only(testbed)
    source = testbed.make_image(testbed.unique())
    # Its heartbeat Lease goes where the session's controller looks (the default
    # namespace), or the controller would fail the node's work as NodeUnavailable.
    with (
        running_operator(node, "--role", "agent", "--max-concurrent", "1", log_dir=log_dir),
        FakeSlowLink(testbed.registry, rate=32 * 1024) as link,
    ):
        ops.create(
            "holder",
            {
                "action": "Pull",
                "image": ref.replace(testbed.registry, link.address, 1),
                "nodeName": node,
            },
        )
        holder = objects.wait("ImageOperation", "holder", phase_is("Running"), "Running")
        ops.create(
            "queued",
            {"action": "Tag", "image": source, "target": testbed.unique(), "nodeName": node},
        )
        queued = objects.wait("ImageOperation", "queued", reason_is("Queued"), "Queued")
        seen_queued = datetime.now(UTC).replace(microsecond=0)
        holder = objects.get("ImageOperation", "holder")
        assert holder["status"]["phase"] == "Running", holder["status"]
        assert condition(holder["status"], "Reconciling")["reason"] == "Running"
        assert queued["status"]["phase"] == "Pending" and "startTime" not in queued["status"]
        assert "--max-concurrent" in condition(queued["status"], "Reconciling")["message"]
        objects.expect("ImageOperation Pending, queued behind --max-concurrent", queued, WORKING)
        objects.expect("ImageOperation Running, holding a --max-concurrent slot", holder, WORKING)
        done = objects.wait("ImageOperation", "holder", phase_is("Succeeded"), "Succeeded")
        tagged = objects.wait("ImageOperation", "queued", phase_is("Succeeded"), "Succeeded")
    # startTime is when the slot was free, not when it was queued.
    started = _time(tagged["status"]["startTime"])
    assert started >= seen_queued, (started, seen_queued)
    assert started >= _time(done["status"]["completionTime"]) - timedelta(seconds=1)
    assert _time(holder["status"]["startTime"]) <= seen_queued
    objects.expect("ImageOperation Succeeded after the queue", tagged, DONE, live=False)


def remote_only(testbed: Testbed) -> str:
    """A 256 KiB image in the open registry and not on the node: a pull transfers it."""
    ref = testbed.make_image(testbed.unique(), size_bytes=256 * 1024)
    testbed.push_open(ref)
    testbed.rmi(ref)
    return ref


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_changed_spec_is_in_progress_until_the_new_generation_is_done(
    objects: Objects, ops: Ops, testbed: Testbed, log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ready status of generation 1 says nothing about generation 2."""
    node = f"gitops-{uuid.uuid4().hex[:8]}"
    source = testbed.make_image(testbed.unique())
    monkeypatch.setenv("POD_NAMESPACE", objects.namespace)
    with running_operator(node, "--role", "agent", log_dir=log_dir):
        ops.create(
            "changed",
            {"action": "Tag", "image": source, "target": testbed.unique(), "nodeName": node},
        )
        ops.wait_phase("changed")
    # The agent is gone: nobody acts on the new generation while we look.
    ops.patch_spec("changed", {"timeoutSeconds": 120})
    stale = objects.get("ImageOperation", "changed")
    assert stale["metadata"]["generation"] == 2
    assert stale["status"]["observedGeneration"] == 1 and stale["status"]["phase"] == "Succeeded"
    verdict = objects.expect(
        "ImageOperation stale generation (spec changed after success)", stale, WORKING
    )
    assert "Generation 2" in verdict["argocd"]["message"]


def test_workflows_in_every_phase(
    operator: OperatorProcess, objects: Objects, testbed: Testbed
) -> None:
    source = testbed.make_image(testbed.unique())
    ref = remote_only(testbed)
    objects.create(
        "Workflow",
        "pending",
        {
            "nodeSelector": {"imageops.dev/none": "x"},
            "steps": [{"name": "a", "action": "Tag", "image": source, "target": "x/y:1"}],
        },
    )
    objects.create(
        "Workflow",
        "ok",
        {
            "nodeName": MAIN_NODE,
            "steps": [
                {"name": "tag", "action": "Tag", "image": source, "target": testbed.unique()}
            ],
        },
    )
    objects.create(
        "Workflow",
        "failed",
        {
            "nodeName": MAIN_NODE,
            "steps": [{"name": "missing", "action": "Pull", "image": testbed.unique()}],
        },
    )
    pending = objects.wait("Workflow", "pending", phase_is("Pending"), "Pending")
    objects.expect("Workflow Pending (no live node matches)", pending, WORKING)
    with FakeSlowLink(testbed.registry, rate=48 * 1024) as link:
        # The push takes its image from the pull, an ancestor: imageFrom implies dependsOn.
        objects.create(
            "Workflow",
            "running",
            {
                "nodeName": MAIN_NODE,
                "steps": [
                    {
                        "name": "pull",
                        "action": "Pull",
                        "image": ref.replace(testbed.registry, link.address, 1),
                    },
                    {
                        "name": "tag",
                        "action": "Tag",
                        "imageFrom": {"step": "pull"},
                        "target": testbed.unique(),
                    },
                    {
                        "name": "again",
                        "action": "Tag",
                        "imageFrom": {"step": "pull"},
                        "dependsOn": ["tag"],
                        "target": testbed.unique(),
                    },
                ],
            },
        )
        running = objects.wait("Workflow", "running", phase_is("Running"), "Running")
        objects.expect("Workflow Running", running, WORKING)
        done = objects.wait("Workflow", "running", phase_is("Succeeded"), "Succeeded", 120)
    assert done["status"]["counts"]["succeeded"] == 3
    objects.expect("Workflow Succeeded (imageFrom an ancestor)", done, DONE)
    objects.expect(
        "Workflow Succeeded",
        objects.wait("Workflow", "ok", phase_is("Succeeded"), "Succeeded"),
        DONE,
    )
    objects.expect(
        "Workflow Failed", objects.wait("Workflow", "failed", phase_is("Failed"), "Failed"), FAILED
    )


def test_sessions_idle_active_and_expired(
    operator: OperatorProcess, objects: Objects, ops: Ops
) -> None:
    objects.create("ImageSession", "idle", {"nodeName": MAIN_NODE})
    objects.create("ImageSession", "busy", {"nodeName": MAIN_NODE})
    objects.create("ImageSession", "brief", {"nodeName": MAIN_NODE, "ttlSecondsAfterIdle": 2})
    ops.create(
        "waiting",
        {
            "action": "Pull",
            "image": "127.0.0.1:1/none/such:1",
            "backoffLimit": 20,
            "sessionRef": {"name": "busy"},
        },
    )
    idle = objects.wait("ImageSession", "idle", phase_is("Idle"), "Idle")
    objects.expect("ImageSession Idle", idle, DONE)
    active = objects.wait("ImageSession", "busy", phase_is("Active"), "Active")
    objects.expect("ImageSession Active", active, WORKING)
    expired = objects.wait("ImageSession", "brief", phase_is("Expired"), "Expired", 60)
    objects.expect("ImageSession Expired", expired, FAILED)
    started = time.monotonic()
    flux = objects.flux_wait([("ImageSession", "brief")], "60s")
    assert flux["ok"] is False and time.monotonic() - started < 30, flux  # settles, no timeout


def test_gitops_examples_point_at_the_chart_and_the_health_check() -> None:
    argo = list(yaml.safe_load_all((REPO / "examples/gitops/argocd-application.yaml").read_text()))
    kinds = [d["kind"] for d in argo if d]
    assert kinds.count("Application") == 2, kinds
    chart_app = next(d for d in argo if d and d["spec"]["source"].get("path") == "charts/imageops")
    assert chart_app["spec"]["source"]["helm"]["valuesObject"]["crds"]["keep"] is True
    health_cm = next(d for d in argo if d and d["kind"] == "ConfigMap")
    script = HEALTH.read_text()
    for kind in ("ImageOperation", "Workflow", "ImageSession"):
        assert health_cm["data"][f"resource.customizations.health.imageops.dev_{kind}"] == script
    flux = [
        d
        for d in yaml.safe_load_all((REPO / "examples/gitops/flux-kustomization.yaml").read_text())
        if d
    ]
    kustomization = next(d for d in flux if d["kind"] == "Kustomization")
    assert kustomization["spec"]["wait"] is True and kustomization["spec"]["prune"] is True
    guide = (REPO / "docs/gitops.md").read_text()
    assert "test_reapply_unchanged_does_not_rerun_and_new_generation_does" in guide
