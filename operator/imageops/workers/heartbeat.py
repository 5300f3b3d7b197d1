"""The agent's heartbeat: a coordination.k8s.io Lease renewed for its node.

The controller reads these Leases to know which nodes have a live agent
(workers/nodes.py); an agent that stops renewing counts as gone once the
Lease's duration has passed.
"""

from __future__ import annotations

import asyncio
import logging

from imageops.adapters.kube import AsyncKube
from imageops.models.labels import AGENT_LABEL
from imageops.workers.nodes import LEASE_PREFIX

log = logging.getLogger(__name__)


def lease_name(node: str) -> str:
    """The Lease of a node's agent (names longer than allowed are cut)."""
    return (LEASE_PREFIX + node)[:253]


async def run_heartbeat(
    kube: AsyncKube, namespace: str, node: str, duration: int, retry_interval: float = 1.0
) -> None:
    """Renew the node's Lease every third of its duration, until cancelled.

    After a failed renewal (API server or etcd down) it tries again every
    ``retry_interval`` seconds, so the Lease is renewed as soon as the server is
    back: the controller gives agents one lease duration after its own recovery.
    """
    name = lease_name(node)
    labels = {AGENT_LABEL: node[:63]}
    while True:
        try:
            await kube.call(kube.sync.renew_lease, namespace, name, node, duration, labels)
        except Exception as exc:
            log.warning("could not renew lease %s/%s: %s", namespace, name, exc)
            await asyncio.sleep(retry_interval)
            continue
        await asyncio.sleep(max(duration / 3, 1.0))
