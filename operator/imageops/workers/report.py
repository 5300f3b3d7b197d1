"""What one run of an ImageOperation writes: its status, its Events, its metrics.

One :class:`RunReport` per run (one generation, every attempt). The agent tells
it what happens — :meth:`~RunReport.queued`, :meth:`~RunReport.running`,
progress, :meth:`~RunReport.retrying`, :meth:`~RunReport.succeeded` or
:meth:`~RunReport.failed` — and the report decides what to write and when.

Two promises hold the design:

- **A short run writes one status.** The first status (Pending or Running) is
  held back for the start grace (0.5 s); a run that finishes sooner (a cache
  hit, a tag) writes its final status with the first one merged into it.
- **A node's intermediate writes are budgeted.** The first status, the
  Queued → Running change and progress go through the agent's shared
  :class:`~imageops.workers.pacer.Pacer` (one write every ``interval`` seconds
  for the whole node); a write shows the run's newest state when it starts.
  Writes that carry an outcome (a retry, the final status) or that a person is
  waiting for (a missing session) go at once, never behind the pacer, and
  carry whatever the pacer had not written yet. Writes of one run never overlap
  and land in order.

``stage`` is what the run does (``Stage``); ``state`` is what the API server
shows of it (``ReportState``). Transitions of ``state``:

========  ===============================  ========  ======================================
state     event                            next      written
========  ===============================  ========  ======================================
HELD      start grace over, ``queued()``   HELD      a paced request for the first status
HELD      ``running()``, progress          HELD      nothing yet: the first status shows it
HELD      the paced write runs             SHOWN     first status (+ progress), as of now
HELD      ``write_now`` (retry, session,   SHOWN     the first status merged with that write
          next attempt)
HELD      ``succeeded()``/``failed()``     FINISHED  one write: the first status merged into
                                                     the final one (Started Event then)
SHOWN     ``running()``, progress          SHOWN     a paced request: Running (startTime),
                                                     progress
SHOWN     the paced write runs             SHOWN     what the API server does not show yet
SHOWN     ``write_now``                    SHOWN     what is pending, merged with that write
SHOWN     ``succeeded()``/``failed()``     FINISHED  what is pending, merged into the final
any       ``close()`` (deleted,            FINISHED  nothing more
          superseded, shut down)
========  ===============================  ========  ======================================

``stage`` only moves forward: PREPARING → QUEUED → RUNNING (or PREPARING → RUNNING).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from imageops.adapters import metrics
from imageops.adapters.kube import AsyncKube, ObjectRef
from imageops.models.common import Phase, PullPolicy
from imageops.models.imageoperation import ImageOperationSpec
from imageops.services import lifecycle
from imageops.services.errors import OperationError
from imageops.services.lifecycle import OperationResult, RunState, StatusPatch
from imageops.workers.executor import ProgressBuffer
from imageops.workers.pacer import Pacer

log = logging.getLogger(__name__)


class Stage(StrEnum):
    """What the run is doing, as its first status says it."""

    PREPARING = "Preparing"  # Pending: resolving its session and credentials
    QUEUED = "Queued"  # Pending, reason Queued: every --max-concurrent slot is busy
    RUNNING = "Running"  # Running: holds a slot (or shares a pull that does)


class ReportState(StrEnum):
    """What the API server shows of the run."""

    HELD = "Held"  # nothing yet: the first status is held back or waits for its turn
    SHOWN = "Shown"  # the first status is written; later changes follow it
    FINISHED = "Finished"  # the final status is written (or the run ended without one)


def now() -> datetime:
    """The time of the agent's status and durations (full precision)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ReportContext:
    """What every run's report of one agent shares."""

    kube: AsyncKube
    pacer: Pacer
    spawn: Callable[[Coroutine[Any, Any, None]], None]  # best-effort work (Events)
    start_grace: float
    slots: int  # the agent's --max-concurrent, for the Queued message


class RunReport:
    """The status, Events and metrics of one run (see the module docstring)."""

    def __init__(
        self,
        ctx: ReportContext,
        ref: ObjectRef,
        spec: ImageOperationSpec,
        run: RunState,
        resumed: bool,
        pull_policy: PullPolicy | None,
    ) -> None:
        self.ctx = ctx
        self.ref = ref
        self.run = run
        self.action = str(spec.action)
        self.state = ReportState.HELD
        self.stage = Stage.PREPARING
        self._shown: Stage | None = None  # the stage the API server shows
        self._clear = not resumed  # a new generation removes the results of an older one
        self._pull_policy = pull_policy
        self._verb = "Resumed" if resumed else "Started"
        self._message = (
            f"{self._verb} {spec.action} of {spec.image} on {run.node} (job {run.job_id})"
        )
        self._event_posted = False
        self.final: StatusPatch | None = None  # the final status, once written
        self._buffer: ProgressBuffer | None = None
        self._seen = 0
        self._lock = asyncio.Lock()  # one write of this run at a time, in order
        self._timer: asyncio.TimerHandle | None = None
        if ctx.start_grace > 0:
            self._timer = asyncio.get_running_loop().call_later(ctx.start_grace, self._request)
        else:
            self._request()

    # Events from the run -------------------------------------------------------------

    def queued(self) -> None:
        """Every slot is taken: say so now (Pending, Queued), not after the grace."""
        if self.stage is Stage.PREPARING:
            self.stage = Stage.QUEUED
            self._cancel_timer()
            self._request()

    def running(self) -> None:
        """An attempt holds a slot: from now on the run is Running (called in the loop)."""
        if self.stage is Stage.RUNNING:
            return
        self.stage = Stage.RUNNING
        if not self.run.started:
            self.run.start_time, self.run.started = now(), True
        self._changed()

    def watch(self, buffer: ProgressBuffer) -> None:
        """Report the progress of this attempt (from its buffer)."""
        self._buffer, self._seen = buffer, 0

    def progress_changed(self) -> None:
        """New progress arrived (the buffer calls this in the event loop)."""
        self._changed()

    async def write_now(self, make: Callable[[], StatusPatch]) -> None:
        """Write ``make()`` at once, with whatever the API server does not show yet."""
        self._cancel_timer()
        # Shielded: a run cancelled meanwhile must not cancel the write it started.
        await asyncio.shield(self._write_pending(make, final=False))

    async def retrying(self, error: OperationError, delay: float) -> None:
        """A retryable failure: record it and when the next attempt starts."""
        at = now()
        await self.write_now(
            lambda: lifecycle.retrying_patch(
                self.run, error, delay, at, at + timedelta(seconds=delay)
            )
        )
        message = (
            f"attempt {self.run.attempts} failed: {error.reason}: {error.message}; "
            f"retry in {delay:.0f}s"
        )
        log.info("%s/%s: %s", self.ref.namespace, self.ref.name, message)
        await self.ctx.kube.post_event(self.ref, "Warning", "Retrying", message)
        metrics.RETRIES.labels(self.action, str(error.reason)).inc()

    async def succeeded(self, spec: ImageOperationSpec, result: OperationResult) -> None:
        """The final status of a verified success, its Event and metrics."""
        patch = await self._finish(lambda: lifecycle.succeeded_patch(self.run, result, now()))
        what = result.dry_run_result or f"{spec.action} {spec.target or spec.image}"
        message = f"{what}: digest {result.digest or '-'} (attempt {self.run.attempts})"
        self._finished(patch, ("Normal", "Succeeded", message))
        if result.cache_hit:
            metrics.CACHE_HITS.inc()
        if result.bytes_transferred:
            metrics.BYTES.labels(self.action).inc(result.bytes_transferred)

    async def failed(self, error: OperationError) -> None:
        """The final status of a permanent failure (or retries exhausted)."""
        self.run.attempts = max(self.run.attempts, 1)
        patch = await self._finish(lambda: lifecycle.failed_patch(self.run, error, now()))
        message = f"{error.reason}: {error.message} (after {self.run.attempts} attempt(s))"
        self._finished(patch, ("Warning", "Failed", message))

    def close(self) -> None:
        """The run ended (finished, deleted, superseded or shut down): write nothing more."""
        self._cancel_timer()
        self.ctx.pacer.withdraw(self)
        self.state = ReportState.FINISHED

    # Writing ------------------------------------------------------------------------

    def _changed(self) -> None:
        """Something to show: ask the pacer, unless the start grace still holds it back."""
        if self._timer is None:
            self._request()

    def _request(self) -> None:
        self._timer = None
        if self.state is not ReportState.FINISHED:
            self.ctx.pacer.request(self, self._paced)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _paced(self) -> bool:
        """The pacer's turn: write the first status, a stage change and progress, as of now."""
        async with self._lock:
            if self.state is ReportState.FINISHED:
                return False
            patch = self._pending()
            if self._buffer is not None:
                progress, self._seen = self._buffer.take(self._seen)
                if progress is not None:
                    patch.update(lifecycle.progress_patch(progress))
            if not patch:
                return False
            await self._write(patch, "paced")
            self._shown_now()
            return True

    async def _finish(self, make: Callable[[], StatusPatch]) -> StatusPatch:
        """The final write: never behind the pacer, after any write of this run under way."""
        self.close()
        self.final = await asyncio.shield(self._write_pending(make, final=True))
        return self.final

    async def _write_pending(self, make: Callable[[], StatusPatch], final: bool) -> StatusPatch:
        async with self._lock:
            held = self._shown is None
            # The pending part first: make() builds on the conditions it sets.
            patch = {**self._pending(), **make()}
            await self._write(patch, "final" if final else "immediate")
            if final:
                if not self._event_posted and (held or self._shown is Stage.RUNNING):
                    self._post_started()
            else:
                self._shown_now()
            return patch

    def _pending(self) -> StatusPatch:
        """What the API server does not show yet of the first status and the stage."""
        if self._shown is self.stage:
            return {}
        clear = self._clear and self._shown is None
        self._shown = self.stage
        return self._first(clear)

    def _first(self, clear: bool) -> StatusPatch:
        run, when, policy = self.run, now(), self._pull_policy
        if self.stage is Stage.RUNNING:
            return lifecycle.started_patch(
                run, Phase.RUNNING, self._message, when, pull_policy=policy, clear=clear
            )
        if self.stage is Stage.QUEUED:
            queued = (
                f"queued: all {self.ctx.slots} slots (--max-concurrent) on node {run.node} are busy"
            )
            return lifecycle.started_patch(
                run, Phase.PENDING, queued, when, "Queued", pull_policy=policy, clear=clear
            )
        message = f"{self._verb}: resolving session and credentials"
        return lifecycle.started_patch(
            run, Phase.PENDING, message, when, pull_policy=policy, clear=clear
        )

    def _shown_now(self) -> None:
        if self.state is ReportState.HELD:
            self.state = ReportState.SHOWN
        if self._shown is Stage.RUNNING and not self._event_posted:
            self._post_started()

    def _post_started(self) -> None:
        """The Started/Resumed Event, once: when the run holds a slot, or at its end."""
        self._event_posted = True
        self.ctx.spawn(self.ctx.kube.post_event(self.ref, "Normal", self._verb, self._message))

    async def _write(self, patch: StatusPatch, kind: str) -> None:
        await self.ctx.kube.patch_status(self.ref, patch)
        metrics.STATUS_WRITES.labels(kind).inc()

    def _finished(self, patch: StatusPatch, event: tuple[str, str, str]) -> None:
        """The final Event and the operation metrics."""
        self.ctx.spawn(self.ctx.kube.post_event(self.ref, *event))
        reason = (patch.get("lastError") or {}).get("reason")
        metrics.count_finished(self.action, patch["phase"], reason)
        metrics.DURATION.labels(self.action).observe(patch["durationSeconds"])


class Outcomes:
    """The final statuses this agent wrote lately, to put one back that a late write undid.

    A status write that timed out on the client may still be applied by the API
    server later (kube-apiserver finishes a request it answered 504, or one whose
    client gave up, once etcd is back): an intermediate write of a run (Running,
    progress) can land after that run's final status and show it running again.
    The agent then writes the final status again instead of running the
    operation a second time. Bounded: the newest ``size`` outcomes are kept.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._final: OrderedDict[str, tuple[int, StatusPatch]] = OrderedDict()

    def remember(self, uid: str, generation: int, patch: StatusPatch) -> None:
        """Record the final status written for this generation of the object."""
        self._final[uid] = (generation, patch)
        self._final.move_to_end(uid)
        while len(self._final) > self.size:
            self._final.popitem(last=False)

    def undone(self, uid: str, generation: int, phase: Phase | None) -> StatusPatch | None:
        """The final status to write again when the object shows this generation unfinished."""
        held = self._final.get(uid)
        if held is None or held[0] != generation or phase in lifecycle.TERMINAL:
            return None
        return held[1]

    def forget(self, uid: str) -> None:
        """The object is gone: nothing to put back."""
        self._final.pop(uid, None)
