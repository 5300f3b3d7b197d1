"""Workflow end to end: the real controller and agents, API server, Docker engine, registries."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.fixtures import MAIN_NODE
from tests.e2e.harness import OperatorProcess, Ops, condition, wait_until
from tests.faults import FakeSlowLink
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "imageops.dev", "v1alpha1", "workflows"
Obj = dict[str, Any]
POOL_LABEL = "e2e.imageops.dev/pool"
FINISHED = ("Succeeded", "Failed")


class Workflows:
    """Workflows of one namespace, through the custom-objects API."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def create(self, name: str, spec: Obj) -> Obj:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Workflow",
            "metadata": {"name": name},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, self.namespace, PLURAL, body
        )

    def get(self, name: str) -> Obj | None:
        try:
            return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str) -> Obj:
        return (self.get(name) or {}).get("status") or {}

    def patch_spec(self, name: str, spec: Obj) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            {"spec": spec},
            _content_type="application/merge-patch+json",
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def wait_phase(
        self,
        name: str,
        phases: tuple[str, ...] = FINISHED,
        timeout: float = 90,
        interval: float = 0.05,
    ) -> Obj:
        """Wait until status.phase is one of ``phases`` for the current generation."""

        def check() -> Obj | None:
            obj = self.get(name) or {}
            status = obj.get("status") or {}
            current = status.get("observedGeneration") == obj.get("metadata", {}).get("generation")
            return status if current and status.get("phase") in phases else None

        return wait_until(
            check,
            timeout,
            f"workflow {name} in {phases}",  # type: ignore[no-any-return]
            interval=interval,
        )

    def children(self, name: str) -> list[Obj]:
        items = self.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            "imageoperations",
            label_selector=f"imageops.dev/workflow={name}",
        )["items"]
        return sorted(items, key=lambda o: o["metadata"]["name"])

    def events(self, name: str) -> list[str]:
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [str(e.reason) for e in events if e.involved_object.kind == "Workflow"]


@pytest.fixture
def wfs(kube_api: client.ApiClient, namespace: str) -> Iterator[Workflows]:
    """Workflows in this test's namespace; deleted afterwards (the bed has no GC)."""
    wfs = Workflows(kube_api, namespace)
    yield wfs
    items = wfs.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    for item in items:
        wfs.delete(item["metadata"]["name"])


def _seeded(testbed: Testbed, size: int = 4096) -> str:
    """A fresh image in the open registry, absent from the engine (a real pull follows)."""
    ref = testbed.make_image(testbed.unique(), size_bytes=size)
    testbed.push_open(ref)
    testbed.rmi(ref)
    return ref


def _repo(ref: str) -> str:
    return ref.rsplit(":", 1)[0]


def _docker_cli_promotion(testbed: Testbed, tmp_path: Path, size: int) -> float:
    """The same promotion with the docker CLI: pull, tag, push (credentials pre-configured)."""
    source = _seeded(testbed, size)
    target = testbed.unique(testbed.auth_registry)
    config = tmp_path / "docker-config"
    config.mkdir()
    token = base64.b64encode(f"{testbed.auth_user}:{testbed.auth_password}".encode()).decode()
    auths = {"auths": {testbed.auth_registry: {"auth": token}}}
    (config / "config.json").write_text(json.dumps(auths))
    env = dict(os.environ, DOCKER_CONFIG=str(config))
    started = time.monotonic()
    for args in (["pull", source], ["tag", source, target], ["push", target]):
        subprocess.run(
            ["docker", "-H", testbed.docker_host, *args],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    elapsed = time.monotonic() - started
    assert testbed.registry_digest(target, auth=True)
    return elapsed


def _promotion(source: str, candidate: str, release: str) -> Obj:
    return {
        "nodeName": MAIN_NODE,
        "steps": [
            {"name": "pull", "action": "Pull", "image": source, "pullPolicy": "Always"},
            {
                "name": "tag",
                "action": "Tag",
                "imageFrom": {"step": "pull"},
                "dependsOn": ["pull"],
                "target": candidate,
            },
            {
                "name": "push",
                "action": "Push",
                "imageFrom": {"step": "tag"},
                "dependsOn": ["tag"],
                "target": release,
                "credentials": {"secretRef": {"name": "regcred"}},
            },
        ],
    }


def test_promotion_pushes_exactly_what_was_pulled(
    operator: OperatorProcess, wfs: Workflows, ops: Ops, testbed: Testbed, tmp_path: Path
) -> None:
    size = 4 * 1024 * 1024
    source = _seeded(testbed, size)
    candidate = testbed.unique(tag="candidate")
    release = testbed.unique(testbed.auth_registry)
    ops.secret("regcred", testbed.dockerconfigjson())
    started = time.monotonic()
    wfs.create("promote", _promotion(source, candidate, release))
    status = wfs.wait_phase("promote")
    first_seconds = time.monotonic() - started
    assert status["phase"] == "Succeeded", status
    steps = status["steps"]
    pulled = steps["pull"]["digest"]
    assert pulled == testbed.registry_digest(source)
    # The push was pinned to the pulled digest, and the registry serves the same manifest.
    children = {c["metadata"]["labels"]["imageops.dev/step"]: c for c in wfs.children("promote")}
    assert children["tag"]["spec"]["image"] == f"{_repo(source)}@{pulled}"
    assert children["push"]["spec"]["image"] == f"{_repo(source)}@{pulled}"
    assert steps["push"]["digest"] == testbed.registry_digest(release, auth=True) == pulled
    assert steps["pull"]["imageId"] == steps["push"]["imageId"] == testbed.image_id(release)
    assert testbed.image_id(candidate) == steps["pull"]["imageId"]
    assert status["progress"] == "3/3" and status["counts"]["succeeded"] == 3
    assert status["node"] == MAIN_NODE and status["runId"].endswith("-g1")
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Ready")["observedGeneration"] == 1
    for child in children.values():
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("Workflow", "promote", True)
        assert child["metadata"]["labels"]["imageops.dev/run"] == "1"
        assert child["spec"]["nodeName"] == MAIN_NODE
    assert {"Started", "Succeeded"} <= set(wfs.events("promote"))
    subprocess.run(
        [
            "kubectl",
            "wait",
            "-n",
            wfs.namespace,
            "--for=condition=Ready",
            "imgwf/promote",
            "--timeout=5s",
        ],
        check=True,
        capture_output=True,
    )
    # Timed against the CLI: a second promotion of another fresh image of the same size,
    # once the operator is warm (the first one may meet watches still starting up).
    spec = _promotion(
        _seeded(testbed, size),
        testbed.unique(tag="candidate"),
        testbed.unique(testbed.auth_registry),
    )
    started = time.monotonic()
    wfs.create("again", spec)
    assert wfs.wait_phase("again")["phase"] == "Succeeded"
    workflow_seconds = time.monotonic() - started
    cli_seconds = _docker_cli_promotion(testbed, tmp_path, size)
    print(
        f"\npromotion: workflow {workflow_seconds:.2f}s vs docker CLI {cli_seconds:.2f}s"
        f" (first workflow, operator just started: {first_seconds:.2f}s)"
    )


@pytest.fixture
def pool(kube_api: client.ApiClient, log_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """Three labelled Node objects, each with its own agent (all on the bed's one engine)."""
    core = client.CoreV1Api(kube_api)
    label = uuid.uuid4().hex[:8]
    nodes = [f"e2e-fan-{label}-{i}" for i in range(3)]
    agents = [OperatorProcess(node, "--role", "agent", log_dir=log_dir) for node in nodes]
    with ExitStack() as stack:
        for node in nodes:
            core.create_node(
                client.V1Node(metadata=client.V1ObjectMeta(name=node, labels={POOL_LABEL: label}))
            )
            stack.callback(core.delete_node, node)
        stack.callback(_stop_all, agents)
        for agent in agents:
            agent.start()
        # The controller reads the agents' Leases every few seconds.
        time.sleep(4)
        yield label, nodes


def _stop_all(agents: list[OperatorProcess]) -> None:
    """SIGTERM every agent first, then wait: they shut down side by side."""
    for agent in agents:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.terminate()
    for agent in agents:
        agent.stop()


def test_fan_out_runs_the_graph_on_every_matching_node(
    operator: OperatorProcess, wfs: Workflows, testbed: Testbed, pool: tuple[str, list[str]]
) -> None:
    label, nodes = pool
    source = _seeded(testbed)
    warm = testbed.unique(tag="warm")
    wfs.create(
        "warmup",
        {
            "allNodes": True,
            "nodeSelector": {POOL_LABEL: label},
            "parallelism": 2,
            "steps": [
                {"name": "pull", "action": "Pull", "image": source},
                {
                    "name": "tag",
                    "action": "Tag",
                    "imageFrom": {"step": "pull"},
                    "dependsOn": ["pull"],
                    "target": warm,
                    "force": True,
                },
            ],
        },
    )
    status = wfs.wait_phase("warmup", timeout=120)
    assert status["phase"] == "Succeeded", status
    assert sorted(status["nodes"]) == sorted(nodes) and MAIN_NODE not in status["nodes"]
    for node in nodes:
        assert status["nodes"][node]["phase"] == "Succeeded"
        assert status["nodes"][node]["steps"]["tag"]["phase"] == "Succeeded"
    assert status["counts"]["total"] == 6 and status["progress"] == "6/6"
    children = wfs.children("warmup")
    assert len(children) == 6
    assert sorted({c["spec"]["nodeName"] for c in children}) == sorted(nodes)
    # parallelism 2: the last node started only once one of the first two had finished.
    by_node: dict[str, list[Obj]] = {}
    for child in children:
        by_node.setdefault(child["spec"]["nodeName"], []).append(child)
    first = {n: min(c["metadata"]["creationTimestamp"] for c in cs) for n, cs in by_node.items()}
    done = {n: max(c["status"]["completionTime"] for c in cs) for n, cs in by_node.items()}
    last = max(first, key=lambda n: first[n])
    assert first[last] >= min(done[n] for n in nodes if n != last)
    assert testbed.image_id(warm) == status["nodes"][nodes[0]]["steps"]["pull"]["imageId"]


def test_fail_fast_cancels_and_rolls_back_the_moved_tag(
    operator: OperatorProcess, wfs: Workflows, ops: Ops, testbed: Testbed
) -> None:
    stable = testbed.unique(tag="stable")
    before = testbed.image_id(testbed.make_image(stable))
    source = _seeded(testbed)
    big = 8 * 1024 * 1024
    slow = _seeded(testbed, big)
    proxy = FakeSlowLink(testbed.registry, rate=256 * 1024)
    try:
        wfs.create(
            "release",
            {
                "nodeName": MAIN_NODE,
                "onFailure": "Rollback",
                "steps": [
                    {"name": "pull", "action": "Pull", "image": source},
                    {
                        "name": "slow",
                        "action": "Pull",
                        "image": f"{proxy.address}/{slow.split('/', 1)[1]}",
                    },
                    {
                        "name": "tag",
                        "action": "Tag",
                        "imageFrom": {"step": "pull"},
                        "dependsOn": ["pull"],
                        "target": stable,
                        "force": True,
                    },
                    # No credentials for the auth registry: fails for good (AuthFailed).
                    {
                        "name": "push",
                        "action": "Push",
                        "image": stable,
                        "dependsOn": ["tag"],
                        "target": testbed.unique(testbed.auth_registry),
                    },
                    {
                        "name": "after",
                        "action": "Tag",
                        "image": stable,
                        "dependsOn": ["slow"],
                        "target": testbed.unique(),
                    },
                ],
            },
        )
        status = wfs.wait_phase("release", timeout=90)
        wait_until(lambda: proxy.active == 0, 20, "the slow pull's transfer stopped")
    finally:
        proxy.close()
    assert status["phase"] == "Failed", status
    phases = {name: step["phase"] for name, step in status["steps"].items()}
    assert phases == {
        "pull": "Succeeded",
        "tag": "Succeeded",
        "push": "Failed",
        "slow": "Cancelled",
        "after": "Skipped",
    }
    assert status["steps"]["push"]["error"]["reason"] == "AuthFailed"
    assert status["steps"]["slow"]["error"]["reason"] == "Cancelled"
    assert proxy.bytes_down < big
    assert condition(status, "Stalled")["reason"] == "StepFailed"
    assert status["rolledBack"] == [stable]
    assert testbed.image_id(stable) == before
    names = [c["metadata"]["name"] for c in wfs.children("release")]
    assert not any(n.endswith("-slow") for n in names)  # cancelled = deleted
    [rollback] = [
        c
        for c in wfs.children("release")
        if c["metadata"]["labels"].get("imageops.dev/role") == "rollback"
    ]
    assert rollback["spec"]["image"] == before and rollback["spec"]["force"] is True
    # The Failed Event is posted after the status write that a user saw first.
    wait_until(
        lambda: {"Started", "RollingBack", "Failed"} <= set(wfs.events("release")),
        10,
        "the workflow's Started, RollingBack and Failed Events",
    )


def test_a_cycle_is_rejected_with_its_path(
    operator: OperatorProcess, wfs: Workflows, testbed: Testbed
) -> None:
    image = testbed.unique()
    wfs.create(
        "loop",
        {
            "nodeName": MAIN_NODE,
            "steps": [
                {"name": "a", "action": "Pull", "image": image},
                {"name": "b", "action": "Pull", "image": image, "dependsOn": ["a", "d"]},
                {"name": "c", "action": "Pull", "image": image, "dependsOn": ["b"]},
                {"name": "d", "action": "Pull", "image": image, "dependsOn": ["c"]},
            ],
        },
    )
    status = wfs.wait_phase("loop", timeout=30)
    assert status["phase"] == "Failed"
    assert condition(status, "Stalled")["reason"] == "InvalidWorkflow"
    assert "dependency cycle: b -> d -> c -> b" in status["message"]
    assert wfs.children("loop") == []
    # Unknown and duplicate names never reach the controller: the API server refuses them.
    with pytest.raises(ApiException) as err:
        wfs.create(
            "unknown",
            {"steps": [{"name": "a", "action": "Pull", "image": image, "dependsOn": ["nope"]}]},
        )
    assert err.value.status == 422 and "must name steps of this workflow" in str(err.value.body)


def test_reapply_unchanged_does_not_rerun_and_a_changed_spec_does(
    operator: OperatorProcess, wfs: Workflows, testbed: Testbed, tmp_path: Path
) -> None:
    source = testbed.make_image(testbed.unique())
    manifest = tmp_path / "wf.yaml"

    def apply(target: str) -> str:
        manifest.write_text(
            "apiVersion: imageops.dev/v1alpha1\nkind: Workflow\n"
            f"metadata: {{name: gitops, namespace: {wfs.namespace}}}\n"
            f"spec: {{nodeName: {MAIN_NODE}, steps: [{{name: tag, action: Tag, "
            f"image: '{source}', target: '{target}', force: true}}]}}\n"
        )
        return subprocess.run(
            ["kubectl", "apply", "-f", str(manifest)], check=True, capture_output=True, text=True
        ).stdout

    first_target = testbed.unique()
    apply(first_target)
    first = wfs.wait_phase("gitops")
    uid = wfs.children("gitops")[0]["metadata"]["uid"]
    for _ in range(3):
        # kubectl may say "configured": a merge patch replaces the steps list whole, and the
        # API server filled in its items' defaults. Nothing changes: same generation.
        apply(first_target)
        assert (wfs.get("gitops") or {})["metadata"]["generation"] == 1
    time.sleep(3)
    again = wfs.status("gitops")
    assert (again["runId"], again["completionTime"]) == (first["runId"], first["completionTime"])
    assert [c["metadata"]["uid"] for c in wfs.children("gitops")] == [uid]
    assert wfs.events("gitops").count("Started") == 1
    second_target = testbed.unique()
    apply(second_target)
    second = wfs.wait_phase("gitops")
    assert second["phase"] == "Succeeded" and second["runId"].endswith("-g2")
    assert second["runId"] != first["runId"]
    wait_until(
        lambda: [c["metadata"]["name"] for c in wfs.children("gitops")] == ["gitops-g2-tag"],
        10,
        "generation 1's child deleted",
    )
    assert testbed.image_id(second_target) == testbed.image_id(source)


def test_deadline_session_ttl_and_deletion_clean_up(
    operator: OperatorProcess, wfs: Workflows, testbed: Testbed, kube_api: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    slow = _seeded(testbed, 4 * 1024 * 1024)
    proxy = FakeSlowLink(testbed.registry, rate=64 * 1024)
    via = f"{proxy.address}/{slow.split('/', 1)[1]}"
    try:
        wfs.create(
            "deadline",
            {
                "nodeName": MAIN_NODE,
                "createSession": True,
                "activeDeadlineSeconds": 3,
                "ttlSecondsAfterFinished": 4,
                "steps": [
                    {"name": "slow", "action": "Pull", "image": via},
                    {
                        "name": "next",
                        "action": "Tag",
                        "image": via,
                        "target": testbed.unique(),
                        "dependsOn": ["slow"],
                    },
                ],
            },
        )
        status = wfs.wait_phase("deadline", timeout=30)
        assert (
            status["phase"] == "Failed"
            and condition(status, "Stalled")["reason"] == "DeadlineExceeded"
        )
        assert {n: s["phase"] for n, s in status["steps"].items()} == {
            "slow": "Cancelled",
            "next": "Skipped",
        }
        assert status["sessionName"] == "deadline"
        session = custom.get_namespaced_custom_object(
            GROUP, VERSION, wfs.namespace, "imagesessions", "deadline"
        )
        assert session["metadata"]["ownerReferences"][0]["name"] == "deadline"
        # ttlSecondsAfterFinished: the workflow, its children and its session go away.
        wait_until(lambda: wfs.get("deadline") is None, 20, "deletion after the TTL")
        wait_until(lambda: wfs.children("deadline") == [], 10, "children deleted")
        with pytest.raises(ApiException) as err:
            custom.get_namespaced_custom_object(
                GROUP, VERSION, wfs.namespace, "imagesessions", "deadline"
            )
        assert err.value.status == 404
        # Deleting a running workflow deletes its running child at once (no finalizer).
        wfs.create(
            "doomed",
            {"nodeName": MAIN_NODE, "steps": [{"name": "slow", "action": "Pull", "image": via}]},
        )
        wait_until(lambda: wfs.children("doomed"), 20, "the child created")
        wfs.delete("doomed")
        wait_until(lambda: wfs.get("doomed") is None, 5, "deletion without a finalizer")
        wait_until(lambda: wfs.children("doomed") == [], 10, "the child deleted")
        wait_until(lambda: proxy.active == 0, 20, "the transfer stopped")
    finally:
        proxy.close()


def test_a_selector_without_a_live_node_waits_in_pending(
    operator: OperatorProcess, wfs: Workflows, testbed: Testbed
) -> None:
    wfs.create(
        "nowhere",
        {
            "nodeSelector": {POOL_LABEL: "none-" + uuid.uuid4().hex[:6]},
            "steps": [{"name": "a", "action": "Pull", "image": testbed.unique()}],
        },
    )
    status = wfs.wait_phase("nowhere", ("Pending",), timeout=30)
    assert "waiting for a node with a live imageops agent matching" in status["message"]
    assert condition(status, "Reconciling")["reason"] == "NoLiveNode"
    time.sleep(3)
    assert wfs.status("nowhere")["phase"] == "Pending" and wfs.children("nowhere") == []
    # activeDeadlineSeconds counts while waiting for a node too.
    wfs.create(
        "impatient",
        {
            "nodeSelector": {POOL_LABEL: "none"},
            "activeDeadlineSeconds": 2,
            "steps": [{"name": "a", "action": "Pull", "image": testbed.unique()}],
        },
    )
    status = wfs.wait_phase("impatient", timeout=30)
    assert status["phase"] == "Failed" and "exceeded while waiting" in status["message"]
    assert condition(status, "Stalled")["reason"] == "DeadlineExceeded"
