"""Policy fails closed: a missing session, a cache hit without the right to pull.

And the failure metrics agree with the statuses: every failed operation is counted
once in imageops_errors_total under its reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.harness import OperatorProcess, Ops, condition, wait_until
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e
SESSIONS = "imagesessions"


def _own_operator(node: str, namespace: str, log_dir: Path, *extra: str) -> OperatorProcess:
    """Every role, watching only this test's namespace (so its metrics count only our work)."""
    proc = OperatorProcess(node, *extra, log_dir=log_dir)
    proc.args = [a for a in proc.args if a != "--all-namespaces"] + ["--namespace", namespace]
    return proc


@pytest.fixture
def fail_closed_operator(
    kube_api: client.ApiClient, namespace: str, log_dir: Path, testbed: Testbed
) -> Iterator[OperatorProcess]:
    """An operator of its own, with a short wait for missing sessions."""
    proc = _own_operator(
        f"fc-{namespace[-6:]}",
        namespace,
        log_dir,
        "--session-wait-seconds",
        "8",
        "--allowed-registries",
        f"{testbed.registry},{testbed.auth_registry},127.0.0.1",
        "--lease-namespace",
        namespace,
    ).start()
    yield proc
    proc.stop()


def _session(api: client.ApiClient, namespace: str, name: str, spec: dict[str, object]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "imageops.dev",
        "v1alpha1",
        namespace,
        SESSIONS,
        {
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": "ImageSession",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def test_missing_session_waits_then_runs_or_fails(
    fail_closed_operator: OperatorProcess,
    ops: Ops,
    testbed: Testbed,
    kube_api: client.ApiClient,
    namespace: str,
) -> None:
    node = fail_closed_operator.node
    image = testbed.make_image(testbed.unique())
    testbed.push_open(image)
    testbed.rmi(image)
    spec = {"action": "Pull", "image": image, "nodeName": node}
    ops.create("late", {**spec, "sessionRef": {"name": "late-session"}})
    ops.create("typo", {**spec, "sessionRef": {"name": "no-such-session"}})
    pending = ops.wait_phase("late", ("Pending",), timeout=30)
    assert condition(pending, "Ready")["reason"] == "SessionNotFound", pending
    assert "late-session" in condition(pending, "Ready")["message"]
    assert testbed.image_id(image) is None  # nothing ran without the session
    wait_until(lambda: "SessionNotFound" in [e["reason"] for e in ops.events("late")], 20, "event")
    _session(kube_api, namespace, "late-session", {"backoffLimit": 1})
    done = ops.wait_phase("late", timeout=60)
    assert done["phase"] == "Succeeded", done
    failed = ops.wait_phase("typo", timeout=60)
    assert failed["phase"] == "Failed", failed
    assert failed["lastError"]["reason"] == "SessionNotFound"
    assert "no-such-session" in failed["lastError"]["message"]
    assert condition(failed, "Stalled")["reason"] == "SessionNotFound"


def _secret_pull(ops: Ops, name: str, image: str, node: str, secret: str | None) -> dict:  # type: ignore[type-arg]
    spec: dict[str, object] = {
        "action": "Pull",
        "image": image,
        "nodeName": node,
        "pullPolicy": "IfNotPresent",
    }
    if secret:
        spec["credentials"] = {"secretRef": {"name": secret}}
    ops.create(name, spec)
    return ops.wait_phase(name, timeout=60)


def _manifest_requests(log_path: str, repo: str) -> int:
    text = Path(log_path).read_text(errors="replace")
    return len(re.findall(rf"/v2/{re.escape(repo)}/manifests/", text))


def test_cached_private_image_needs_the_right_to_pull(
    ops: Ops, testbed: Testbed, log_dir: Path, namespace: str
) -> None:
    import os

    node = f"cache-{namespace[-6:]}"
    source = testbed.make_image(testbed.unique())
    private = testbed.unique(testbed.auth_registry)
    repo = private.split("/", 1)[1].rsplit(":", 1)[0]
    ops.secret("good", testbed.dockerconfigjson())
    ops.secret("bad", testbed.dockerconfigjson(password="wrong-password"))
    agent = OperatorProcess(node, "--role", "agent", log_dir=log_dir).start()
    try:
        ops.create(
            "publish",
            {
                "action": "Push",
                "image": source,
                "target": private,
                "nodeName": node,
                "credentials": {"secretRef": {"name": "good"}},
            },
        )
        assert ops.wait_phase("publish")["phase"] == "Succeeded"
        testbed.rmi(private)
        first = _secret_pull(ops, "owner", private, node, "good")
        assert first["phase"] == "Succeeded", first  # through the registry: recorded
        assert testbed.image_id(private)

        wrong = _secret_pull(ops, "wrong", private, node, "bad")
        assert wrong["phase"] == "Failed", wrong
        assert wrong["lastError"]["reason"] == "AuthFailed"
        assert "cache hit needs the right to pull" in wrong["lastError"]["message"]
        anonymous = _secret_pull(ops, "anonymous", private, node, None)
        assert anonymous["phase"] == "Failed", anonymous
        assert anonymous["lastError"]["reason"] == "CredentialsNotFound"
        assert "anonymous" in anonymous["lastError"]["message"]

        # The owner's credentials were recorded at the pull; an agent restart keeps them.
        agent.stop()
        agent = OperatorProcess(node, "--role", "agent", log_dir=log_dir).start()
        before = _manifest_requests(os.environ["IMAGEOPS_AUTH_REGISTRY_LOG"], repo)
        again = _secret_pull(ops, "owner-again", private, node, "good")
        after = _manifest_requests(os.environ["IMAGEOPS_AUTH_REGISTRY_LOG"], repo)
        log = agent.log()
    finally:
        agent.stop()
    assert again["phase"] == "Succeeded" and again["cacheHit"], again
    assert after == before, "a recorded grant must not ask the registry again"
    assert testbed.auth_password not in log
    state = (log_dir / f"state-{node}" / "pulls.json").read_text()
    assert testbed.auth_password not in state and "wrong-password" not in state


def _sample(samples: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in samples.items() if k.startswith(prefix + "{")}


def test_every_failure_is_counted_under_its_reason(
    fail_closed_operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    node = fail_closed_operator.node
    specs = {
        # Passes the admission pattern (any digest of 32+ hex), fails the agent's check
        # (a sha256 digest has 64): the API server now rejects most bad references itself.
        "bad-ref": {"action": "Pull", "image": "seed/tiny@sha256:" + "a" * 32, "nodeName": node},
        "no-secret": {
            "action": "Pull",
            "image": testbed.unique(testbed.auth_registry),
            "nodeName": node,
            "credentials": {"secretRef": {"name": "absent"}},
        },
        "forbidden": {"action": "Pull", "image": "quay.example.com/x:1", "nodeName": node},
        "not-found": {
            "action": "Tag",
            "image": "127.0.0.1/none:1",
            "target": "127.0.0.1/x:1",
            "nodeName": node,
        },
        "no-session": {
            "action": "Pull",
            "image": testbed.unique(),
            "nodeName": node,
            "sessionRef": {"name": "absent"},
        },
        "no-agent": {"action": "Pull", "image": testbed.unique(), "nodeName": "no-agent-node"},
    }
    for name, spec in specs.items():
        ops.create(name, spec)
    reasons = {name: ops.wait_phase(name, timeout=60)["lastError"]["reason"] for name in specs}
    assert reasons == {
        "bad-ref": "InvalidReference",
        "no-secret": "CredentialsNotFound",
        "forbidden": "Forbidden",
        "not-found": "NotFound",
        "no-session": "SessionNotFound",
        "no-agent": "NodeUnavailable",
    }, reasons
    samples = fail_closed_operator.metrics()
    errors = _sample(samples, "imageops_errors_total")
    failed = {
        k: v
        for k, v in _sample(samples, "imageops_operations_total").items()
        if 'result="failed"' in k
    }
    assert sum(errors.values()) == sum(failed.values()), (errors, failed)
    # Another controller on the bed (the session's shared operator watches every
    # namespace) may fail "no-agent" first; everything else is this process's work.
    assert sum(failed.values()) >= len(specs) - 1, failed
    for reason in set(reasons.values()) - {"NodeUnavailable"}:
        assert samples[f'imageops_errors_total{{reason="{reason}"}}'] >= 1, reason


def _workflow(api: client.ApiClient, namespace: str, name: str, spec: dict[str, object]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "imageops.dev",
        "v1alpha1",
        namespace,
        "workflows",
        {
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def _workflow_status(api: client.ApiClient, namespace: str, name: str) -> dict[str, object]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "imageops.dev", "v1alpha1", namespace, "workflows", name
    )
    return obj.get("status") or {}  # type: ignore[no-any-return, union-attr]


def test_workflow_with_a_missing_session_waits_then_runs_or_fails(
    fail_closed_operator: OperatorProcess,
    ops: Ops,
    testbed: Testbed,
    kube_api: client.ApiClient,
    namespace: str,
) -> None:
    image = testbed.make_image(testbed.unique())
    steps = [{"name": "tag", "action": "Tag", "image": image, "target": image + "-wf"}]
    spec = {"nodeName": fail_closed_operator.node, "steps": steps}
    _workflow(kube_api, namespace, "late", {**spec, "sessionRef": {"name": "wf-session"}})
    _workflow(kube_api, namespace, "typo", {**spec, "sessionRef": {"name": "no-such"}})
    pending = wait_until(
        lambda: (
            (s := _workflow_status(kube_api, namespace, "late")).get("phase") == "Pending" and s
        ),
        30,
        "workflow pending",
    )
    assert condition(pending, "Ready")["reason"] == "SessionNotFound", pending
    assert not ops.custom.list_namespaced_custom_object(
        "imageops.dev", "v1alpha1", namespace, "imageoperations"
    )["items"], "no step may run without the session"
    wait_until(lambda: "SessionNotFound" in [e["reason"] for e in ops.events("late")], 20, "event")
    _session(kube_api, namespace, "wf-session", {})
    done = wait_until(
        lambda: (
            (s := _workflow_status(kube_api, namespace, "late")).get("phase")
            in ("Succeeded", "Failed")
            and s
        ),
        60,
        "workflow finished",
    )
    assert done["phase"] == "Succeeded", done
    failed = wait_until(
        lambda: (
            (s := _workflow_status(kube_api, namespace, "typo")).get("phase")
            in ("Succeeded", "Failed")
            and s
        ),
        60,
        "workflow failed",
    )
    assert failed["phase"] == "Failed", failed
    assert condition(failed, "Ready")["reason"] == "SessionNotFound", failed
