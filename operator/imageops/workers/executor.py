"""Runs one attempt of an operation in the agent's thread pool.

Docker calls block, so each attempt runs in a pool sized to the agent's
concurrency limit; the event loop only awaits. A per-attempt timer cancels
the backend call (closing its stream) when ``timeoutSeconds`` passes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from imageops.models.common import ErrorReason
from imageops.models.imageoperation import OperationFields
from imageops.services.backend import CancelToken, ImageBackend, RegistryAuth, TransferProgress
from imageops.services.errors import OperationError, from_message
from imageops.services.lifecycle import OperationResult
from imageops.services.perform import Attempt, perform
from imageops.services.pull_grants import PullRecords


class AttemptExecutor:
    """At most ``limit`` Docker operations at once, each in a worker thread."""

    def __init__(
        self, backend: ImageBackend, limit: int, records: PullRecords | None = None
    ) -> None:
        self.backend = backend
        self.records = records
        self.limit = limit
        self.slots = asyncio.Semaphore(limit)
        self.pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="docker")

    def busy(self) -> bool:
        """Whether a new attempt would have to wait for a slot."""
        return self.slots.locked()

    async def run(
        self,
        spec: OperationFields,
        auth: RegistryAuth | None,
        timeout: float,
        token: CancelToken,
        on_progress: Callable[[TransferProgress], None],
        on_slot: Callable[[], None] | None = None,
    ) -> OperationResult:
        """One attempt; raises OperationError (Timeout when the timer fired).

        ``on_slot`` is called (in the event loop) once the attempt holds a slot,
        right before its Docker work starts: the moment it stops being queued.
        """
        async with self.slots:
            if on_slot is not None:
                on_slot()
            loop = asyncio.get_running_loop()
            timer = loop.call_later(timeout, token.cancel, "timeout")
            attempt = Attempt(self.backend, auth, token, on_progress, self.records)
            try:
                return await loop.run_in_executor(self.pool, perform, spec, attempt)
            except OperationError as err:
                if token.cancelled and token.reason == "timeout":
                    raise OperationError(
                        ErrorReason.TIMEOUT, f"attempt exceeded {timeout:.0f}s: {err.message}"
                    ) from err
                raise
            except Exception as exc:
                # A bug or an unforeseen library error still ends as a typed, retryable failure.
                raise from_message(f"{type(exc).__name__}: {exc}") from exc
            except asyncio.CancelledError:
                # Deleted or superseded: interrupt the thread's Docker call as well.
                token.cancel("cancelled")
                raise
            finally:
                timer.cancel()

    def shutdown(self) -> None:
        """Stop accepting work; running threads finish or are cancelled by their tokens."""
        self.pool.shutdown(wait=False, cancel_futures=True)


class ProgressBuffer:
    """The latest progress from a worker thread, read by the run's status report.

    ``on_change`` is called in the event loop when progress arrives after the
    last :meth:`take` (once, however many items arrive meanwhile), so that the
    report asks for a status write only when there is something new to show.
    """

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._latest: TransferProgress | None = None
        self._version = 0
        self._taken = True
        self._on_change = on_change
        self._loop = asyncio.get_running_loop() if on_change is not None else None

    def update(self, progress: TransferProgress) -> None:
        """Called from the worker thread for each progress item."""
        with self._lock:
            self._latest = TransferProgress(**vars(progress))
            self._version += 1
            wake, self._taken = self._taken, False
        if wake and self._on_change is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_change)

    def take(self, seen: int) -> tuple[TransferProgress | None, int]:
        """The latest snapshot if newer than version ``seen``."""
        with self._lock:
            self._taken = True
            if self._version == seen:
                return None, seen
            return self._latest, self._version
