"""Agent heartbeats: assignment to live nodes and NodeUnavailable for gone ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.harness import OperatorProcess, Ops, wait_until
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e


@pytest.fixture
def labelled_node(kube_api: client.ApiClient) -> Iterator[str]:
    """A Node object labelled pool=gpu-test (the bed has no kubelet; the object is real)."""
    core = client.CoreV1Api(kube_api)
    name = "e2e-pool-node"
    core.create_node(
        client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={"pool": "gpu-test"}))
    )
    yield name
    core.delete_node(name)


def test_selector_assigns_to_a_live_matching_node(
    operator: OperatorProcess, ops: Ops, testbed: Testbed, log_dir: Path, labelled_node: str
) -> None:
    agent = OperatorProcess(labelled_node, "--role", "agent", log_dir=log_dir).start()
    try:
        ref = testbed.make_image(testbed.unique())
        ops.create(
            "select",
            {
                "action": "Tag",
                "image": ref,
                "target": testbed.unique(),
                "nodeSelector": {"pool": "gpu-test"},
            },
        )
        status = ops.wait_phase("select", timeout=60)
    finally:
        agent.stop()
    assert status["phase"] == "Succeeded" and status["node"] == labelled_node


def test_agent_gone_fails_with_node_unavailable(
    operator: OperatorProcess, ops: Ops, testbed: Testbed, log_dir: Path
) -> None:
    node = "e2e-vanishing"
    agent = OperatorProcess(node, "--role", "agent", log_dir=log_dir).start()
    agent.kill()
    ops.create("stranded", {"action": "Pull", "image": testbed.unique(), "nodeName": node})
    status = ops.wait_phase("stranded", timeout=60)
    assert status["phase"] == "Failed"
    assert status["lastError"]["reason"] == "NodeUnavailable"
    assert node in status["lastError"]["message"]


def test_no_matching_node_does_not_wait_for_ever(
    operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    ops.create(
        "nowhere",
        {"action": "Pull", "image": testbed.unique(), "nodeSelector": {"pool": "does-not-exist"}},
    )
    status = wait_until(
        lambda: ops.status("nowhere").get("phase") == "Failed" and ops.status("nowhere"),
        60,
        "NodeUnavailable",
    )
    assert status["lastError"]["reason"] == "NodeUnavailable"


def test_an_agent_receives_only_its_own_nodes_events(
    operator: OperatorProcess, ops: Ops, testbed: Testbed, log_dir: Path
) -> None:
    """The API server filters the agent's watch by spec.nodeName (a CRD selectable field)."""
    node = "e2e-filtered"
    ref = testbed.make_image(testbed.unique())
    agent = OperatorProcess(node, "--role", "agent", log_dir=log_dir).start()
    try:
        for i in range(3):
            ops.create(
                f"mine-{i}",
                {"action": "Tag", "image": ref, "target": testbed.unique(), "nodeName": node},
            )
        for i in range(5):
            ops.create(
                f"other-{i}",
                {
                    "action": "Tag",
                    "image": ref,
                    "target": testbed.unique(),
                    "nodeName": operator.node,
                },
            )
        for name in [f"mine-{i}" for i in range(3)] + [f"other-{i}" for i in range(5)]:
            assert ops.wait_phase(name)["phase"] == "Succeeded"
        samples = agent.metrics()
    finally:
        agent.stop()
    assert samples['imageops_watch_events_total{resource="imageoperations",role="agent"}'] >= 3
    assert samples["imageops_foreign_events_total"] == 0
