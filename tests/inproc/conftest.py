"""In-process worker tests: the controller's workers imported and driven directly.

Each test gets its own namespace on the bed's real API server; the workers
are built on an :class:`AsyncKube` of that server, their reconcile functions
are called directly (no kopf, no subprocess), and the OperationIndex is fed
from what the API server lists. Time is a :class:`FakeClock` where it decides
an outcome (deadlines, TTLs, expiry), so no test sleeps for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imageops.adapters.kube import AsyncKube, Kube
from imageops.adapters.kubehttp import KubeHttp
from imageops.models.base import GROUP, VERSION
from imageops.models.imageoperation import PLURAL as OPERATIONS
from imageops.models.labels import AGENT_LABEL
from imageops.workers.context import ControllerContext
from imageops.workers.nodes import LEASE_PREFIX, NodeDirectory
from imageops.workers.opindex import OperationIndex
from tests.e2e.conftest import kube, temporary_namespace  # noqa: F401  (the API client, CRDs installed)


@dataclass
class FakeClock:
    """A clock the test moves: wall time starts now, monotonic time at 1000."""

    wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    mono: float = 1000.0

    def now(self) -> datetime:
        """The fake wall time."""
        return self.wall

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self.mono

    def advance(self, seconds: float) -> None:
        """Move both clocks on."""
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:  # noqa: F811
    """A fresh namespace for one test, deleted afterwards."""
    yield from temporary_namespace(kube, "inproc")


@pytest.fixture
def clock() -> FakeClock:
    """The test's clock."""
    return FakeClock()


@dataclass
class Bed:
    """The API server as a test in one namespace sees it, and a context for workers."""

    api: client.ApiClient
    namespace: str
    clock: FakeClock

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def context(self, **overrides: Any) -> ControllerContext:
        """A fresh controller context: what a (re)started controller has."""
        api = AsyncKube(Kube(KubeHttp(), component="imageops-inproc", host="inproc"))
        nodes = NodeDirectory(api, self.namespace, interval=0.5, lease_duration=30.0)
        values: dict[str, Any] = {"sweep_interval": 0.5, "clock": self.clock}
        values.update(overrides)
        return ControllerContext(kube=api, index=OperationIndex(), nodes=nodes, **values)

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        obj: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body
        )
        return obj

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def list(self, plural: str) -> list[dict[str, Any]]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)
        return list(items["items"])

    def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Write a status the way an agent would (merge patch of the status subresource)."""
        obj: dict[str, Any] = self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, plural, name, {"status": status}
        )
        return obj

    async def feed(self, ctx: ControllerContext) -> None:
        """Index every ImageOperation of the namespace as the controller's watch would."""
        for body in self.list(OPERATIONS):
            await ctx.index.observe(None, body)

    def lease(self, node: str, renewed: datetime | None = None, seconds: int = 30) -> None:
        """An agent heartbeat Lease for ``node`` (what a live agent renews)."""
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name=LEASE_PREFIX + node, labels={AGENT_LABEL: node}),
            spec=client.V1LeaseSpec(
                holder_identity=node,
                lease_duration_seconds=seconds,
                renew_time=renewed or datetime.now(UTC),
            ),
        )
        client.CoordinationV1Api(self.api).create_namespaced_lease(self.namespace, lease)


@pytest.fixture
def bed(kube: client.ApiClient, namespace: str, clock: FakeClock) -> Bed:  # noqa: F811
    """The bed for one test."""
    return Bed(kube, namespace, clock)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` (short polls) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def finished_status(generation: int = 1, phase: str = "Succeeded", **fields: Any) -> dict[str, Any]:
    """The status an agent writes when a run ends."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "phase": phase,
        "observedGeneration": generation,
        "attempts": 1,
        "startTime": now,
        "completionTime": now,
        "durationSeconds": 0.5,
        **fields,
    }


def run(coro: Any) -> Any:
    """Run one coroutine to its end (each test owns its event loop)."""
    return asyncio.run(coro)
