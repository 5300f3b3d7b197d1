"""Agent restarts, deletions mid-transfer and the command-line backend, end to end.

A FakeSlowLink (tests/faults.py) slows the registry down so that a pull is
reliably still running when the test acts; the registry and daemon are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import OperatorProcess, Ops, running_operator, wait_until
from tests.faults import FakeSlowLink
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e
BIG = 24 * 1024 * 1024  # random bytes: compresses to about the same size


@pytest.fixture
def slow_image(testbed: Testbed) -> Iterator[tuple[str, FakeSlowLink]]:
    """A 24 MB image in the open registry, reachable through a 4 MB/s proxy."""
    ref = testbed.make_image(testbed.unique(), size_bytes=BIG)
    testbed.push_open(ref)
    testbed.rmi(ref)
    proxy = FakeSlowLink(testbed.registry, rate=4 * 1024 * 1024)
    yield f"{proxy.address}/{ref.split('/', 1)[1]}", proxy
    proxy.close()


def test_agent_killed_mid_pull_resumes(
    ops: Ops, testbed: Testbed, log_dir: Path, slow_image: tuple[str, FakeSlowLink]
) -> None:
    via, proxy = slow_image
    node = "e2e-restart"
    agent = OperatorProcess(node, "--role", "agent", log_dir=log_dir).start()
    try:
        ops.create("resume", {"action": "Pull", "image": via, "nodeName": node})
        wait_until(lambda: proxy.bytes_down > 2 * 1024 * 1024, 60, "pull under way")
        assert ops.status("resume")["phase"] == "Running"
        agent.kill()
        agent = OperatorProcess(node, "--role", "agent", log_dir=log_dir).start()
        status = ops.wait_phase("resume", timeout=120)
    finally:
        agent.stop()
    assert status["phase"] == "Succeeded", status
    assert status["digest"] and testbed.image_id(via)
    reasons = [e["reason"] for e in ops.events("resume")]
    assert "Resumed" in reasons and "Succeeded" in reasons


def test_deleting_a_running_pull_stops_it(
    operator: OperatorProcess, ops: Ops, testbed: Testbed, slow_image: tuple[str, FakeSlowLink]
) -> None:
    via, proxy = slow_image
    ops.create("doomed", {"action": "Pull", "image": via, "nodeName": operator.node})
    wait_until(lambda: proxy.bytes_down > 1024 * 1024, 60, "pull under way")
    ops.delete("doomed")
    wait_until(lambda: ops.get("doomed") is None, 10, "deletion without a finalizer")
    # The agent cancels the Docker call, the daemon drops the registry transfer.
    wait_until(lambda: proxy.active == 0, 20, "registry connections closed")
    transferred = proxy.bytes_down
    assert transferred < BIG
    assert testbed.image_id(via) is None


def test_deletion_does_not_hang_without_an_agent(ops: Ops, testbed: Testbed) -> None:
    ops.create("orphan", {"action": "Pull", "image": testbed.unique(), "nodeName": "no-such-node"})
    ops.delete("orphan")
    wait_until(lambda: ops.get("orphan") is None, 10, "deletion")


def test_cli_backend_pulls_tags_and_pushes(ops: Ops, testbed: Testbed, log_dir: Path) -> None:
    node = "e2e-cli"
    source = testbed.make_image(testbed.unique())
    testbed.push_open(source)
    testbed.rmi(source)
    target = testbed.unique(testbed.auth_registry)
    ops.secret("regcred", testbed.dockerconfigjson())
    with running_operator(
        node, "--role", "agent", "--docker-backend", "cli", log_dir=log_dir
    ) as agent:
        ops.create("cli-pull", {"action": "Pull", "image": source, "nodeName": node})
        pulled = ops.wait_phase("cli-pull")
        ops.create(
            "cli-push",
            {
                "action": "Push",
                "image": source,
                "target": target,
                "nodeName": node,
                "credentials": {"secretRef": {"name": "regcred"}},
            },
        )
        pushed = ops.wait_phase("cli-push")
        log = agent.log()
    assert pulled["phase"] == "Succeeded" and pulled["digest"] == testbed.registry_digest(source)
    assert pushed["phase"] == "Succeeded", pushed
    assert pushed["digest"] == testbed.registry_digest(target, auth=True)
    assert testbed.auth_password not in log


def test_concurrent_identical_pulls_share_one_registry_pull(
    operator: OperatorProcess, ops: Ops, testbed: Testbed, slow_image: tuple[str, FakeSlowLink]
) -> None:
    via, proxy = slow_image
    names = [f"same-{i}" for i in range(5)]
    for name in names:
        ops.create(
            name,
            {"action": "Pull", "image": via, "nodeName": operator.node, "pullPolicy": "Always"},
        )
    statuses = [ops.wait_phase(name, timeout=120) for name in names]
    assert {s["phase"] for s in statuses} == {"Succeeded"}
    assert len({s["digest"] for s in statuses}) == 1
    # One transfer of the layer through the registry, not five.
    assert proxy.bytes_down < 2 * BIG, proxy.bytes_down
    assert operator.metrics()["imageops_shared_pulls_total"] >= 4
