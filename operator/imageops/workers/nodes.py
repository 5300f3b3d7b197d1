"""Which nodes have a live agent: read from the agents' Lease heartbeats.

Each agent renews a ``coordination.k8s.io`` Lease named ``imageops-agent-<node>``
(label ``imageops.dev/agent-node=<node>``) in the lease namespace. The
controller lists those Leases and the Node objects (for their labels) every
few seconds; a node is live while its Lease's renewTime plus its duration
lies in the future.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from imageops.adapters import metrics
from imageops.adapters.kube import AsyncKube
from imageops.models.labels import AGENT_LABEL

log = logging.getLogger(__name__)
LEASE_PREFIX = "imageops-agent-"


@dataclass(frozen=True)
class AgentLease:
    """The heartbeat of one agent."""

    node: str
    renew_time: datetime
    duration_seconds: int

    def expires(self) -> datetime:
        """When the agent counts as gone unless it renews."""
        renewed = self.renew_time if self.renew_time.tzinfo else self.renew_time.replace(tzinfo=UTC)
        return renewed + timedelta(seconds=self.duration_seconds)


class NodeDirectory:
    """Live agents and node labels, refreshed in the background."""

    def __init__(self, kube: AsyncKube, lease_namespace: str, interval: float = 3.0) -> None:
        self.kube = kube
        self.lease_namespace = lease_namespace
        self.interval = interval
        self.leases: dict[str, AgentLease] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.started = datetime.now(UTC)
        self.refreshed = asyncio.Event()

    async def run(self) -> None:
        """Refresh forever (cancel the task to stop)."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("could not refresh agent leases: %s", exc)
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        """Read the leases and node labels once."""
        leases, labels = await self.kube.call(
            self.kube.sync.read_agent_leases, self.lease_namespace, AGENT_LABEL
        )
        self.leases = {
            node: AgentLease(node, renew, duration) for node, (renew, duration) in leases.items()
        }
        self.labels = labels
        now = datetime.now(UTC)
        # Every Node, live or not; a Lease without a Node only while live (the node of an
        # expired one was most likely removed from the cluster: nothing to alert about).
        live = {node: self.is_live(node, now) for node in {*leases, *labels}}
        metrics.set_agents_up({n: up for n, up in live.items() if up or n in labels})
        self.refreshed.set()

    def is_live(self, node: str, now: datetime | None = None) -> bool:
        """Whether the node's agent renewed its lease recently enough."""
        lease = self.leases.get(node)
        return lease is not None and lease.expires() > (now or datetime.now(UTC))

    def down_for(self, node: str, now: datetime | None = None) -> float:
        """Seconds the node has been without a live agent (0 while live).

        A node never seen counts from the controller's start, so that an
        operation addressed to a node without any agent fails in time too.
        """
        now = now or datetime.now(UTC)
        if self.is_live(node, now):
            return 0.0
        lease = self.leases.get(node)
        since = max(lease.expires(), self.started) if lease else self.started
        return max((now - since).total_seconds(), 0.0)

    def live_nodes(self, selector: Mapping[str, str] | None = None) -> list[str]:
        """Live nodes whose labels include every ``selector`` entry, sorted by name."""
        now = datetime.now(UTC)
        wanted = dict(selector or {})
        return sorted(
            node
            for node in self.leases
            if self.is_live(node, now)
            and all(self.labels.get(node, {}).get(k) == v for k, v in wanted.items())
        )
