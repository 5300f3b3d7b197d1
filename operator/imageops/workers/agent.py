"""The agent: runs the ImageOperations addressed to its node.

kopf feeds every watch event in (already filtered by the API server to this
node); the agent decides, per object, whether to start, resume, restart or
ignore it, and runs each operation as an asyncio task that writes its own
status, Events and metrics. No finalizer is used, so deleting an operation
never waits for an agent; a deletion cancels the task and its Docker call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from imageops.adapters import metrics
from imageops.adapters.kube import AsyncKube, ObjectRef
from imageops.models.common import Action, ErrorReason, Phase
from imageops.models.imageoperation import PLURAL, ImageOperationSpec, ImageOperationStatus
from imageops.models.imagesession import ImageSessionSpec
from imageops.services import lifecycle
from imageops.services.backend import CancelToken, RegistryAuth
from imageops.services.backoff import backoff_delay, should_retry
from imageops.services.credentials import auth_from_secret_data
from imageops.services.effective import EffectiveSpec, effective_spec
from imageops.services.errors import OperationError
from imageops.services.lifecycle import Decision, OperationResult, RunState
from imageops.services.perform import credential_registry, effective_pull_policy
from imageops.services.progress_text import progress_wire
from imageops.services.reference import is_image_id, parse_reference, registry_allowed
from imageops.settings import DEFAULTS
from imageops.workers.executor import AttemptExecutor, ProgressBuffer
from imageops.workers.flights import Flights
from imageops.workers.session_wait import wait_for_session

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    """Settings of one agent (one node)."""

    node_name: str
    max_concurrent: int = DEFAULTS.max_concurrent
    allowed_registries: list[str] = field(default_factory=list)
    progress_interval: float = DEFAULTS.progress_interval
    backoff_base: float = DEFAULTS.backoff_base
    backoff_cap: float = DEFAULTS.backoff_cap
    # How long the first (Running) status write waits: an operation that finishes
    # sooner (a cache hit, a tag) writes one status instead of two.
    start_grace: float = 0.5
    # An operation whose sessionRef names no ImageSession waits this long (from its
    # start) for the session to appear, then fails with SessionNotFound.
    session_wait_seconds: float = DEFAULTS.session_wait_seconds
    session_poll_interval: float = 2.0


@dataclass
class _Start:
    """The first status write of a run, held back for AgentConfig.start_grace."""

    patch: Callable[[bool], dict[str, Any]]  # computed when written (clear: drop old results)
    event: tuple[str, str]  # reason, message of the Started/Resumed Event
    task: asyncio.Task[None] | None = None
    sent: bool = False
    # An attempt holds a --max-concurrent slot (or shares a pull that does): Running.
    running: bool = False
    # The first attempt had to wait for a slot: Pending with reason Queued until then.
    queued: bool = False
    event_posted: bool = False


@dataclass
class _Running:
    generation: int
    task: asyncio.Task[None]


def _now() -> datetime:
    # Full precision: durations are computed from it; status timestamps are cut to seconds.
    return datetime.now(UTC)


class Agent:
    """Runs this node's ImageOperations."""

    def __init__(self, config: AgentConfig, executor: AttemptExecutor, kube: AsyncKube) -> None:
        self.config = config
        self.executor = executor
        self.kube = kube
        self.running: dict[str, _Running] = {}
        self.flights: Flights[OperationResult] = Flights()
        # Best-effort work (Events) kept off the operations' critical path.
        self._background: set[asyncio.Task[None]] = set()

    async def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Handle one watch event of an ImageOperation addressed to this node."""
        meta = body["metadata"]
        uid = meta["uid"]
        if (body.get("spec") or {}).get("nodeName") != self.config.node_name:
            # The API server should never send these; never run another node's work.
            metrics.FOREIGN_EVENTS.inc()
            return
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self._cancel(uid)
            return
        ref = ObjectRef.from_body(body, PLURAL)
        generation = int(meta.get("generation") or 1)
        status = ImageOperationStatus.model_validate(body.get("status") or {})
        current = self.running.get(uid)
        decision = lifecycle.decide(generation, status, current.generation if current else None)
        if decision is Decision.SKIP:
            return
        if decision is Decision.RESTART:
            self._cancel(uid)
        try:
            spec = ImageOperationSpec.model_validate(body.get("spec") or {})
        except ValueError as exc:
            await self._reject(ref, generation, status, exc, body.get("spec"))
            return
        resume = status if decision is Decision.RESUME else None
        task = asyncio.create_task(
            self._run(ref, spec, generation, resume), name=f"imgop/{ref.name}"
        )
        self.running[uid] = _Running(generation, task)
        task.add_done_callback(functools.partial(self._done, uid))

    def _done(self, uid: str, task: asyncio.Task[None]) -> None:
        current = self.running.get(uid)
        if current and current.task is task:
            del self.running[uid]
        if not task.cancelled() and task.exception():
            log.error("operation task failed", exc_info=task.exception())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run best-effort work (posting an Event) without making the operation wait for it."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception():
            log.warning("posting an event failed: %s", task.exception())

    def _cancel(self, uid: str) -> None:
        current = self.running.pop(uid, None)
        if current:
            current.task.cancel()

    async def shutdown(self) -> None:
        """Cancel every task (their status stays Running, so a restart resumes them)."""
        tasks = [r.task for r in self.running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.executor.shutdown()

    async def _reject(
        self,
        ref: ObjectRef,
        generation: int,
        status: ImageOperationStatus,
        exc: Exception,
        body_spec: Mapping[str, Any] | None = None,
    ) -> None:
        """A spec the API server accepted but the models do not: fail with the reason."""
        run = RunState(
            generation, self.config.node_name, uuid.uuid4().hex[:12], _now(), status.conditions
        )
        error = OperationError(ErrorReason.INVALID_REFERENCE, f"invalid spec: {exc}")
        await self.kube.patch_status(ref, lifecycle.failed_patch(run, error, _now()))
        action = str((body_spec or {}).get("action") or "Unknown")
        metrics.count_finished(action, Phase.FAILED, str(error.reason))

    async def _run(
        self,
        ref: ObjectRef,
        spec: ImageOperationSpec,
        generation: int,
        resume: ImageOperationStatus | None,
    ) -> None:
        """The whole life of one generation of an operation, attempts and retries."""
        run = self._run_state(generation, resume)
        action = str(spec.action)
        metrics.IN_FLIGHT.labels(action).inc()
        # The first status write runs while the work starts (after a short grace); every
        # later status write comes after it, so the API server sees Running before the result.
        start = self._begin(ref, spec, run, resumed=resume is not None)
        try:
            if resume and resume.next_retry_time:
                await _sleep_until(resume.next_retry_time)
            effective = await self._effective(ref, spec, run, start)
            auth = await self._prepare(ref, effective)
            result = await self._attempts(ref, effective, run, auth, start)
        except OperationError as error:
            await self._fail(ref, spec, run, error, start)
        else:
            await self._succeed(ref, spec, run, result, start)
        finally:
            if start.task is not None and not start.sent:
                start.task.cancel()
            metrics.IN_FLIGHT.labels(action).dec()

    def _run_state(self, generation: int, resume: ImageOperationStatus | None) -> RunState:
        if resume and resume.job_id:
            # A run that was still queued (Pending) has no startTime yet.
            return RunState(
                generation,
                self.config.node_name,
                resume.job_id,
                resume.start_time or _now(),
                list(resume.conditions),
                resume.attempts,
                started=resume.start_time is not None,
            )
        conditions = list(resume.conditions) if resume else []
        return RunState(
            generation, self.config.node_name, uuid.uuid4().hex[:12], _now(), conditions
        )

    def _begin(
        self, ref: ObjectRef, spec: ImageOperationSpec, run: RunState, resumed: bool
    ) -> _Start:
        """Schedule the first status of this run and the Started event."""
        extra: dict[str, Any] = {} if resumed else lifecycle.clear_result_fields()
        # A bad reference is reported as InvalidReference by _prepare, not here.
        with contextlib.suppress(OperationError):
            if spec.action == Action.PULL:
                extra["pullPolicy"] = str(effective_pull_policy(spec))
        verb = "Resumed" if resumed else "Started"
        message = f"{verb} {spec.action} of {spec.image} on {run.node} (job {run.job_id})"
        queued = (
            f"queued: all {self.executor.limit} slots (--max-concurrent) on node "
            f"{run.node} are busy"
        )

        def patch(clear: bool = True) -> dict[str, Any]:
            fields = extra if clear else {k: v for k, v in extra.items() if v is not None}
            if start.running:
                return lifecycle.started_patch(run, Phase.RUNNING, message, _now(), **fields)
            if start.queued:
                return lifecycle.started_patch(
                    run, Phase.PENDING, queued, _now(), reason="Queued", **fields
                )
            return lifecycle.started_patch(
                run,
                Phase.PENDING,
                f"{verb}: resolving session and credentials",
                _now(),
                **fields,
            )

        start = _Start(patch, (verb, message))
        start.task = asyncio.create_task(self._send_start(ref, start, self.config.start_grace))
        return start

    async def _send_start(self, ref: ObjectRef, start: _Start, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        # From here on the write is under way: it is awaited, never cancelled.
        start.sent = True
        await self.kube.patch_status(ref, start.patch(True))
        self._post_started(ref, start)

    def _post_started(self, ref: ObjectRef, start: _Start) -> None:
        """The Started/Resumed Event, once, when the run really holds a slot."""
        if start.running and not start.event_posted:
            start.event_posted = True
            self._spawn(self.kube.post_event(ref, "Normal", *start.event))

    def _slot_taken(self, ref: ObjectRef, run: RunState, start: _Start) -> None:
        """An attempt got a --max-concurrent slot: from now on the run is Running.

        Called in the event loop when the executor (or the pull this one
        shares) starts the Docker work; a Pending status already written is
        followed by a Running one, chained after it so the writes stay in order.
        """
        if start.running:
            return
        start.running = True
        if not run.started:
            run.start_time, run.started = _now(), True
        if start.sent:
            assert start.task is not None
            start.task = asyncio.create_task(self._send_running(ref, start, start.task))

    async def _send_running(
        self, ref: ObjectRef, start: _Start, previous: asyncio.Task[None]
    ) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(previous)
        await self.kube.patch_status(ref, start.patch(False))
        self._post_started(ref, start)

    async def _started(self, ref: ObjectRef, start: _Start) -> None:
        """Write the first status now if it is still held back; wait until it is written."""
        if not start.sent:
            assert start.task is not None
            start.task.cancel()
            start.task = asyncio.create_task(self._send_start(ref, start, 0))
        assert start.task is not None
        # Shielded: a caller being cancelled must not cancel the write it waits for.
        await asyncio.shield(start.task)

    async def _final(
        self, ref: ObjectRef, start: _Start, make: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """The final status patch; merged with the first one when that was never written."""
        if start.sent:
            assert start.task is not None
            await asyncio.shield(start.task)
            return make()
        assert start.task is not None
        start.task.cancel()
        first = start.patch(True)  # before make(): both build on run.conditions in this order
        if not start.event_posted:
            start.event_posted = True
            self._spawn(self.kube.post_event(ref, "Normal", *start.event))
        return {**first, **make()}

    async def _effective(
        self, ref: ObjectRef, spec: ImageOperationSpec, run: RunState, start: _Start
    ) -> EffectiveSpec:
        """The spec with its session's defaults (read at the start of every run)."""
        session = None
        if spec.session_ref is not None:
            session = await self._session(ref, spec.session_ref.name, run, start)
        return effective_spec(spec, session, self.config.allowed_registries)

    async def _session(
        self, ref: ObjectRef, name: str, run: RunState, start: _Start
    ) -> ImageSessionSpec:
        """The named session; the run waits (Pending, SessionNotFound) while it is missing."""

        async def waiting(message: str) -> None:
            await self._started(ref, start)
            reason = str(ErrorReason.SESSION_NOT_FOUND)
            patch = lifecycle.phase_patch(run, Phase.PENDING, reason, message, _now())
            await self.kube.patch_status(ref, patch)
            self._spawn(self.kube.post_event(ref, "Warning", reason, message))

        async def found() -> None:
            message = f"ImageSession {name} found; running"
            patch = lifecycle.phase_patch(run, Phase.RUNNING, "Running", message, _now())
            await self.kube.patch_status(ref, patch)

        config = self.config
        return await wait_for_session(
            self.kube,
            ref,
            name,
            run.start_time,
            config.session_wait_seconds,
            config.session_poll_interval,
            waiting,
            found,
        )

    async def _prepare(self, ref: ObjectRef, effective: EffectiveSpec) -> RegistryAuth | None:
        """Check references and the allowed registries, and resolve credentials."""
        spec = effective.spec
        for name in [spec.image] + ([spec.target] if spec.target else []):
            if is_image_id(name):
                continue  # a local image: no registry to allow or refuse
            parsed = parse_reference(name)
            for allowed in effective.allowed_registries:
                if not registry_allowed(parsed, allowed):
                    raise OperationError(
                        ErrorReason.FORBIDDEN,
                        f"registry {parsed.registry} is not allowed "
                        f"(allowed: {', '.join(allowed)})",
                    )
        registry = credential_registry(spec)
        if spec.credentials is None or registry is None:
            return None
        secret_name = spec.credentials.secret_ref.name
        secret = await self.kube.get_secret(ref.namespace, secret_name)
        if secret is None:
            raise OperationError(
                ErrorReason.CREDENTIALS_NOT_FOUND,
                f"Secret {secret_name} not found in namespace {ref.namespace}",
            )
        try:
            return auth_from_secret_data(secret[0], secret[1], registry, secret_name)
        except OperationError:
            if effective.credentials_inherited:
                return None  # the session's Secret does not cover this registry: anonymous
            raise

    async def _attempts(
        self,
        ref: ObjectRef,
        effective: EffectiveSpec,
        run: RunState,
        auth: RegistryAuth | None,
        start: _Start,
    ) -> OperationResult:
        """Attempts until success, a permanent error or the backoff limit."""
        spec = effective.spec
        metrics.touch_registry(_registry_label(spec))
        while True:
            run.attempts += 1
            if run.attempts > 1:
                await self._started(ref, start)
                await self.kube.patch_status(ref, {"attempts": run.attempts, "phase": "Running"})
            elif self.executor.busy() and not start.running:
                # Every slot is taken: say so now (Pending, Queued), not after the grace.
                start.queued = True
                await self._started(ref, start)
            try:
                return await self._attempt(ref, spec, effective.timeout_seconds, auth, run, start)
            except OperationError as error:
                metrics.REGISTRY_ERRORS.labels(_registry_label(spec), str(error.reason)).inc()
                if not should_retry(error.retryable, run.attempts, effective.backoff_limit):
                    raise
                await self._started(ref, start)
                await self._wait_retry(ref, spec, run, error)

    async def _wait_retry(
        self, ref: ObjectRef, spec: ImageOperationSpec, run: RunState, error: OperationError
    ) -> None:
        delay = backoff_delay(
            run.attempts, base=self.config.backoff_base, cap=self.config.backoff_cap
        )
        now = _now()
        patch = lifecycle.retrying_patch(run, error, delay, now, now + timedelta(seconds=delay))
        await self.kube.patch_status(ref, patch)
        message = (
            f"attempt {run.attempts} failed: {error.reason}: {error.message}; retry in {delay:.0f}s"
        )
        await self.kube.post_event(ref, "Warning", "Retrying", message)
        metrics.RETRIES.labels(str(spec.action), str(error.reason)).inc()
        await asyncio.sleep(delay)

    async def _attempt(
        self,
        ref: ObjectRef,
        spec: ImageOperationSpec,
        timeout: float,
        auth: RegistryAuth | None,
        run: RunState,
        start: _Start,
    ) -> OperationResult:
        """One attempt, sharing identical concurrent pulls, publishing live progress."""
        buffer = ProgressBuffer()
        publisher = asyncio.create_task(self._publish_progress(ref, buffer, start))
        on_slot = functools.partial(self._slot_taken, ref, run, start)
        try:
            if spec.action != Action.PULL:
                result = await self.executor.run(
                    spec, auth, timeout, CancelToken(), buffer.update, on_slot
                )
                return _with_progress(result, buffer)
            key = (
                spec.image,
                spec.platform,
                str(effective_pull_policy(spec)),
                spec.expected_digest,
                spec.dry_run,
                auth,
            )

            async def work(token: CancelToken, progress: Any) -> OperationResult:
                return await self.executor.run(
                    spec, auth, timeout, token, progress, functools.partial(self.flights.start, key)
                )

            result, shared = await self.flights.run(key, work, buffer.update, on_slot)
            if shared:
                metrics.SHARED_PULLS.inc()
            return _with_progress(result, buffer)
        finally:
            publisher.cancel()

    async def _publish_progress(
        self, ref: ObjectRef, buffer: ProgressBuffer, start: _Start
    ) -> None:
        """Write status.progress at most every progress_interval seconds while it changes."""
        seen = 0
        while True:
            await asyncio.sleep(self.config.progress_interval)
            progress, seen = buffer.take(seen)
            if progress is not None:
                await self._started(ref, start)
                await self.kube.patch_status(ref, {"progress": progress_wire(progress)})

    async def _succeed(
        self,
        ref: ObjectRef,
        spec: ImageOperationSpec,
        run: RunState,
        result: OperationResult,
        start: _Start,
    ) -> None:
        patch = await self._final(
            ref, start, lambda: lifecycle.succeeded_patch(run, result, _now())
        )
        what = result.dry_run_result or f"{spec.action} {spec.target or spec.image}"
        message = f"{what}: digest {result.digest or '-'} (attempt {run.attempts})"
        await self._finish(ref, spec, patch, ("Normal", "Succeeded", message))
        if result.cache_hit:
            metrics.CACHE_HITS.inc()
        if result.bytes_transferred:
            metrics.BYTES.labels(str(spec.action)).inc(result.bytes_transferred)

    async def _fail(
        self,
        ref: ObjectRef,
        spec: ImageOperationSpec,
        run: RunState,
        error: OperationError,
        start: _Start,
    ) -> None:
        run.attempts = max(run.attempts, 1)
        patch = await self._final(ref, start, lambda: lifecycle.failed_patch(run, error, _now()))
        message = f"{error.reason}: {error.message} (after {run.attempts} attempt(s))"
        await self._finish(ref, spec, patch, ("Warning", "Failed", message))

    async def _finish(
        self,
        ref: ObjectRef,
        spec: ImageOperationSpec,
        patch: dict[str, Any],
        event: tuple[str, str, str],
    ) -> None:
        """Write the final status, its Event and the operation metrics."""
        await self.kube.patch_status(ref, patch)
        self._spawn(self.kube.post_event(ref, *event))
        action = str(spec.action)
        reason = (patch.get("lastError") or {}).get("reason")
        metrics.count_finished(action, patch["phase"], reason)
        metrics.DURATION.labels(action).observe(patch["durationSeconds"])


def _registry_label(spec: ImageOperationSpec) -> str:
    """The registry an attempt talked to, for the registry-errors metric."""
    try:
        return credential_registry(spec) or "none"
    except OperationError:
        return "invalid"


def _with_progress(result: OperationResult, buffer: ProgressBuffer) -> OperationResult:
    """The result with the attempt's last progress, for the final status."""
    latest, _ = buffer.take(-1)
    return dataclasses.replace(result, progress=latest) if latest is not None else result


async def _sleep_until(when: datetime) -> None:
    """Honour a retry time recorded before a restart."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delay = (when - datetime.now(UTC)).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)
