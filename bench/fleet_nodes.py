"""Simulated nodes for the scale benchmark: Node objects and agent heartbeat Leases.

What the controller reads of a node (workers/nodes.py): the Node object's labels
(``list_node``) and a Lease ``imageops-agent-<node>`` in the lease namespace with
label ``imageops.dev/agent-node=<node>``, ``holderIdentity`` the node's name and a
``renewTime`` plus ``leaseDurationSeconds`` in the future. Nothing else: no kubelet,
no Node status. These are the same objects a real agent's heartbeat writes
(workers/heartbeat.py), so the controller cannot tell a simulated node from a real one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imageops.models.labels import AGENT_LABEL
from imageops.workers.heartbeat import lease_name

MERGE_PATCH = "application/merge-patch+json"


def _stamp(now: datetime) -> str:
    # MicroTime: what the real agent's V1LeaseSpec(renew_time=datetime) serialises to.
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeNodePool:
    """N Node objects with a pool label, and a renewed heartbeat Lease for each.

    Leases are renewed every third of ``lease_duration`` (as the real agent does),
    spread evenly over that period, with one merge patch each (the real agent reads,
    then replaces: two requests; the difference is the fleet's, not the controller's).
    """

    def __init__(
        self,
        api: client.ApiClient,
        lease_namespace: str,
        nodes: Sequence[str],
        labels: dict[str, str],
        lease_duration: int = 60,
        workers: int = 8,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.namespace = lease_namespace
        self.nodes = list(nodes)
        self.labels = dict(labels)
        self.lease_duration = lease_duration
        self.workers = workers
        self.writes = 0  # API writes of this pool (Nodes, Leases), counted client-side
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _count(self, n: int = 1) -> None:
        with self._lock:
            self.writes += n

    def create(self, leases: bool = True) -> None:
        """Create every Node object and (unless a real agent renews it) its Lease.

        The ones that exist already are updated.
        """
        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(self._create_one if leases else self._create_node, self.nodes))

    def _create_one(self, node: str) -> None:
        self._create_node(node)
        self._create_lease(node)

    def _create_node(self, node: str) -> None:
        body = client.V1Node(
            metadata=client.V1ObjectMeta(
                name=node, labels={**self.labels, "kubernetes.io/hostname": node[:63]}
            )
        )
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            labels = body.metadata.labels if body.metadata else {}
            self.core.patch_node(node, {"metadata": {"labels": labels}})
        self._count()

    def _create_lease(self, node: str) -> None:
        now = datetime.now(UTC)
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=lease_name(node), namespace=self.namespace, labels={AGENT_LABEL: node[:63]}
            ),
            spec=client.V1LeaseSpec(
                holder_identity=node,
                lease_duration_seconds=self.lease_duration,
                acquire_time=now,
                renew_time=now,
            ),
        )
        try:
            self.coordination.create_namespaced_lease(self.namespace, lease)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self._renew(node)
        self._count()

    def _renew(self, node: str) -> None:
        patch = {
            "spec": {
                "holderIdentity": node,
                "leaseDurationSeconds": self.lease_duration,
                "renewTime": _stamp(datetime.now(UTC)),
            }
        }
        self.coordination.patch_namespaced_lease(
            lease_name(node), self.namespace, patch, _content_type=MERGE_PATCH
        )
        self._count()

    def start(self) -> FakeNodePool:
        """Renew in a background thread until stop()."""
        self._thread = threading.Thread(target=self._renew_forever, name="leases", daemon=True)
        self._thread.start()
        return self

    def _renew_forever(self) -> None:
        period = max(self.lease_duration / 3, 1.0)
        gap = period / max(len(self.nodes), 1)
        with ThreadPoolExecutor(self.workers) as pool:
            while not self._stop.is_set():
                started = time.monotonic()
                for i, node in enumerate(self.nodes):
                    # Spread the renewals over the period instead of a burst every period.
                    delay = started + i * gap - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    pool.submit(self._renew_quietly, node)
                rest = started + period - time.monotonic()
                if rest > 0 and self._stop.wait(rest):
                    return

    def _renew_quietly(self, node: str) -> None:
        with contextlib.suppress(Exception):  # the next round renews it; the lease lasts 3 rounds
            self._renew(node)

    def stop(self) -> None:
        """Stop renewing (the Leases then expire)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def delete(self) -> None:
        """Delete the Node objects and Leases."""
        self.stop()
        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(self._delete_one, self.nodes))

    def _delete_one(self, node: str) -> None:
        with contextlib.suppress(ApiException):
            self.core.delete_node(node)
        with contextlib.suppress(ApiException):
            self.coordination.delete_namespaced_lease(lease_name(node), self.namespace)


def node_names(prefix: str, count: int) -> list[str]:
    """``count`` node names: prefix-0000, prefix-0001, ..."""
    return [f"{prefix}-{i:04d}" for i in range(count)]


def delete_nodes(api: client.ApiClient, names: Iterable[str]) -> None:
    """Delete Node objects by name (missing ones are fine)."""
    core = client.CoreV1Api(api)
    for name in names:
        with contextlib.suppress(ApiException):
            core.delete_node(name)
