"""What every controller worker shares: API access, the operation index, live nodes."""

from __future__ import annotations

from dataclasses import dataclass

from imageops.adapters.kube import AsyncKube
from imageops.workers.nodes import NodeDirectory
from imageops.workers.opindex import OperationIndex


@dataclass
class ControllerContext:
    """Dependencies of the controller's workers (workflows, sessions, assignment)."""

    kube: AsyncKube
    index: OperationIndex
    nodes: NodeDirectory
    node_grace_seconds: float = 60.0
    sweep_interval: float = 2.0
