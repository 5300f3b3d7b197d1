"""The node's budget of intermediate status writes, shared by every run of the agent.

A node may run hundreds of operations at once; each would write its first
status, its Queued → Running change and its progress, and the API server
(etcd) pays for every write. The pacer holds the agent to at most one such
write every ``interval`` seconds (0.5 per second by default), whatever the
number of runs, as OpenKruise's daemon does:

- a run *requests* a write; the pacer starts the oldest request once
  ``interval`` seconds have passed since the previous write started, one at a
  time;
- a run that requests again before its turn keeps its place in the queue, and
  its write, built when it starts, shows the run's newest state (requests
  coalesce: a run never has more than one pending write);
- a run that finishes *withdraws* its request: its final status carries
  everything, and final writes never wait for the pacer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)
# A write returns whether it wrote anything (nothing to show: the turn costs no budget).
Write = Callable[[], Awaitable[bool]]


class Pacer:
    """At most one write every ``interval`` seconds, oldest request first."""

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._queue: OrderedDict[Hashable, Write] = OrderedDict()
        self._next = float("-inf")  # when the next write may start
        self._task: asyncio.Task[None] | None = None
        self.writes = 0  # writes started so far

    def __len__(self) -> int:
        return len(self._queue)

    def request(self, key: Hashable, write: Write) -> None:
        """Ask for ``write`` to run in ``key``'s turn (a pending request keeps its place)."""
        # Assigning to a key already queued keeps its place: the newest write, in the old turn.
        self._queue[key] = write
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="status-pacer")

    def withdraw(self, key: Hashable) -> None:
        """Drop ``key``'s pending request (a write under way is not stopped)."""
        self._queue.pop(key, None)

    def pending(self, key: Hashable) -> bool:
        """Whether ``key`` has a request waiting for its turn."""
        return key in self._queue

    async def _drain(self) -> None:
        """Run the queued writes, spaced by ``interval``, until the queue is empty."""
        while self._queue:
            delay = self._next - self._clock()
            if delay > 0:
                await self._sleep(delay)
                continue  # requests may have been withdrawn meanwhile
            _, write = self._queue.popitem(last=False)
            started = self._clock()
            try:
                wrote = await write()
            except Exception:
                # One run's failed write must not stop every other run's progress.
                log.exception("paced status write failed")
                wrote = True
            if wrote:
                self._next = started + self.interval
                self.writes += 1

    async def close(self) -> None:
        """Stop: drop every request and cancel the loop."""
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
