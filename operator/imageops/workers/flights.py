"""Single flight: concurrent identical pulls on one node share one registry pull.

The first caller of a key starts the work; later callers with the same key
wait for the same result. The shared work is cancelled only when every
caller has gone (deleted or timed out), so one deletion never stops a pull
that other operations still wait for.
"""

from __future__ import annotations

import asyncio
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

    def publish(self, progress: TransferProgress) -> None:
        for listener in list(self.listeners):
            listener(progress)


Work = Callable[[CancelToken, Callable[[TransferProgress], None]], Awaitable[T]]


class Flights(Generic[T]):
    """Deduplicates concurrent work by key."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(
        self, key: Hashable, work: Work[T], on_progress: Callable[[TransferProgress], None]
    ) -> tuple[T, bool]:
        """Run ``work`` once per key at a time; returns (result, shared)."""
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            token = CancelToken()
            holder: list[_Flight[T]] = []
            task = asyncio.ensure_future(work(token, lambda p: holder[0].publish(p)))
            flight = _Flight(task=task, token=token)
            holder.append(flight)
            self._flights[key] = flight
            task.add_done_callback(lambda _t, k=key, f=flight: self._forget(k, f))
        flight.waiters += 1
        flight.listeners.append(on_progress)
        try:
            return await asyncio.shield(flight.task), shared
        finally:
            flight.waiters -= 1
            flight.listeners.remove(on_progress)
            if flight.waiters == 0 and not flight.task.done():
                # Nobody waits any more: stop the Docker work too.
                flight.token.cancel("cancelled")
                flight.task.cancel()

    def _forget(self, key: Hashable, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved here so asyncio does not log it as lost
