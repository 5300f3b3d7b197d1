"""ImageSession end to end: statistics, restarts, expiry with archived history, deletion, bounds."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.e2e.fixtures import MAIN_NODE
from tests.e2e.harness import GROUP, VERSION, Obj, OperatorProcess, Ops, condition, wait_until
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e

SESSIONS, WORKFLOWS = "imagesessions", "workflows"
RECORDED = "imageops.dev/recorded-generation"


class Sessions:
    """ImageSessions and Workflows of one namespace, through the custom-objects API."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def create(self, name: str, spec: Obj) -> Obj:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ImageSession",
            "metadata": {"name": name},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, self.namespace, SESSIONS, body
        )

    def get(self, name: str, plural: str = SESSIONS) -> Obj | None:
        try:
            return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
                GROUP, VERSION, self.namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str) -> Obj:
        return ((self.get(name) or {}).get("status")) or {}

    def delete(self, name: str, plural: str = SESSIONS) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)

    def workflow(self, name: str, session: str) -> Obj:
        """A one-step dry-run Workflow in ``session``."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Workflow",
            "metadata": {"name": name},
            "spec": {
                "nodeName": MAIN_NODE,
                "sessionRef": {"name": session},
                "steps": [
                    {
                        "name": "pull",
                        "action": "Pull",
                        "dryRun": True,
                        "image": "127.0.0.1:1/none/such:1",
                    }
                ],
            },
        }
        return self.custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, self.namespace, WORKFLOWS, body
        )

    def wait_counted(self, name: str, finished: int, timeout: float = 60) -> Obj:
        """Wait until the session counted ``finished`` operations and none is active."""

        def check() -> Obj | None:
            status = self.status(name)
            jobs = status.get("jobs") or {}
            done = jobs.get("succeeded", 0) + jobs.get("failed", 0)
            return status if done >= finished and jobs.get("active") == 0 else None

        return wait_until(check, timeout, f"session {name} counting {finished}")  # type: ignore[no-any-return]

    def configmap(self, name: str) -> client.V1ConfigMap | None:
        try:
            return self.core.read_namespaced_config_map(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def events(self, name: str) -> list[str]:
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [str(e.reason) for e in events]


@pytest.fixture
def sessions(kube_api: client.ApiClient, namespace: str) -> Sessions:
    return Sessions(kube_api, namespace)


def _in(session: str, spec: Obj) -> Obj:
    return {"nodeName": MAIN_NODE, "sessionRef": {"name": session}, **spec}


def test_session_statistics_after_a_mixed_run(
    operator: OperatorProcess, ops: Ops, sessions: Sessions, testbed: Testbed
) -> None:
    sessions.create("stats", {"historyLimit": 10})
    cached = testbed.make_image(testbed.unique())
    testbed.push_open(cached)  # on the node and in the registry: an IfNotPresent cache hit
    fetched = testbed.make_image(testbed.unique())
    testbed.push_open(fetched)
    testbed.rmi(fetched)  # only in the registry: a real pull
    ops.create(
        "tag",
        _in("stats", {"action": "Tag", "image": cached, "target": testbed.unique()}),
        labels={"imageops.dev/workflow": "wf1"},
    )
    ops.create(
        "hit", _in("stats", {"action": "Pull", "image": cached, "pullPolicy": "IfNotPresent"})
    )
    ops.create("miss", _in("stats", {"action": "Pull", "image": fetched}))
    ops.create("missing", _in("stats", {"action": "Pull", "image": testbed.unique()}))
    phases = {name: ops.wait_phase(name)["phase"] for name in ("tag", "hit", "miss", "missing")}
    assert phases == {
        "tag": "Succeeded",
        "hit": "Succeeded",
        "miss": "Succeeded",
        "missing": "Failed",
    }
    status = sessions.wait_counted("stats", 4)

    assert status["jobs"] == {"active": 0, "succeeded": 3, "failed": 1, "total": 4}
    pull, tag = status["actions"]["Pull"], status["actions"]["Tag"]
    assert (pull["count"], pull["succeeded"], pull["failed"]) == (3, 2, 1)
    assert pull["minSeconds"] <= pull["avgSeconds"] <= pull["maxSeconds"]
    assert (tag["count"], tag["succeeded"]) == (1, 1) and "Push" not in status["actions"]
    assert status["cacheHits"] == 1 and status["cacheHitRatio"] == 0.5
    assert status["errors"]["byReason"] == {"NotFound": 1}
    assert [e["operation"] for e in status["errors"]["recent"]] == ["missing"]
    executions = {e["operation"]: e for e in status["recentExecutions"]}
    assert set(executions) == {"tag", "hit", "miss", "missing"}
    assert executions["tag"]["workflow"] == "wf1" and executions["tag"]["image"] == cached
    assert executions["missing"]["result"] == "Failed"
    assert executions["missing"]["reason"] == "NotFound"
    assert all(e["completionTime"] and e["durationSeconds"] >= 0 for e in executions.values())
    assert status["phase"] == "Idle" and status["lastActivityTime"]
    assert "expiresAt" not in status  # no ttlSecondsAfterIdle
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Reconciling")["status"] == "False"
    assert status["observedGeneration"] == 1
    for name in ("tag", "hit", "miss", "missing"):
        meta = (ops.get(name) or {})["metadata"]
        assert wait_until(
            lambda m=name: (
                (ops.get(m) or {})["metadata"].get("annotations", {}).get(RECORDED) == "1"
            ),
            10,
            f"{name} marked",
        ), meta

    # History outlives the operations.
    ops.delete("miss")
    time.sleep(2.5)
    after = sessions.status("stats")
    assert after["jobs"] == status["jobs"] and after["actions"] == status["actions"]
    sessions.delete("stats")
    wait_until(
        lambda: all(ops.get(n) is None for n in ("tag", "hit", "missing")),
        30,
        "the session's operations deleted with it",
    )


def test_restarted_controller_counts_each_operation_once(
    operator: OperatorProcess, ops: Ops, sessions: Sessions, testbed: Testbed
) -> None:
    sessions.create("restart", {"historyLimit": 100})
    source = testbed.make_image(testbed.unique())
    names = [f"op-{i:02d}" for i in range(60)]
    for name in names:
        ops.create(
            name,
            _in(
                "restart",
                {"action": "Tag", "image": source, "dryRun": True, "target": testbed.unique()},
            ),
        )
    # Kill the whole operator (controller and agent) while operations finish and are counted.
    wait_until(
        lambda: (sessions.status("restart").get("jobs") or {}).get("succeeded", 0) >= 1,
        60,
        "the first operations counted",
        interval=0.05,
    )
    operator.kill()
    operator.start()
    status = sessions.wait_counted("restart", len(names), timeout=120)
    time.sleep(3)  # room for a double count to show up
    status = sessions.status("restart")
    assert status["jobs"]["succeeded"] == len(names) and status["jobs"]["failed"] == 0
    assert status["actions"]["Tag"]["count"] == len(names)
    recent = [e["operation"] for e in status["recentExecutions"]]
    assert sorted(recent) == names
    sessions.delete("restart")


def test_expiry_archives_the_history_and_deletes_the_operations(
    operator: OperatorProcess, ops: Ops, sessions: Sessions, testbed: Testbed
) -> None:
    sessions.create("brief", {"ttlSecondsAfterIdle": 3, "preserveLogs": True})
    source = testbed.make_image(testbed.unique())
    ops.create("ok", _in("brief", {"action": "Tag", "image": source, "target": testbed.unique()}))
    ops.create(
        "bad",
        _in("brief", {"action": "Tag", "image": testbed.unique(), "target": testbed.unique()}),
    )
    assert ops.wait_phase("ok")["phase"] == "Succeeded"
    assert ops.wait_phase("bad")["phase"] == "Failed"
    idle = sessions.wait_counted("brief", 2)
    assert idle["phase"] == "Idle" and idle["expiresAt"]

    def expired() -> Obj | None:
        status = sessions.status("brief")
        return status if status.get("phase") == "Expired" else None

    status = wait_until(expired, 30, "session Expired")
    assert status["archivedTo"] == "brief-history"
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Expired")
    assert (condition(status, "Stalled")["status"], condition(status, "Stalled")["reason"]) == (
        "True",
        "Expired",
    )
    archive = sessions.configmap("brief-history")
    assert archive is not None and archive.metadata.labels["imageops.dev/session"] == "brief"
    history = json.loads(archive.data["history.json"])
    assert history["reason"] == "Expired" and history["session"]["name"] == "brief"
    assert history["status"]["jobs"]["succeeded"] == 1
    assert history["status"]["errors"]["byReason"] == {"NotFound": 1}
    assert {e["operation"] for e in history["status"]["recentExecutions"]} == {"ok", "bad"}
    wait_until(
        lambda: ops.get("ok") is None and ops.get("bad") is None, 30, "operations deleted on expiry"
    )
    assert "Expired" in sessions.events("brief")
    sessions.delete("brief")


def test_deleting_a_session_archives_and_cleans_up(
    operator: OperatorProcess, ops: Ops, sessions: Sessions, testbed: Testbed
) -> None:
    sessions.create("doomed", {"preserveLogs": True})
    source = testbed.make_image(testbed.unique())
    ops.create(
        "done", _in("doomed", {"action": "Tag", "image": source, "target": testbed.unique()})
    )
    # Nothing listens on port 1: a retryable failure, retried for a long while (active).
    ops.create(
        "waiting",
        _in("doomed", {"action": "Pull", "image": "127.0.0.1:1/none/such:1", "backoffLimit": 20}),
    )
    ops.create(
        "outsider",
        {"action": "Tag", "image": source, "target": testbed.unique(), "nodeName": MAIN_NODE},
    )
    assert ops.wait_phase("done")["phase"] == "Succeeded"

    def active() -> Obj | None:
        status = sessions.status("doomed")
        jobs = status.get("jobs") or {}
        return status if jobs.get("active") == 1 and jobs.get("succeeded") == 1 else None

    status = wait_until(active, 30, "one active and one counted operation")
    assert status["phase"] == "Active" and "expiresAt" not in status
    assert condition(status, "Reconciling")["status"] == "True"
    assert condition(status, "Ready")["status"] == "False"

    sessions.workflow("flow", "doomed")
    started = time.monotonic()
    sessions.delete("doomed")
    assert sessions.get("doomed") is None  # no finalizer holds it
    wait_until(
        lambda: ops.get("done") is None and ops.get("waiting") is None,
        30,
        "the session's operations deleted",
    )
    wait_until(lambda: sessions.get("flow", WORKFLOWS) is None, 30, "the workflow deleted")
    archive = wait_until(lambda: sessions.configmap("doomed-history"), 30, "archive written")
    history = json.loads(archive.data["history.json"])
    assert history["reason"] == "Deleted"
    assert [e["operation"] for e in history["status"]["recentExecutions"]] == ["done"]
    assert ops.get("outsider") is not None  # not in the session
    print(f"session deletion cleaned up in {time.monotonic() - started:.1f}s")


@pytest.mark.timeout(900)
def test_status_stays_bounded_over_1000_operations(
    operator: OperatorProcess, ops: Ops, sessions: Sessions, testbed: Testbed
) -> None:
    limit, count = 50, 1000
    sessions.create("bulk", {"historyLimit": limit})
    source = testbed.make_image(testbed.unique())
    started = time.monotonic()

    def create(i: int) -> Any:
        return ops.create(
            f"bulk-{i:04d}",
            _in(
                "bulk",
                {
                    "action": "Tag",
                    "image": source,
                    "target": f"{testbed.registry}/bulk/t{i}:1",
                    "dryRun": True,
                },
            ),
        )

    writes = _count_writes(sessions, "bulk")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))
    created = time.monotonic() - started
    status = sessions.wait_counted("bulk", count, timeout=800)
    elapsed = time.monotonic() - started
    size = len(json.dumps(status))
    body = sessions.get("bulk") or {}
    agents = _seconds_between(body["metadata"]["creationTimestamp"], status["lastActivityTime"])
    print(
        f"session status: {size} bytes after {count} operations, {elapsed:.1f} s "
        f"(created in {created:.1f} s, the last finished after ~{agents:.0f} s; "
        f"{writes[0]} session status writes)"
    )
    assert writes[0] < count / 5  # coalesced, not one write per operation
    assert status["jobs"] == {"active": 0, "succeeded": count, "failed": 0, "total": count}
    assert status["actions"]["Tag"]["count"] == count
    assert len(status["recentExecutions"]) == limit
    # historyLimit x (one execution + one error, each well under 600 bytes) + counters,
    # conditions and the bounded status.recorded list.
    bound = limit * 1200 + 4096
    assert size < bound <= 64 * 1024, (size, bound)

    def marked() -> bool:
        items = sessions.custom.list_namespaced_custom_object(
            GROUP, VERSION, sessions.namespace, "imageoperations"
        )["items"]
        return (
            sum((i["metadata"].get("annotations") or {}).get(RECORDED) == "1" for i in items)
            == count
        )

    wait_until(marked, 60, "every operation marked as counted", interval=2)
    started = time.monotonic()
    sessions.delete("bulk")

    def gone() -> bool:
        return not sessions.custom.list_namespaced_custom_object(
            GROUP, VERSION, sessions.namespace, "imageoperations", limit=1
        )["items"]

    wait_until(gone, 300, "the session's operations deleted", interval=2)
    print(f"session deletion removed {count} operations in {time.monotonic() - started:.1f} s")


def _seconds_between(start: str, end: str) -> float:
    def parse(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()


def _count_writes(sessions: Sessions, name: str) -> list[int]:
    """Count MODIFIED events of one session in a background thread (a one-element list)."""
    counter = [0]

    def run() -> None:
        stream = watch.Watch().stream(
            sessions.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            sessions.namespace,
            SESSIONS,
            field_selector=f"metadata.name={name}",
            timeout_seconds=900,
        )
        for event in stream:
            counter[0] += event["type"] == "MODIFIED"

    threading.Thread(target=run, daemon=True).start()
    time.sleep(0.5)  # the watch is established
    return counter
