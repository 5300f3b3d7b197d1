"""The node's write budget (workers.pacer) under controlled time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

from imageops.workers.pacer import Pacer


class Clock:
    """Controlled monotonic time: the pacer's sleeps advance it at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay
        await asyncio.sleep(0)


def _recorder(
    clock: Clock, log: list[tuple[str, float]], name: str, wrote: bool = True
) -> Callable[[], Awaitable[bool]]:
    async def write() -> bool:
        log.append((name, clock.now))
        return wrote

    return write


async def _drain(pacer: Pacer) -> None:
    while len(pacer) or (pacer._task is not None and not pacer._task.done()):
        await asyncio.sleep(0)


def test_writes_are_spaced_by_the_interval_oldest_first() -> None:
    async def scenario() -> list[tuple[str, float]]:
        clock, log = Clock(), []
        pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
        for i in range(5):
            pacer.request(f"run{i}", _recorder(clock, log, f"run{i}"))
        await _drain(pacer)
        assert pacer.writes == 5
        return log

    log = asyncio.run(scenario())
    assert log == [("run0", 0.0), ("run1", 2.0), ("run2", 4.0), ("run3", 6.0), ("run4", 8.0)]


def test_a_run_asking_again_keeps_its_turn_and_writes_its_newest_state_once() -> None:
    async def scenario() -> list[tuple[str, float]]:
        clock, log = Clock(), []
        pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
        pacer.request("a", _recorder(clock, log, "a-old"))
        pacer.request("b", _recorder(clock, log, "b"))
        pacer.request("a", _recorder(clock, log, "a-new"))
        await _drain(pacer)
        return log

    assert asyncio.run(scenario()) == [("a-new", 0.0), ("b", 2.0)]


def test_withdrawn_requests_never_run_and_empty_turns_cost_no_budget() -> None:
    async def scenario() -> list[tuple[str, float]]:
        clock, log = Clock(), []
        pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
        pacer.request("finished", _recorder(clock, log, "finished"))
        pacer.request("empty", _recorder(clock, log, "empty", wrote=False))
        pacer.request("c", _recorder(clock, log, "c"))
        pacer.withdraw("finished")
        await _drain(pacer)
        assert pacer.writes == 1
        return log

    # "empty" wrote nothing, so "c" did not wait a whole interval after it.
    assert asyncio.run(scenario()) == [("empty", 0.0), ("c", 0.0)]


def test_the_budget_holds_whatever_the_number_of_runs() -> None:
    """200 runs asking for a write all the time: at most one write per interval."""

    async def scenario() -> list[tuple[str, float]]:
        clock, log = Clock(), []
        pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)

        def ask(name: str) -> None:
            async def write() -> bool:
                log.append((name, clock.now))
                if clock.now < 60:
                    ask(name)  # progress keeps coming: ask again at once
                return True

            pacer.request(name, write)

        for i in range(200):
            ask(f"run{i}")
        await _drain(pacer)
        return log

    log = asyncio.run(scenario())
    times = [t for _, t in log]
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(times))
    in_a_minute = [t for t in times if t < 60]
    assert len(in_a_minute) <= 60 / 2.0 + 1
    # Fair: every run had a turn before any run had a second one.
    first_turns = [name for name, _ in log[:30]]
    assert len(set(first_turns)) == 30
