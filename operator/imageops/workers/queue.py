"""One keyed work queue for every controller worker (controller-runtime's, in asyncio).

- **Keyed and de-duplicating:** a key added while it waits is queued once.
- **One worker per key:** a key added while its reconcile runs is marked
  dirty and runs again right after, never twice at once.
- **Requeue-after:** a reconcile returns the seconds after which it wants
  another pass (a deadline, a TTL, a flush interval), or None. ``add_after``
  does the same from outside. Of several timers of one key the earliest wins.
- **Errors:** a reconcile that raises is logged and retried after a capped,
  doubling delay (state is in the API server, so a later pass loses nothing).
- **Bounded concurrency:** ``workers`` reconciles at once across all keys.
- **Clean shutdown:** :meth:`shutdown` cancels the timers and the workers.

Workers start with the first key added (inside a running event loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
Reconcile = Callable[[K], Awaitable[float | None]]
ERROR_BASE = 0.5  # seconds before the first retry of a failed reconcile
ERROR_CAP = 5.0  # short: the sweeps this queue replaced retried every few seconds


class WorkQueue(Generic[K]):
    """Runs ``reconcile(key)`` for the keys added, as described in the module docstring."""

    def __init__(self, name: str, reconcile: Reconcile[K], *, workers: int = 4) -> None:
        self.name = name
        self._reconcile = reconcile
        self._size = workers
        self._ready: asyncio.Queue[K] | None = None
        self._waiting: set[K] = set()  # in _ready, not started
        self._running: set[K] = set()
        self._dirty: set[K] = set()  # added while running: run again after
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._idle: asyncio.Event | None = None
        self._closed = False

    def __len__(self) -> int:
        """Keys waiting or running."""
        return len(self._waiting | self._running)

    def add(self, key: K) -> None:
        """Reconcile ``key`` soon (once, however often it is added before it starts)."""
        if self._closed:
            return
        if key in self._running:
            self._dirty.add(key)
            return
        if key in self._waiting:
            return
        self._start()
        assert self._ready is not None and self._idle is not None
        self._waiting.add(key)
        self._idle.clear()
        self._ready.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Reconcile ``key`` in ``delay`` seconds (unless an earlier timer of it is set)."""
        if self._closed:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= when:
                return
            current[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def forget(self, key: K) -> None:
        """Drop the key's timer, error count and pending re-run (its object is gone).

        A pass already waiting still runs; it finds the object gone and returns.
        """
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()
        self._dirty.discard(key)
        self._failures.pop(key, None)

    def scheduled(self, key: K) -> float | None:
        """Seconds until the key's timer fires, if it has one (for tests and logs)."""
        timer = self._timers.get(key)
        return None if timer is None else timer[0] - asyncio.get_running_loop().time()

    async def wait_idle(self) -> None:
        """Wait until no key waits or runs (timers may still be set)."""
        if self._idle is not None:
            await self._idle.wait()

    async def run(self) -> None:
        """Start the workers and serve until cancelled, then shut down."""
        self._start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Cancel the timers and the workers; reconciles under way are cancelled too."""
        self._closed = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def _start(self) -> None:
        if self._workers or self._closed:
            return
        self._ready = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers = [
            asyncio.create_task(self._work(), name=f"{self.name}/worker-{i}")
            for i in range(self._size)
        ]

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def _work(self) -> None:
        assert self._ready is not None
        while True:
            key = await self._ready.get()
            self._waiting.discard(key)
            self._running.add(key)
            try:
                await self._one(key)
            finally:
                self._running.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
                elif not self._waiting and not self._running and self._idle is not None:
                    self._idle.set()

    async def _one(self, key: K) -> None:
        try:
            after = await self._reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(ERROR_BASE * 2 ** (failures - 1), ERROR_CAP)
            log.exception("%s: reconcile of %s failed; again in %.1fs", self.name, key, delay)
            self.add_after(key, delay)
            return
        self._failures.pop(key, None)
        if after is not None:
            self.add_after(key, after)
