"""A fan-out to 50 simulated nodes: the real controller and API server, a FakeAgentFleet.

The fleet (bench/fleet.py) stands in for 50 agents only to simulate scale: it
writes the real agent's statuses (services.lifecycle) to the operations the
controller creates, one node failing every operation. The controller is the
session's real operator process; its status must come out bounded (succeeded
nodes listed by phase only, summarised per step), the failed node in full.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from bench.fleet import FakeAgentFleet, FleetProfile, FleetThread, Latency, fake_digest
from bench.fleet_nodes import FakeNodePool
from kubernetes import client

from tests.e2e.harness import OperatorProcess, wait_until

pytestmark = pytest.mark.e2e

GROUP, VERSION = "imageops.dev", "v1alpha1"
POOL_LABEL = "e2e.imageops.dev/pool"
NODES = 50
IMAGE = "registry.invalid:5000/team/app:1.4.0"


@pytest.fixture
def fleet(kube_api: client.ApiClient, namespace: str) -> Iterator[tuple[str, list[str], str]]:
    """50 labelled Node objects with live agent Leases, served by one simulated agent."""
    label = uuid.uuid4().hex[:8]
    nodes = [f"e2e-sim-{label}-{i:02d}" for i in range(NODES)]
    failing = nodes[7]
    # Leases where the session's operator reads them (it runs without --lease-namespace).
    pool = FakeNodePool(kube_api, "default", nodes, {POOL_LABEL: label}, lease_duration=15)
    latency = Latency("uniform", 0.05, 0.8)
    profile = FleetProfile(latency=latency, failing_nodes=frozenset({failing}))
    runner = FleetThread(FakeAgentFleet(kube_api, namespace, nodes, profile))
    try:
        pool.create()
        pool.start()
        runner.start()
        time.sleep(4)  # the controller reads the Leases every 3 s
        yield label, nodes, failing
    finally:
        runner.stop()
        pool.delete()


def test_a_fan_out_to_50_simulated_nodes_ends_with_a_bounded_status(
    operator: OperatorProcess,
    kube_api: client.ApiClient,
    namespace: str,
    fleet: tuple[str, list[str], str],
) -> None:
    label, nodes, failing = fleet
    custom = client.CustomObjectsApi(kube_api)
    steps = [
        {"name": "pull", "action": "Pull", "image": IMAGE},
        {"name": "tag", "action": "Tag", "imageFrom": {"step": "pull"}, "target": "app:warm"},
        {
            "name": "stable",
            "action": "Tag",
            "imageFrom": {"step": "pull"},
            "dependsOn": ["tag"],
            "target": "app:stable",
        },
    ]
    spec = {
        "allNodes": True,
        "nodeSelector": {POOL_LABEL: label},
        "parallelism": 20,
        "failFast": False,
        "steps": steps,
    }
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {"name": "warmup"},
        "spec": spec,
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", body)

    def final() -> dict[str, object] | None:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", "warmup")
        status = obj.get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_until(final, timeout=240, what="the 50-node fan-out to finish", interval=1)
    assert status["phase"] == "Failed", status["message"]
    assert f"step pull on node {failing} failed: RegistryUnavailable" in str(status["message"])
    assert status["nodeCounts"] == {
        "total": NODES,
        "succeeded": NODES - 1,
        "failed": 1,
        "running": 0,
        "pending": 0,
    }
    assert status["nodesProgress"] == f"{NODES}/{NODES}"
    assert status["counts"]["succeeded"] == 3 * (NODES - 1) and status["counts"]["skipped"] == 2
    listed = status["nodes"]
    assert sorted(listed) == sorted(nodes)
    # The failed node in full, the succeeded ones by phase only, summarised per step.
    assert listed[failing]["steps"]["pull"]["error"]["reason"] == "RegistryUnavailable"
    assert listed[failing]["steps"]["stable"]["phase"] == "Skipped"
    assert all(listed[n] == {"phase": "Succeeded"} for n in nodes if n != failing)
    digest = fake_digest(IMAGE)
    for step in ("pull", "tag", "stable"):
        summary = status["succeeded"][step]
        assert (summary["nodes"], summary["digest"], summary["digestNodes"]) == (
            NODES - 1,
            digest,
            NODES - 1,
        )
    size = len(json.dumps(status, separators=(",", ":")))
    assert size < 16 * 1024, size
    children = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "imageoperations", label_selector="imageops.dev/workflow=warmup"
    )["items"]
    assert len(children) == 3 * (NODES - 1) + 1
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Ready"] == ("False", "StepFailed")
    assert conditions["Stalled"] == ("True", "StepFailed")
