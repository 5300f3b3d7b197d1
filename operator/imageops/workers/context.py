"""What every controller worker shares: API access, the operation index, live nodes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from imageops.adapters.kube import AsyncKube
from imageops.services.clock import SYSTEM, Clock
from imageops.settings import DEFAULTS
from imageops.workers.nodes import NodeDirectory
from imageops.workers.opindex import OperationIndex

log = logging.getLogger(__name__)


@dataclass
class ControllerContext:
    """Dependencies of the controller's workers (workflows, sessions, assignment)."""

    kube: AsyncKube
    index: OperationIndex
    nodes: NodeDirectory
    node_grace_seconds: float = DEFAULTS.node_grace_seconds
    sweep_interval: float = DEFAULTS.sweep_interval
    backoff_cap: float = DEFAULTS.backoff_cap  # the agents' longest retry delay, for overdue ops
    # How long a Workflow whose sessionRef names no ImageSession waits for it.
    session_wait_seconds: float = DEFAULTS.session_wait_seconds
    # A running workflow's pass repeats at least this often: the safety net should a
    # child's event be missed (every other pass is driven by events and requeue-afters).
    resync_interval: float = 30.0
    workers: int = 8  # reconciles at once, per work queue
    clock: Clock = SYSTEM


async def repeat(interval: float, step: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``step`` every ``interval`` seconds until cancelled.

    A failing pass is logged and the next one runs: a sweeper must outlive a
    briefly unreachable API server or one bad object.
    """
    while True:
        try:
            await step()
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(interval)
