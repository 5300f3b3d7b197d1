"""The agent in-process, through its public API (observe, shutdown) on the bed's dockerd.

What it must promise: the first status of a run is held back for the start
grace and, when the run finishes sooner, merged into the one final write; a
retry waits for the nextRetryTime it recorded, also across a restart.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch

from imageops.adapters.backends import make_backend
from imageops.adapters.kube import AsyncKube, Kube
from imageops.adapters.kubehttp import KubeHttp
from imageops.adapters.pull_records import FilePullRecords
from imageops.handlers.imageoperation import parse
from imageops.models.base import GROUP, VERSION
from imageops.models.imageoperation import PLURAL as OPERATIONS
from imageops.workers.agent import Agent, AgentConfig
from imageops.workers.executor import AttemptExecutor
from tests.inproc.conftest import Bed, run
from tests.testbed import Testbed

NODE = "inproc-node"


@pytest.fixture(scope="module")
def testbed() -> Testbed:
    """The bed's Docker engine and registries."""
    return Testbed.from_env()


def _agent(bed: Bed, testbed: Testbed, state: Path, **config: Any) -> Agent:
    backend = make_backend("sdk", testbed.docker_host)
    kube = AsyncKube(Kube(KubeHttp(), component="imageops-inproc", host=NODE))
    executor = AttemptExecutor(backend, 2, FilePullRecords(str(state)))
    return Agent(AgentConfig(node_name=NODE, **config), executor, kube)


def _create(bed: Bed, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    spec = {"nodeName": NODE, **spec}
    return bed.create(
        OPERATIONS, {"kind": "ImageOperation", "metadata": {"name": name}, "spec": spec}
    )


async def _until(bed: Bed, name: str, done: Any, timeout: float) -> dict[str, Any]:
    """Short polls of the API server until ``done(status)``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        body = bed.get(OPERATIONS, name)
        status = (body or {}).get("status") or {}
        if done(status):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}: no such status within {timeout}s: {status}")


@pytest.fixture
def status_writes(bed: Bed) -> Iterator[list[dict[str, Any]]]:
    """Every status the API server stored for the namespace's operations (a real watch)."""
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    rv = bed.custom.list_namespaced_custom_object(GROUP, VERSION, bed.namespace, OPERATIONS)[
        "metadata"
    ]["resourceVersion"]

    def follow() -> None:
        w = watch.Watch()
        for event in w.stream(
            bed.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            bed.namespace,
            OPERATIONS,
            resource_version=rv,
            timeout_seconds=60,
        ):
            if event["type"] == "MODIFIED" and event["object"].get("status"):
                seen.append(event["object"]["status"])
            if stop.is_set():
                w.stop()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    yield seen
    stop.set()


def test_a_quick_run_writes_one_status_holding_the_held_back_first_one(
    bed: Bed, testbed: Testbed, tmp_path: Path, status_writes: list[dict[str, Any]]
) -> None:
    source = f"inproc/src-{uuid.uuid4().hex[:8]}:1"
    target = f"inproc/dst-{uuid.uuid4().hex[:8]}:1"
    testbed.make_image(source)
    body = _create(bed, "tag", {"action": "Tag", "image": source, "target": target})

    async def scenario() -> dict[str, Any]:
        agent = _agent(bed, testbed, tmp_path, start_grace=5.0)
        await agent.observe(None, *parse(body))
        status = await _until(bed, "tag", lambda s: s.get("phase") == "Succeeded", 30)
        await asyncio.sleep(0.3)  # let the watch deliver
        await agent.shutdown()
        return status

    try:
        status = run(scenario())
    finally:
        testbed.rmi(source, target)
    # One write: the Running status the grace held back never reached the API server,
    # and its fields (node, job, start, attempts) are in the result.
    assert [s.get("phase") for s in status_writes] == ["Succeeded"]
    assert status["node"] == NODE and status["jobId"] and status["startTime"]
    assert status["attempts"] == 1 and status["completionTime"] and status["imageId"]


def test_a_retry_waits_for_its_next_retry_time_across_a_restart(
    bed: Bed, testbed: Testbed, tmp_path: Path
) -> None:
    # Nothing listens on port 1: every attempt fails, retryably.
    body = _create(
        bed, "retry", {"action": "Pull", "image": "127.0.0.1:1/app:1", "backoffLimit": 3}
    )

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], datetime, datetime]:
        first = _agent(bed, testbed, tmp_path, backoff_base=4.0, backoff_cap=4.0, start_grace=0.0)
        await first.observe(None, *parse(body))
        waiting = await _until(bed, "retry", lambda s: s.get("nextRetryTime"), 30)
        await first.shutdown()  # the agent restarts while the retry waits
        restarted = datetime.now(UTC)
        second = _agent(bed, testbed, tmp_path, backoff_base=4.0, backoff_cap=4.0)
        fresh = bed.get(OPERATIONS, "retry")
        assert fresh is not None
        await second.observe(None, *parse(fresh))
        again = await _until(bed, "retry", lambda s: s.get("attempts", 0) >= 2, 30)
        seen = datetime.now(UTC)
        await second.shutdown()
        return waiting, again, restarted, seen

    waiting, again, restarted, seen = run(scenario())
    assert waiting["attempts"] == 1 and waiting["lastError"]["retryable"] is True
    due = datetime.fromisoformat(waiting["nextRetryTime"].replace("Z", "+00:00"))
    assert restarted < due  # the restart came while the retry waited
    # The restarted agent did not retry at once: the second attempt came at nextRetryTime
    # (stored in whole seconds, so allow the fraction it was rounded by).
    assert again["attempts"] == 2 and seen >= due - timedelta(seconds=1)


def test_a_late_write_that_undoes_the_final_status_is_undone_not_run_again(
    bed: Bed, testbed: Testbed, tmp_path: Path
) -> None:
    source = f"inproc/src-{uuid.uuid4().hex[:8]}:1"
    target = f"inproc/dst-{uuid.uuid4().hex[:8]}:1"
    testbed.make_image(source)
    body = _create(bed, "late", {"action": "Tag", "image": source, "target": target})

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        agent = _agent(bed, testbed, tmp_path, start_grace=0.0)
        await agent.observe(None, *parse(body))
        final = await _until(bed, "late", lambda s: s.get("phase") == "Succeeded", 30)
        # The fault (injected, the real API server does this after an etcd outage): an
        # intermediate write of the run that timed out on the client lands after the
        # final one and shows the operation Running again.
        undone = bed.patch_status(OPERATIONS, "late", {"phase": "Running", "message": "late"})
        await agent.observe(None, *parse(undone))
        again = await _until(bed, "late", lambda s: s.get("phase") == "Succeeded", 10)
        await asyncio.sleep(0.5)  # a second run, if one started, would write attempts 2
        await agent.shutdown()
        latest = bed.get(OPERATIONS, "late")
        assert latest is not None
        return final, latest["status"] if again else {}

    try:
        final, latest = run(scenario())
    finally:
        testbed.rmi(source, target)
    assert latest["phase"] == "Succeeded" and latest["attempts"] == final["attempts"] == 1
    assert latest["jobId"] == final["jobId"] and latest["completionTime"] == final["completionTime"]
