"""End-to-end harness: the operator as a real process against the real API server.

Tests talk to the API server the way a user's tools do (the Kubernetes client and
kubectl) and read what a user reads: status, conditions, Events and /metrics.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.testbed import free_port

GROUP, VERSION, PLURAL = "imageops.dev", "v1alpha1", "imageoperations"
REPO = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


class OperatorProcess:
    """``imageops run`` in a subprocess, with its log in a file."""

    def __init__(self, node: str, *args: str, log_dir: Path) -> None:
        self.node = node
        self.metrics_port = free_port()
        self.args = [
            "--node-name",
            node,
            "--metrics-port",
            str(self.metrics_port),
            "--all-namespaces",
            "--backoff-base",
            "1",
            "--backoff-cap",
            "4",
            "--progress-interval",
            "1",
            "--lease-duration",
            "6",
            "--node-grace-seconds",
            "6",
            "--sweep-interval",
            "1",
            # Per node and kept across restarts of that node's agent, like the chart's hostPath.
            "--state-dir",
            str(log_dir / f"state-{node}"),
            *args,
        ]
        self.log_path = log_dir / f"operator-{node}-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        """Start and wait until /readyz answers ok: every watch established and working."""
        env = dict(os.environ, PYTHONPATH=str(REPO / "operator"), PYTHONUNBUFFERED="1")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imageops", "run", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_until(self._healthy, timeout=30, what=f"operator {self.node} healthy")
        # kopf lists and starts watching right after start-up; give it a moment.
        time.sleep(1.0)
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: an agent that dies without any clean-up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait (then SIGKILL)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        """The whole log so far."""
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """Scrape /metrics: sample line (name{labels}) → value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples


@contextmanager
def running_operator(node: str, *args: str, log_dir: Path) -> Iterator[OperatorProcess]:
    """An operator for the duration of a with-block."""
    proc = OperatorProcess(node, *args, log_dir=log_dir).start()
    try:
        yield proc
    finally:
        proc.stop()


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Ops:
    """ImageOperations of one namespace, through the custom-objects API."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def create(self, name: str, spec: Obj, labels: dict[str, str] | None = None) -> Obj:
        """Create an ImageOperation."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ImageOperation",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(  # type: ignore[return-value]
            GROUP, VERSION, self.namespace, PLURAL, body
        )

    def get(self, name: str) -> Obj | None:
        """The object, or None once it is gone."""
        try:
            return self.custom.get_namespaced_custom_object(  # type: ignore[return-value]
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_spec(self, name: str, spec: Obj) -> Obj:
        """Merge-patch the spec (a new generation)."""
        return self.custom.patch_namespaced_custom_object(  # type: ignore[return-value]
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            {"spec": spec},
            _content_type="application/merge-patch+json",
        )

    def delete(self, name: str) -> None:
        """Delete (no finalizer is expected to hold it)."""
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def status(self, name: str) -> Obj:
        """status of the object ({} when none yet)."""
        obj = self.get(name)
        return (obj or {}).get("status") or {}

    def wait_phase(
        self, name: str, phases: tuple[str, ...] = ("Succeeded", "Failed"), timeout: float = 90
    ) -> Obj:
        """Wait until status.phase is one of ``phases`` for the current generation."""

        def check() -> Obj | None:
            obj = self.get(name)
            status = (obj or {}).get("status") or {}
            current = status.get("observedGeneration") == (obj or {}).get("metadata", {}).get(
                "generation"
            )
            return status if current and status.get("phase") in phases else None

        return wait_until(check, timeout, f"{name} in {phases}")  # type: ignore[no-any-return]

    def events(self, name: str) -> list[Obj]:
        """core/v1 Events about the object, oldest first."""
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        rows = [{"reason": e.reason, "type": e.type, "message": e.message} for e in events]
        return rows

    def secret(self, name: str, dockerconfigjson: str) -> None:
        """Create a kubernetes.io/dockerconfigjson Secret."""
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": dockerconfigjson},
        )
        self.core.create_namespaced_secret(self.namespace, body)


def condition(status: Obj, ctype: str) -> Obj:
    """The condition of type ``ctype`` (fails when absent)."""
    for cond in status.get("conditions") or []:
        if cond["type"] == ctype:
            return cond  # type: ignore[no-any-return]
    raise AssertionError(f"no {ctype} condition in {status.get('conditions')}")
