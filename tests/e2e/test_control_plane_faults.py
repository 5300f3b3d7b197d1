"""Control-plane and registry faults on the real bed: no result is ever lost.

These tests stop shared services of the bed (etcd, kube-apiserver, a registry)
with ``hack/testenv.sh stop|kill NAME`` and start them again with ``start NAME``;
every test restores them, even when it fails. They must not run concurrently with
other tests on the same bed (pytest here runs serially). Short leases
(``--lease-duration 6``, ``--node-grace-seconds 6``, the harness defaults) keep
"down longer than lease duration plus grace" under a minute.

Each test asserts the final status a user reads and that nothing stays Running.
Measured figures (outage length, settle time after recovery) are printed (-s).
IMAGEOPS_FAULT_OUTAGE_SECONDS=N lengthens the etcd and API-server outages (measurements
by hand, e.g. 60 or 120).
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.harness import REPO, OperatorProcess, Ops, wait_until
from tests.faults import FakeSlowLink
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e
BIG = 24 * 1024 * 1024
SERVICES = ("etcd", "kube-apiserver", "registry-open")
OUTAGE = float(os.environ.get("IMAGEOPS_FAULT_OUTAGE_SECONDS") or 0)


def bed(command: str, service: str) -> None:
    """hack/testenv.sh stop|start|kill SERVICE on this bed."""
    subprocess.run(
        ["bash", str(REPO / "hack" / "testenv.sh"), command, service],
        check=True,
        timeout=300,
        capture_output=True,
    )


@pytest.fixture
def restore() -> Iterator[None]:
    """Start every service a fault test may stop again, whatever happened."""
    yield
    for service in SERVICES:
        bed("start", service)


@pytest.fixture
def slow_image(testbed: Testbed) -> Iterator[tuple[str, FakeSlowLink]]:
    """A 24 MB image in the open registry behind a 4 MB/s link (a pull takes ~6 s)."""
    ref = testbed.make_image(testbed.unique(), size_bytes=BIG)
    testbed.push_open(ref)
    testbed.rmi(ref)
    proxy = FakeSlowLink(testbed.registry, rate=4 * 1024 * 1024)
    yield f"{proxy.address}/{ref.split('/', 1)[1]}", proxy
    proxy.close()
    testbed.rmi(ref)


def _retry_api(check: Callable[[], object], timeout: float, what: str) -> object:
    """wait_until, treating API errors (the server just came back) as 'not yet'."""

    def guarded() -> object:
        try:
            return check()
        except Exception:
            return None

    return wait_until(guarded, timeout, what, interval=0.5)


def _outage_mid_pull(
    service: str,
    seconds: float,
    ops: Ops,
    testbed: Testbed,
    log_dir: Path,
    slow_image: tuple[str, FakeSlowLink],
) -> tuple[dict[str, object], list[str], str, float]:
    """Stop ``service`` mid-pull for ``seconds``; (final status, Event reasons, log, settle)."""
    via, proxy = slow_image
    node = f"fault-{service[:4]}-{int(time.time()) % 10000}"
    agent = OperatorProcess(node, log_dir=log_dir).start()
    try:
        ops.create("pull", {"action": "Pull", "image": via, "nodeName": node})
        wait_until(lambda: proxy.bytes_down > 2 * 1024 * 1024, 60, "pull under way")
        stopped = time.monotonic()
        bed("stop", service)
        # The pull finishes on the node while the control plane is away.
        wait_until(lambda: testbed.image_id(via) is not None, 60, "pull done on the node")
        time.sleep(max(0.0, seconds - (time.monotonic() - stopped)))
        restart = time.monotonic()
        bed("start", service)
        back = time.monotonic()
        print(
            f"\n{service} down for {back - stopped:.1f}s (ready {back - restart:.1f}s after start)"
        )
        status = _retry_api(
            lambda: (
                ops.status("pull").get("phase") in ("Succeeded", "Failed") and ops.status("pull")
            ),
            120,
            "final status",
        )
        settle = time.monotonic() - back
        print(f"{service}: final status {status['phase']} {settle:.1f}s after it was back")  # type: ignore[index]
        # Nothing turns it into NodeUnavailable later: watch one more grace period.
        time.sleep(8)
        status = ops.status("pull")
        reasons = [e["reason"] for e in ops.events("pull")]
        log = agent.log()
    finally:
        agent.stop()
    return status, reasons, log, settle


def _assert_succeeded_once(
    status: dict[str, object], reasons: list[str], testbed: Testbed, via: str
) -> None:
    assert status["phase"] == "Succeeded", status
    assert status.get("lastError") is None, status
    assert status["digest"] and testbed.image_id(via)
    assert "NodeUnavailable" not in str(reasons)
    assert "Failed" not in reasons


def test_etcd_stopped_mid_pull_result_is_written_when_it_is_back(
    restore: None,
    ops: Ops,
    testbed: Testbed,
    log_dir: Path,
    slow_image: tuple[str, FakeSlowLink],
) -> None:
    status, reasons, log, _ = _outage_mid_pull(
        "etcd", OUTAGE or 35, ops, testbed, log_dir, slow_image
    )
    _assert_succeeded_once(status, reasons, testbed, slow_image[0])
    assert status["attempts"] == 1, status
    # The result was computed during the outage and written by the retries.
    assert "status write of" in log and "succeeded after" in log, log[-3000:]


def test_apiserver_down_longer_than_lease_and_grace_ends_succeeded(
    restore: None,
    ops: Ops,
    testbed: Testbed,
    log_dir: Path,
    slow_image: tuple[str, FakeSlowLink],
) -> None:
    # Lease duration 6 s + grace 6 s: 30 s is well beyond both.
    status, reasons, log, _ = _outage_mid_pull(
        "kube-apiserver", OUTAGE or 30, ops, testbed, log_dir, slow_image
    )
    _assert_succeeded_once(status, reasons, testbed, slow_image[0])
    assert "succeeded after" in log, log[-3000:]


def _probe(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def test_operator_started_while_apiserver_is_down_serves_every_kind(
    restore: None,
    ops: Ops,
    testbed: Testbed,
    log_dir: Path,
    kube_api: client.ApiClient,
    namespace: str,
) -> None:
    node = f"late-{namespace[-6:]}"
    bed("stop", "kube-apiserver")
    proc = OperatorProcess(node, log_dir=log_dir)
    proc.args = [a for a in proc.args if a != "--all-namespaces"]
    proc.args += ["--namespace", namespace, "--watch-down-seconds", "8"]
    try:
        proc.proc = subprocess.Popen(
            [*_command(), *proc.args],
            stdout=proc.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        wait_until(lambda: _probe(proc.metrics_port, "/healthz") == 200, 30, "liveness up")
        for _ in range(10):  # 5 s without an API server: alive, not ready
            assert _probe(proc.metrics_port, "/readyz") == 503
            assert _probe(proc.metrics_port, "/healthz") == 200
            time.sleep(0.5)
        # Liveness fails once the watches have been down longer than --watch-down-seconds.
        wait_until(lambda: _probe(proc.metrics_port, "/healthz") == 503, 20, "liveness fails")
        bed("start", "kube-apiserver")
        back = time.monotonic()
        wait_until(lambda: _probe(proc.metrics_port, "/readyz") == 200, 60, "ready")
        assert _probe(proc.metrics_port, "/healthz") == 200
        print(f"\nready {time.monotonic() - back:.1f}s after the API server was back")
        image = testbed.make_image(testbed.unique())
        custom = client.CustomObjectsApi(kube_api)
        _create(custom, namespace, "imagesessions", "ImageSession", "s", {"nodeName": node})
        ops.create(
            "op",
            {"action": "Tag", "image": image, "target": image + "-t", "sessionRef": {"name": "s"}},
        )
        _create(
            custom,
            namespace,
            "workflows",
            "Workflow",
            "wf",
            {
                "nodeName": node,
                "steps": [
                    {"name": "tag", "action": "Tag", "image": image, "target": image + "-wf"}
                ],
            },
        )
        op = ops.wait_phase("op", timeout=60)
        wf = _retry_api(
            lambda: (
                _get(custom, namespace, "workflows", "wf")["status"]["phase"]
                in ("Succeeded", "Failed")
                and _get(custom, namespace, "workflows", "wf")
            ),
            60,
            "workflow finished",
        )
        session = _retry_api(
            lambda: (
                (
                    (_get(custom, namespace, "imagesessions", "s").get("status") or {}).get("jobs")
                    or {}
                ).get("succeeded", 0)
                >= 1
                and _get(custom, namespace, "imagesessions", "s")
            ),
            60,
            "session counted the operation",
        )
    finally:
        proc.stop()
    assert op["phase"] == "Succeeded", op
    assert wf["status"]["phase"] == "Succeeded", wf  # type: ignore[index]
    assert session["status"]["jobs"]["succeeded"] >= 1  # type: ignore[index]
    assert "Unresolved resources" not in proc.log()


def test_registry_killed_mid_push_operator_retries(
    restore: None,
    ops: Ops,
    testbed: Testbed,
    log_dir: Path,
    namespace: str,
) -> None:
    node = f"push-{namespace[-6:]}"
    source = testbed.make_image(testbed.unique(), size_bytes=BIG)
    proxy = FakeSlowLink(testbed.registry, rate=4 * 1024 * 1024)
    target = f"{proxy.address}/{testbed.unique().split('/', 1)[1]}"
    agent = OperatorProcess(node, "--role", "agent", log_dir=log_dir).start()
    try:
        ops.create(
            "push",
            {
                "action": "Push",
                "image": source,
                "target": target,
                "nodeName": node,
                "backoffLimit": 8,
            },
        )
        wait_until(lambda: ops.status("push").get("phase") == "Running", 30, "push running")
        time.sleep(2)  # bytes are on their way
        bed("kill", "registry-open")
        # Down long enough that dockerd's own upload retries give up and ours run.
        wait_until(lambda: (ops.status("push").get("attempts") or 0) >= 2, 90, "a retry")
        bed("start", "registry-open")
        back = time.monotonic()
        status = ops.wait_phase("push", timeout=180)
        print(
            f"\npush {status['phase']} {time.monotonic() - back:.1f}s after the registry was back"
        )
        reasons = [e["reason"] for e in ops.events("push")]
    finally:
        agent.stop()
        proxy.close()
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] >= 2, status
    assert "Retrying" in reasons, reasons
    plain = target.replace(proxy.address, testbed.registry)
    assert status["digest"] == testbed.registry_digest(plain)


def _command() -> list[str]:
    import sys

    return [sys.executable, "-m", "imageops", "run"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO / "operator"), PYTHONUNBUFFERED="1")


def _create(
    custom: client.CustomObjectsApi,
    namespace: str,
    plural: str,
    kind: str,
    name: str,
    spec: dict[str, object],
) -> None:
    custom.create_namespaced_custom_object(
        "imageops.dev",
        "v1alpha1",
        namespace,
        plural,
        {
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def _get(custom: client.CustomObjectsApi, namespace: str, plural: str, name: str) -> dict:  # type: ignore[type-arg]
    return custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
        "imageops.dev", "v1alpha1", namespace, plural, name
    )
