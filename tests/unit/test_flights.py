import asyncio

from imageops.services.backend import CancelToken, TransferProgress
from imageops.workers.flights import Flights


def test_identical_concurrent_work_runs_once() -> None:
    calls = 0
    seen: list[int] = []

    async def work(token: CancelToken, progress: object) -> str:
        nonlocal calls
        calls += 1
        assert callable(progress)
        progress(TransferProgress(layers_done=1, layers_total=1))
        await asyncio.sleep(0.05)
        return "done"

    async def main() -> list[tuple[str, bool]]:
        flights: Flights[str] = Flights()
        return await asyncio.gather(
            *(flights.run("k", work, lambda p: seen.append(p.layers_done)) for _ in range(10))
        )

    results = asyncio.run(main())
    assert calls == 1
    assert [r for r, _ in results] == ["done"] * 10
    assert sum(shared for _, shared in results) == 9


def test_cancelling_one_waiter_keeps_shared_work() -> None:
    async def main() -> tuple[str, bool]:
        flights: Flights[str] = Flights()
        token_seen: list[CancelToken] = []

        async def work(token: CancelToken, _p: object) -> str:
            token_seen.append(token)
            await asyncio.sleep(0.1)
            return "ok"

        first = asyncio.create_task(flights.run("k", work, lambda p: None))
        second = asyncio.create_task(flights.run("k", work, lambda p: None))
        await asyncio.sleep(0.01)
        first.cancel()
        result, _ = await second
        return result, token_seen[0].cancelled

    assert asyncio.run(main()) == ("ok", False)


def test_last_waiter_gone_cancels_the_work() -> None:
    async def main() -> bool:
        flights: Flights[str] = Flights()
        tokens: list[CancelToken] = []

        async def work(token: CancelToken, _p: object) -> str:
            tokens.append(token)
            await asyncio.sleep(10)
            return "never"

        task = asyncio.create_task(flights.run("k", work, lambda p: None))
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
        return tokens[0].cancelled and len(flights) == 0

    assert asyncio.run(main())


def test_callers_learn_when_the_shared_work_starts() -> None:
    """The work may wait for a slot first; every caller, early or late, hears when it starts."""
    events: list[str] = []

    async def main() -> None:
        flights: Flights[str] = Flights()
        go = asyncio.Event()

        async def work(token: CancelToken, _p: object) -> str:
            await go.wait()  # queued behind --max-concurrent
            flights.start("k")
            await asyncio.sleep(0.05)
            return "ok"

        early = asyncio.ensure_future(
            flights.run("k", work, lambda p: None, lambda: events.append("early"))
        )
        await asyncio.sleep(0.01)
        assert events == []
        go.set()
        await asyncio.sleep(0.01)
        assert events == ["early"]
        late = await flights.run("k", work, lambda p: None, lambda: events.append("late"))
        assert late == ("ok", True) and await early == ("ok", False)

    asyncio.run(main())
    assert events == ["early", "late"]
