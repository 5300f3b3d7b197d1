"""``imageops run`` plus a count of the ImageOperation watch events the process receives.

Used by the fan-out benchmark (P5) for ``--role agent`` processes only. The operator has
no such metric yet (``imageops_watch_events_total`` is proposed), and its log cannot stand
in: ``imageops.cli`` caps kopf's per-object logger at WARNING even with --log-level DEBUG,
and kopf logs nothing per raw event. So this wrapper counts the raw events at kopf's
watch stream (before kopf's per-object batching), split by whether the object's
spec.nodeName is this agent's node, and exports them on the operator's own /metrics:

    imageops_bench_watch_events_total{source="watch"|"list", node="own"|"other"}

Run as ``python bench/agent_probe.py run --role agent --node-name N ...`` with
PYTHONPATH=operator. Nothing else of the operator is changed.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

from kopf._cogs.clients import fetching, watching
from prometheus_client import Counter

from imageops.cli import main

EVENTS = Counter(
    "imageops_bench_watch_events_total",
    "ImageOperation objects received by this process's watch streams and initial lists.",
    ["source", "node"],
)
_watch_objs = watching.watch_objs
_fetch_objs = fetching.fetch_objs


def _node_arg(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--node-name" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--node-name="):
            return arg.split("=", 1)[1]
    raise SystemExit("agent_probe: --node-name is required")


NODE = _node_arg(sys.argv[1:])


def _count(source: str, obj: Mapping[str, Any]) -> None:
    node = (obj.get("spec") or {}).get("nodeName")
    EVENTS.labels(source, "own" if node == NODE else "other").inc()


def _is_imageoperations(kwargs: dict[str, Any]) -> bool:
    return getattr(kwargs.get("resource"), "plural", "") == "imageoperations"


async def counting_watch_objs(**kwargs: Any) -> AsyncIterator[Any]:
    """kopf's watch_objs, counting ADDED/MODIFIED/DELETED of ImageOperations."""
    counted = _is_imageoperations(kwargs)
    async for raw in _watch_objs(**kwargs):
        if counted and raw.get("type") in ("ADDED", "MODIFIED", "DELETED"):
            _count("watch", raw.get("object") or {})
        yield raw


async def counting_fetch_objs(**kwargs: Any) -> AsyncIterator[Any]:
    """kopf's fetch_objs (the initial list), counting the ImageOperations listed."""
    counted = _is_imageoperations(kwargs)
    async for chunk, version in _fetch_objs(**kwargs):
        if counted:
            for obj in chunk:
                _count("list", obj)
        yield chunk, version


watching.watch_objs = counting_watch_objs
fetching.fetch_objs = counting_fetch_objs

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
