"""Single flight: concurrent identical pulls on one node share one registry pull.

The first caller of a key starts the work; later callers with the same key
wait for the same result. The shared work is cancelled only when every
caller has gone (deleted or timed out), so one deletion never stops a pull
that other operations still wait for.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from imageops.services.backend import CancelToken, TransferProgress

T = TypeVar("T")


@dataclass
class _Flight(Generic[T]):
    task: asyncio.Task[T]
    token: CancelToken
    listeners: list[Callable[[TransferProgress], None]] = field(default_factory=list)
    waiters: int = 0
    # Callers told when the shared work really starts (it may wait for a slot first).
    starters: list[Callable[[], None]] = field(default_factory=list)
    started: bool = False


def _publish(
    listeners: list[Callable[[TransferProgress], None]], progress: TransferProgress
) -> None:
    """Hand one progress snapshot to every operation waiting on the flight."""
    for listener in list(listeners):
        listener(progress)


Work = Callable[[CancelToken, Callable[[TransferProgress], None]], Awaitable[T]]


class Flights(Generic[T]):
    """Deduplicates concurrent work by key."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(
        self,
        key: Hashable,
        work: Work[T],
        on_progress: Callable[[TransferProgress], None],
        on_start: Callable[[], None] | None = None,
    ) -> tuple[T, bool]:
        """Run ``work`` once per key at a time; returns (result, shared).

        ``on_start`` is called when the work calls :meth:`start` for its key, or
        at once when this caller joins work that started already.
        """
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            token = CancelToken()
            listeners: list[Callable[[TransferProgress], None]] = []
            task = asyncio.ensure_future(work(token, functools.partial(_publish, listeners)))
            flight = _Flight(task=task, token=token, listeners=listeners)
            self._flights[key] = flight
            task.add_done_callback(functools.partial(self._forget, key, flight))
        flight.waiters += 1
        flight.listeners.append(on_progress)
        if on_start is not None:
            if flight.started:
                on_start()
            else:
                flight.starters.append(on_start)
        try:
            return await asyncio.shield(flight.task), shared
        finally:
            flight.waiters -= 1
            flight.listeners.remove(on_progress)
            if flight.waiters == 0 and not flight.task.done():
                # Nobody waits any more: stop the Docker work too.
                flight.token.cancel("cancelled")
                flight.task.cancel()

    def start(self, key: Hashable) -> None:
        """The work of ``key`` has started: tell every caller waiting on it (event loop only)."""
        flight = self._flights.get(key)
        if flight is None or flight.started:
            return
        flight.started = True
        starters, flight.starters = flight.starters, []
        for starter in starters:
            starter()

    def _forget(self, key: Hashable, flight: _Flight[T], _task: object = None) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved here so asyncio does not log it as lost
