"""ImageOperation end to end: real operator, API server, Docker engine and registries."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.fixtures import MAIN_NODE
from tests.e2e.harness import (
    OperatorProcess,
    Ops,
    condition,
    free_port,
    running_operator,
    wait_until,
)
from tests.faults import FakeSlowLink
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e


def _pull(image: str, **extra: object) -> dict[str, object]:
    return {"action": "Pull", "image": image, "nodeName": MAIN_NODE, **extra}


def test_pull_succeeds_with_the_registry_digest(
    operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    ref = testbed.make_image(testbed.unique())
    testbed.push_open(ref)
    testbed.rmi(ref)
    ops.create("pull", _pull(ref))
    status = ops.wait_phase("pull")
    assert status["phase"] == "Succeeded", status
    assert status["digest"] == testbed.registry_digest(ref)
    assert status["shortDigest"] == status["digest"][7:19]
    assert status["imageId"] == testbed.image_id(ref)
    assert status["node"] == MAIN_NODE and status["attempts"] == 1
    assert status["cacheHit"] is False and status["sizeBytes"] > 0
    assert status["durationSeconds"] >= 0 and status["completionTime"]
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Stalled")["status"] == "False"
    reasons = [e["reason"] for e in ops.events("pull")]
    assert "Started" in reasons and "Succeeded" in reasons
    subprocess.run(
        [
            "kubectl",
            "wait",
            "-n",
            ops.namespace,
            "--for=condition=Ready",
            "imgop/pull",
            "--timeout=5s",
        ],
        check=True,
        capture_output=True,
    )


def test_if_not_present_is_a_cache_hit(
    operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    ref = testbed.make_image(testbed.unique())
    testbed.push_open(ref)  # present locally and in the registry
    ops.create("cached", _pull(ref, pullPolicy="IfNotPresent"))
    status = ops.wait_phase("cached")
    assert status["phase"] == "Succeeded" and status["cacheHit"] is True
    assert status["pullPolicy"] == "IfNotPresent"
    assert status["digest"] == testbed.registry_digest(ref)


def test_tag_then_conflict_without_force(
    operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    source = testbed.make_image(testbed.unique())
    other = testbed.make_image(testbed.unique())
    target = testbed.unique()
    ops.create("tag", {"action": "Tag", "image": source, "target": target, "nodeName": MAIN_NODE})
    assert ops.wait_phase("tag")["phase"] == "Succeeded"
    assert testbed.image_id(target) == testbed.image_id(source)
    # Moving the now existing target to another image needs force.
    ops.create("move", {"action": "Tag", "image": other, "target": target, "nodeName": MAIN_NODE})
    status = ops.wait_phase("move")
    assert status["phase"] == "Failed" and status["lastError"]["reason"] == "Conflict"
    assert status["attempts"] == 1 and testbed.image_id(target) == testbed.image_id(source)
    ops.create(
        "force",
        {"action": "Tag", "image": other, "target": target, "force": True, "nodeName": MAIN_NODE},
    )
    status = ops.wait_phase("force")
    assert status["phase"] == "Succeeded"
    assert status["previousTargetImageId"] == testbed.image_id(source)
    assert testbed.image_id(target) == testbed.image_id(other)


def test_push_to_auth_registry_with_secret(
    operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    source = testbed.make_image(testbed.unique())
    target = testbed.unique(testbed.auth_registry)
    ops.secret("regcred", testbed.dockerconfigjson())
    ops.create(
        "push",
        {
            "action": "Push",
            "image": source,
            "target": target,
            "nodeName": MAIN_NODE,
            "credentials": {"secretRef": {"name": "regcred"}},
        },
    )
    status = ops.wait_phase("push")
    assert status["phase"] == "Succeeded", status
    served = testbed.registry_digest(target, auth=True)
    assert served and status["digest"] == served
    text = str(ops.get("push")) + str(ops.events("push")) + operator.log()
    assert testbed.auth_password not in text


def test_push_without_credentials_fails_auth_without_retry(
    operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    source = testbed.make_image(testbed.unique())
    target = testbed.unique(testbed.auth_registry)
    ops.create(
        "noauth", {"action": "Push", "image": source, "target": target, "nodeName": MAIN_NODE}
    )
    status = ops.wait_phase("noauth")
    assert status["phase"] == "Failed" and status["attempts"] == 1
    assert status["lastError"]["reason"] == "AuthFailed" and not status["lastError"]["retryable"]
    assert status["lastError"]["suggestion"]
    assert condition(status, "Stalled")["status"] == "True"
    assert "Failed" in [e["reason"] for e in ops.events("noauth")]
    assert "Retrying" not in [e["reason"] for e in ops.events("noauth")]


def test_wrong_password_and_missing_secret(
    operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    source = testbed.make_image(testbed.unique())
    ops.secret("bad", testbed.dockerconfigjson(password="wrong-password"))
    ops.create(
        "badpass",
        {
            "action": "Push",
            "image": source,
            "target": testbed.unique(testbed.auth_registry),
            "nodeName": MAIN_NODE,
            "credentials": {"secretRef": {"name": "bad"}},
        },
    )
    status = ops.wait_phase("badpass")
    assert status["lastError"]["reason"] == "AuthFailed", status
    assert "wrong-password" not in str(ops.get("badpass")) + operator.log()
    ops.create(
        "nosecret",
        {
            "action": "Pull",
            "image": testbed.unique(testbed.auth_registry),
            "nodeName": MAIN_NODE,
            "backoffLimit": 0,
            "credentials": {"secretRef": {"name": "absent"}},
        },
    )
    status = ops.wait_phase("nosecret")
    assert status["lastError"]["reason"] == "CredentialsNotFound"
    assert "absent" in status["lastError"]["message"]


def test_not_found_is_permanent(operator: OperatorProcess, ops: Ops, testbed: Testbed) -> None:
    ops.create("missing", _pull(testbed.unique()))
    status = ops.wait_phase("missing")
    assert status["phase"] == "Failed" and status["attempts"] == 1
    assert status["lastError"]["reason"] == "NotFound"


def test_digest_mismatch_leaves_no_image(
    operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    ref = testbed.make_image(testbed.unique())
    testbed.push_open(ref)
    testbed.rmi(ref)
    wrong = "sha256:" + "0" * 64
    ops.create("mismatch", _pull(ref, expectedDigest=wrong))
    status = ops.wait_phase("mismatch")
    assert status["phase"] == "Failed" and status["lastError"]["reason"] == "DigestMismatch"
    assert wrong in status["lastError"]["message"]
    assert testbed.image_id(ref) is None
    good = testbed.registry_digest(ref)
    ops.create("match", _pull(ref, expectedDigest=good))
    assert ops.wait_phase("match")["digest"] == good


def test_dry_run_changes_nothing(operator: OperatorProcess, ops: Ops, testbed: Testbed) -> None:
    ref = testbed.make_image(testbed.unique())
    testbed.push_open(ref)
    testbed.rmi(ref)
    ops.create("dry", _pull(ref, dryRun=True))
    status = ops.wait_phase("dry")
    assert status["phase"] == "Succeeded", status
    assert status["digest"] == testbed.registry_digest(ref)
    assert "would pull" in status["dryRunResult"]
    assert testbed.image_id(ref) is None


def test_reapply_unchanged_does_not_rerun_and_new_generation_does(
    operator: OperatorProcess, ops: Ops, testbed: Testbed, tmp_path: Path
) -> None:
    ref = testbed.make_image(testbed.unique())
    testbed.push_open(ref)
    manifest = tmp_path / "op.yaml"
    manifest.write_text(
        "apiVersion: imageops.dev/v1alpha1\nkind: ImageOperation\n"
        f"metadata: {{name: gitops, namespace: {ops.namespace}}}\n"
        f"spec: {{action: Pull, image: '{ref}', nodeName: {MAIN_NODE}, pullPolicy: Always}}\n"
    )
    apply = ["kubectl", "apply", "-f", str(manifest)]
    subprocess.run(apply, check=True, capture_output=True)
    first = ops.wait_phase("gitops")
    for _ in range(3):
        out = subprocess.run(apply, check=True, capture_output=True, text=True).stdout
        assert "unchanged" in out
    time.sleep(3)
    again = ops.status("gitops")
    assert (again["jobId"], again["completionTime"]) == (first["jobId"], first["completionTime"])
    assert [e["reason"] for e in ops.events("gitops")].count("Started") == 1
    ops.patch_spec("gitops", {"timeoutSeconds": 120})
    wait_until(lambda: ops.status("gitops").get("observedGeneration") == 2, 30, "generation 2")
    second = ops.wait_phase("gitops")
    assert second["phase"] == "Succeeded" and second["jobId"] != first["jobId"]


def test_unassigned_operation_goes_to_the_local_node(
    operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    ref = testbed.make_image(testbed.unique())
    ops.create("anynode", {"action": "Tag", "image": ref, "target": testbed.unique()})
    status = ops.wait_phase("anynode")
    assert status["phase"] == "Succeeded" and status["node"] == MAIN_NODE
    assert (ops.get("anynode") or {})["spec"]["nodeName"] == MAIN_NODE


def test_registry_down_then_up_ends_succeeded(
    ops: Ops, testbed: Testbed, log_dir: Path, tmp_path: Path, operator: OperatorProcess
) -> None:
    """A registry that refuses connections is retried with backoff until it is back."""
    ref = testbed.make_image(testbed.unique())
    testbed.push_open(ref)
    testbed.rmi(ref)
    proxy_port = free_port()
    path = ref.split("/", 1)[1]
    via = f"127.0.0.1:{proxy_port}/{path}"
    ops.create("flaky", _pull(via, backoffLimit=10))
    status = wait_until(
        lambda: (ops.status("flaky").get("lastError") or {}).get("reason"), 60, "a retryable error"
    )
    assert status == "RegistryUnavailable"
    assert ops.status("flaky")["phase"] == "Running"
    proxy = FakeSlowLink(testbed.registry, rate=50 * 1024 * 1024, port=proxy_port)
    try:
        final = ops.wait_phase("flaky", timeout=90)
    finally:
        proxy.close()
    assert final["phase"] == "Succeeded" and final["attempts"] >= 2
    assert "Retrying" in [e["reason"] for e in ops.events("flaky")]


def test_metrics_reflect_what_happened(
    operator: OperatorProcess, ops: Ops, testbed: Testbed
) -> None:
    ref = testbed.make_image(testbed.unique())
    ops.create(
        "m-ok", {"action": "Tag", "image": ref, "target": testbed.unique(), "nodeName": MAIN_NODE}
    )
    ops.create("m-bad", _pull(testbed.unique()))
    ops.wait_phase("m-ok")
    ops.wait_phase("m-bad")
    samples = operator.metrics()
    assert samples['imageops_operations_total{action="Tag",result="succeeded"}'] >= 1
    assert samples['imageops_operations_total{action="Pull",result="failed"}'] >= 1
    assert samples['imageops_errors_total{reason="NotFound"}'] >= 1
    assert samples['imageops_operation_duration_seconds_count{action="Tag"}'] >= 1
    assert 'imageops_operations_in_flight{action="Tag"}' in samples


def test_forbidden_registry(ops: Ops, testbed: Testbed, log_dir: Path, kube_api: object) -> None:
    with running_operator(
        "e2e-restricted",
        "--role",
        "agent",
        "--allowed-registries",
        testbed.registry,
        log_dir=log_dir,
    ):
        ops.create(
            "forbidden",
            {
                "action": "Pull",
                "image": testbed.unique(testbed.auth_registry),
                "nodeName": "e2e-restricted",
            },
        )
        status = ops.wait_phase("forbidden")
    assert status["lastError"]["reason"] == "Forbidden" and status["attempts"] == 1
    assert testbed.auth_registry in status["lastError"]["message"]
