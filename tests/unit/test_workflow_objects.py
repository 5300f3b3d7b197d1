"""The controller's fan-out helpers: recent creates, cached child views, bounded concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from imageops.workers import workflow_objects as objects


def _child(name: str, version: str = "1", phase: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": version,
            "generation": 1,
            "labels": {"imageops.dev/step": "pull", "imageops.dev/node": "n1"},
        },
        "spec": {"action": "Pull", "image": "reg/app:1", "nodeName": "n1"},
        "status": {"phase": phase, "observedGeneration": 1} if phase else {},
    }


def test_a_child_just_created_is_not_created_again_until_the_memo_expires() -> None:
    recent = objects.RecentCreates(ttl=0.2)
    body = _child("a")
    assert not recent.fresh(body)
    recent.add(body)
    assert recent.fresh(body) and not recent.fresh(_child("b"))
    asyncio.run(asyncio.sleep(0.25))
    assert not recent.fresh(body)


def test_the_memo_prunes_expired_entries_but_not_on_every_add() -> None:
    recent = objects.RecentCreates(ttl=60)
    for i in range(3000):
        recent.add(_child(f"c{i}"))
    # Every entry is fresh: kept, and the next clean-up waits until the memo doubled.
    assert all(recent.fresh(_child(f"c{i}")) for i in range(0, 3000, 500))
    assert recent._prune_at >= 2000


def test_child_views_are_read_once_per_version() -> None:
    views = objects.ChildViews()
    running = _child("a")
    [first] = views.of([running])
    [again] = views.of([running])
    assert again is first and str(first.phase) == "Running"
    [done] = views.of([_child("a", version="2", phase="Succeeded")])
    assert done is not first and str(done.phase) == "Succeeded"
    assert views.of([{"metadata": {"uid": "x", "resourceVersion": "1"}, "spec": {}}]) == []


def test_run_limited_runs_every_call_at_most_n_at_once_then_raises_the_first_failure() -> None:
    running = 0
    most = 0
    done: list[int] = []

    async def call(i: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        if i == 3:
            raise RuntimeError("refused")
        done.append(i)

    calls = [lambda i=i: call(i) for i in range(20)]
    with pytest.raises(RuntimeError, match="refused"):
        asyncio.run(objects.run_limited(calls, limit=4))
    assert most == 4 and sorted(done) == [i for i in range(20) if i != 3]
