"""Where work runs: the one placement policy of the assigner and the workflow reconciler.

An ImageOperation without ``spec.nodeName`` and a new Workflow run both go to
the node they name, else to their session's node, else to the least busy
live node matching their ``nodeSelector`` (fewest pending or running
operations; ties broken by name, so the choice is stable). A fan-out
(``allNodes``) runs on every live match, at most ``limit`` of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from imageops.models.common import Phase

ACTIVE_PHASES = frozenset({None, Phase.PENDING.value, Phase.RUNNING.value})


def node_load(placed: Iterable[tuple[str | None, str | None]]) -> Counter[str]:
    """Pending or running operations per node, from (nodeName, phase) pairs."""
    return Counter(node for node, phase in placed if node and phase in ACTIVE_PHASES)


def least_busy(live: Sequence[str], load: Mapping[str, int]) -> str | None:
    """The live node with the fewest active operations (by name on a tie)."""
    return min(live, key=lambda n: (load.get(n, 0), n)) if live else None


@dataclass(frozen=True)
class Request:
    """What the work asks for: a node of its own, its session's, or a match."""

    node_name: str | None = None
    session_node: str | None = None
    all_nodes: bool = False


def place_operation(request: Request, live: Sequence[str], load: Mapping[str, int]) -> str | None:
    """The node of an unassigned operation, or None while no live node matches."""
    return request.node_name or request.session_node or least_busy(live, load)


def place_run(
    request: Request, live: Sequence[str], load: Mapping[str, int], limit: int
) -> tuple[str, ...]:
    """The nodes of a new workflow run; empty while no live node matches.

    A fan-out ignores the session's node: it runs on every live match.
    """
    if request.node_name:
        return (request.node_name,)
    if request.all_nodes:
        return tuple(live[:limit])
    node = request.session_node or least_busy(live, load)
    return (node,) if node else ()
