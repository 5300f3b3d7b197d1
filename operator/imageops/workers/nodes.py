"""Which nodes have a live agent: read from the agents' Lease heartbeats.

Each agent renews a ``coordination.k8s.io`` Lease named ``imageops-agent-<node>``
(label ``imageops.dev/agent-node=<node>``) in the lease namespace. The
controller lists those Leases and the Node objects (for their labels) every
few seconds; a node is live while its Lease's renewTime plus its duration
lies in the future.

Fairness: the controller judges no node on evidence it gathered while it could
not reach the API server itself. Until its first successful read, after a failed
one, and while its last successful read is older than ``2 * interval + 2``
seconds (a read that hangs, e.g. etcd down), it is *blind*; once a read succeeds
again, every agent gets
at least one full lease duration (the longest it knows, at least
``lease_duration``) to renew before ``down_for`` reports any node as down, and
down-time counts from that recovery at the earliest. Agents retry their renewal
every second while it fails, so they renew as soon as the server is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from imageops.adapters import lease_reads, metrics
from imageops.adapters.kube import AsyncKube
from imageops.models.labels import AGENT_LABEL
from imageops.settings import DEFAULTS

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

    def __init__(
        self,
        kube: AsyncKube,
        lease_namespace: str,
        interval: float = 3.0,
        lease_duration: float = DEFAULTS.lease_duration,
    ) -> None:
        self.kube = kube
        self.lease_namespace = lease_namespace
        self.interval = interval
        self.lease_duration = lease_duration
        self.leases: dict[str, AgentLease] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.started = datetime.now(UTC)
        self.refreshed = asyncio.Event()
        # Blind until the first successful read; recovered_at: the end of the last blindness.
        self.failed = True
        self.last_read: datetime | None = None
        self.recovered_at = self.started

    async def run(self) -> None:
        """Refresh forever (cancel the task to stop)."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                if not self.failed:
                    log.warning("could not refresh agent leases (no node is judged): %s", exc)
                self.failed = True
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        """Read the leases and node labels once."""
        leases, labels = await self.kube.call(
            lease_reads.read_agent_leases, self.kube.sync, self.lease_namespace, AGENT_LABEL
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
        if self.blind(now):
            self.recovered_at = now
            log.info("agent leases read; nodes are judged from %s", self.judged_from())
        self.failed = False
        self.last_read = now
        self.refreshed.set()

    def blind(self, now: datetime | None = None) -> bool:
        """Whether the controller lacks fresh evidence (failed or hanging reads)."""
        if self.failed or self.last_read is None:
            return True
        stale = timedelta(seconds=2 * self.interval + 2)
        return (now or datetime.now(UTC)) - self.last_read > stale

    def judged_from(self) -> datetime:
        """When nodes may be judged again: one full lease duration after the last recovery."""
        longest = max(
            [self.lease_duration, *(lease.duration_seconds for lease in self.leases.values())]
        )
        return self.recovered_at + timedelta(seconds=longest)

    def can_judge(self, now: datetime | None = None) -> bool:
        """Whether liveness evidence may be acted on now (not blind, recovery grace over)."""
        now = now or datetime.now(UTC)
        return not self.blind(now) and now >= self.judged_from()

    def is_live(self, node: str, now: datetime | None = None) -> bool:
        """Whether the node's agent renewed its lease recently enough."""
        lease = self.leases.get(node)
        return lease is not None and lease.expires() > (now or datetime.now(UTC))

    def down_for(self, node: str, now: datetime | None = None) -> float:
        """Seconds the node has been without a live agent (0 while live).

        A node never seen counts from the controller's start, so that an
        operation addressed to a node without any agent fails in time too.
        While the controller is blind, and for one lease duration after it
        recovers, every node counts as up (0): see the module docstring.
        """
        now = now or datetime.now(UTC)
        if not self.can_judge(now) or self.is_live(node, now):
            return 0.0
        lease = self.leases.get(node)
        since = max(lease.expires(), self.recovered_at) if lease else self.recovered_at
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
