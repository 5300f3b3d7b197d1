"""The node's status-write budget, counted on the real API server.

Per node: one status write per finished operation, plus at most one
intermediate write (first status, Queued → Running, progress) per
``--progress-interval`` seconds (2 s: 0.5 per second) whatever the number of
running operations. Counted twice: by the agent's own metric, and by a watch of
the namespace (every write the API server persisted is one MODIFIED event).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, watch

from tests.e2e.harness import OperatorProcess, Ops, wait_until
from tests.faults import FakeSlowLink
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e
OPS = 12
INTERVAL = 2.0  # the default --progress-interval: 0.5 intermediate writes per second


class _WriteCounter:
    """Counts the MODIFIED events of the namespace's ImageOperations (persisted writes)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.count = 0
        self._watch = watch.Watch()
        self._api = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream = self._watch.stream(
            self._api.list_namespaced_custom_object,
            "imageops.dev",
            "v1alpha1",
            self._namespace,
            "imageoperations",
            timeout_seconds=300,
        )
        try:
            for event in stream:
                if event["type"] == "MODIFIED":
                    self.count += 1
        except Exception:
            return  # stopped (the stream is cut): the count is complete

    def stop(self) -> None:
        self._watch.stop()


@pytest.fixture
def counter(kube_api: client.ApiClient, namespace: str) -> Iterator[_WriteCounter]:
    counting = _WriteCounter(kube_api, namespace)
    time.sleep(0.5)  # the watch is open before the first object exists
    yield counting
    counting.stop()


def _writes(agent: OperatorProcess) -> dict[str, float]:
    samples = agent.metrics()
    return {
        kind: samples.get(f'imageops_status_writes_total{{kind="{kind}"}}', 0.0)
        for kind in ("final", "paced", "immediate")
    }


def test_status_writes_stay_within_the_node_budget(
    ops: Ops, testbed: Testbed, log_dir: Path, counter: _WriteCounter
) -> None:
    ref = testbed.make_image(testbed.unique(), size_bytes=3 * 1024 * 1024, layers=3)
    testbed.push_open(ref)
    testbed.rmi(ref)
    node = f"budget-{int(time.time()) % 10000}"
    # 128 KiB/s per connection; the daemon fetches the 3 layers at once: about 8 s.
    with FakeSlowLink(testbed.registry, rate=128 * 1024) as link:
        via = f"{link.address}/{ref.split('/', 1)[1]}"
        # The harness's 1 s interval replaced by the default (the last option wins).
        agent = OperatorProcess(
            node,
            "--role",
            "agent",
            "--max-concurrent",
            str(OPS),
            "--progress-interval",
            str(INTERVAL),
            log_dir=log_dir,
        ).start()
        try:
            before = _writes(agent)
            started = time.monotonic()
            # One image: the pulls share one transfer (single flight), and every one of them
            # has progress to show while it runs.
            for i in range(OPS):
                spec = {"action": "Pull", "image": via, "nodeName": node, "pullPolicy": "Always"}
                ops.create(f"pull-{i}", spec)
            done = [ops.wait_phase(f"pull-{i}", timeout=120) for i in range(OPS)]
            elapsed = time.monotonic() - started
            wait_until(lambda: _writes(agent)["final"] - before["final"] >= OPS, 10, "counted")
            after = _writes(agent)
        finally:
            agent.stop()
    assert all(s["phase"] == "Succeeded" for s in done), done
    written = {kind: after[kind] - before[kind] for kind in after}
    print(f"\n{OPS} pulls in {elapsed:.1f}s: agent writes {written}, persisted {counter.count}")
    assert written["final"] == OPS
    assert written["immediate"] == 0
    # Long enough for the budget to matter: many runs wanted progress writes meanwhile.
    assert elapsed > 3 * INTERVAL, elapsed
    assert written["paced"] <= elapsed / INTERVAL + 1, (written, elapsed)
    assert written["paced"] >= 1  # progress was shown while the pulls ran
    # The API server persisted no more than the agent counted (no write goes uncounted).
    time.sleep(1.0)
    assert OPS <= counter.count <= sum(written.values()), (counter.count, written)
    final = done[0]
    assert final["progress"]["summary"].startswith("100%")
