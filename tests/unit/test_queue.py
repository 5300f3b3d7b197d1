"""The controller's work queue: de-duplication, one worker per key, requeue-after, errors."""

from __future__ import annotations

import asyncio

from imageops.workers.queue import WorkQueue


def test_a_key_added_twice_before_it_starts_runs_once() -> None:
    seen: list[str] = []

    async def reconcile(key: str) -> None:
        seen.append(key)

    async def main() -> None:
        queue: WorkQueue[str] = WorkQueue("t", reconcile)
        for key in ("a", "a", "b", "a"):
            queue.add(key)
        await queue.wait_idle()
        await queue.shutdown()

    asyncio.run(main())
    assert sorted(seen) == ["a", "b"]


def test_a_key_added_while_running_runs_again_after_never_at_once() -> None:
    running, most, passes = 0, 0, 0
    gate = asyncio.Event()

    async def reconcile(key: str) -> None:
        nonlocal running, most, passes
        running += 1
        most = max(most, running)
        passes += 1
        if passes == 1:
            await gate.wait()
        running -= 1

    async def main() -> None:
        queue: WorkQueue[str] = WorkQueue("t", reconcile, workers=4)
        queue.add("k")
        await asyncio.sleep(0.01)
        queue.add("k")  # while the first pass runs: dirty
        queue.add("k")  # de-duplicated with the one before
        await asyncio.sleep(0.01)
        assert passes == 1
        gate.set()
        await queue.wait_idle()
        await queue.shutdown()

    asyncio.run(main())
    assert most == 1 and passes == 2


def test_requeue_after_and_the_earliest_timer_wins() -> None:
    times: list[float] = []

    async def reconcile(key: str) -> float | None:
        times.append(asyncio.get_running_loop().time())
        return 0.05 if len(times) == 1 else None

    async def main() -> float:
        queue: WorkQueue[str] = WorkQueue("t", reconcile)
        start = asyncio.get_running_loop().time()
        queue.add_after("k", 10.0)
        queue.add("k")  # runs now; returns 0.05, earlier than the 10 s timer
        await asyncio.sleep(0.2)
        assert len(times) == 2
        left = queue.scheduled("k")
        assert left is None  # the 10 s timer was replaced by the earlier one
        await queue.shutdown()
        return start

    start = asyncio.run(main())
    assert 0.04 <= times[1] - start <= 0.15


def test_a_failing_reconcile_is_retried_with_backoff_and_forget_drops_it() -> None:
    calls = 0

    async def reconcile(key: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("API server away")

    async def main() -> None:
        queue: WorkQueue[str] = WorkQueue("t", reconcile)
        queue.add("k")
        await queue.wait_idle()
        assert calls == 1 and queue.scheduled("k") is not None
        await asyncio.sleep(0.6)
        assert calls == 2
        queue.add_after("k", 5)
        queue.forget("k")
        assert queue.scheduled("k") is None
        await queue.shutdown()

    asyncio.run(main())


def test_concurrency_is_bounded_and_shutdown_cancels_running_passes() -> None:
    running, most = 0, 0
    cancelled = 0

    async def reconcile(key: int) -> None:
        nonlocal running, most, cancelled
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled += 1
            raise
        finally:
            running -= 1

    async def main() -> None:
        queue: WorkQueue[int] = WorkQueue("t", reconcile, workers=3)
        for key in range(10):
            queue.add(key)
        await asyncio.sleep(0.05)
        await queue.shutdown()
        queue.add(99)  # after shutdown: ignored

    asyncio.run(main())
    assert most == 3 and cancelled == 3
