"""The agent: runs the ImageOperations addressed to its node.

kopf feeds every watch event in (already filtered by the API server to this
node, validated into models by the handler); the agent decides, per object,
whether to start, resume, restart or ignore it, and runs each operation as an
asyncio task: its attempts, retries and single-flight pulls. What a run writes
(status, Events, metrics) is its :class:`~imageops.workers.report.RunReport`.
No finalizer is used, so deleting an operation never waits for an agent; a
deletion cancels the task and its Docker call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imageops.adapters import metrics
from imageops.adapters.kube import AsyncKube, ObjectRef
from imageops.adapters.memory import release_free_memory
from imageops.models.common import Action, ErrorReason, Phase, PullPolicy
from imageops.models.imageoperation import (
    PLURAL,
    ImageOperationHead,
    ImageOperationSpec,
    ImageOperationStatus,
    InvalidSpec,
)
from imageops.models.imagesession import ImageSessionSpec
from imageops.services import lifecycle
from imageops.services.backend import CancelToken, RegistryAuth
from imageops.services.backoff import backoff_delay, should_retry
from imageops.services.credentials import auth_from_secret_data
from imageops.services.effective import EffectiveSpec, effective_spec
from imageops.services.errors import OperationError
from imageops.services.lifecycle import Decision, OperationResult, RunState, StatusPatch
from imageops.services.perform import credential_registry, effective_pull_policy
from imageops.services.reference import is_image_id, parse_reference, registry_allowed
from imageops.settings import DEFAULTS
from imageops.workers.executor import AttemptExecutor, ProgressBuffer
from imageops.workers.flights import Flights
from imageops.workers.pacer import Pacer
from imageops.workers.report import Outcomes, ReportContext, RunReport, now
from imageops.workers.session_wait import wait_for_session

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    """Settings of one agent (one node)."""

    node_name: str
    max_concurrent: int = DEFAULTS.max_concurrent
    allowed_registries: list[str] = field(default_factory=list)
    # Seconds between two intermediate status writes of the whole node (first status,
    # Queued to Running, progress): the node's write budget (see workers.pacer).
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
class _Running:
    generation: int
    task: asyncio.Task[None]


class Agent:
    """Runs this node's ImageOperations: observe, cancel, shut down."""

    def __init__(self, config: AgentConfig, executor: AttemptExecutor, kube: AsyncKube) -> None:
        self.config = config
        self.executor = executor
        self.kube = kube
        self.running: dict[str, _Running] = {}
        self.flights: Flights[OperationResult] = Flights()
        # The node's budget of intermediate status writes, shared by every run.
        self.pacer = Pacer(config.progress_interval)
        self.outcomes = Outcomes()
        self.reports = ReportContext(
            kube, self.pacer, self._spawn, config.start_grace, executor.limit
        )
        # Best-effort work (Events) kept off the operations' critical path.
        self._background: set[asyncio.Task[None]] = set()

    async def observe(
        self,
        event_type: str | None,
        head: ImageOperationHead,
        spec: ImageOperationSpec | InvalidSpec,
    ) -> None:
        """Handle one watch event of an ImageOperation addressed to this node."""
        meta = head.metadata
        if spec.node_name != self.config.node_name:
            # The API server should never send these; never run another node's work.
            metrics.FOREIGN_EVENTS.inc()
            return
        if event_type == "DELETED" or meta.deletion_timestamp is not None:
            self._cancel(meta.uid)
            self.outcomes.forget(meta.uid)
            return
        ref = ObjectRef.of(head, PLURAL)
        current = self.running.get(meta.uid)
        final = (
            None if current else self.outcomes.undone(meta.uid, meta.generation, head.status.phase)
        )
        if final is not None:
            log.warning("%s/%s: final status undone by a late write; rewritten", *ref.key)
            self._spawn(self._write_again(ref, final))
            return
        running = current.generation if current else None
        decision = lifecycle.decide(meta.generation, head.status, running)
        if decision is Decision.SKIP:
            return
        if decision is Decision.RESTART:
            self._cancel(meta.uid)
        if isinstance(spec, InvalidSpec):
            await self._reject(ref, meta.generation, head.status, spec)
            return
        resume = head.status if decision is Decision.RESUME else None
        task = asyncio.create_task(
            self._run(ref, spec, meta.generation, resume), name=f"imgop/{ref.name}"
        )
        self.running[meta.uid] = _Running(meta.generation, task)
        task.add_done_callback(functools.partial(self._done, meta.uid))

    def _done(self, uid: str, task: asyncio.Task[None]) -> None:
        current = self.running.get(uid)
        if current and current.task is task:
            del self.running[uid]
            if not self.running:
                # Idle again: hand the memory of the burst back (the agent idles most of the time).
                asyncio.get_running_loop().call_later(0.1, self._trim)
        if not task.cancelled() and task.exception():
            log.error("operation task failed", exc_info=task.exception())

    def _trim(self) -> None:
        if not self.running:
            release_free_memory()

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
        await self.pacer.close()
        self.executor.shutdown()

    async def _reject(
        self, ref: ObjectRef, generation: int, status: ImageOperationStatus, spec: InvalidSpec
    ) -> None:
        """A spec the API server accepted but the models do not: fail with the reason."""
        run = RunState(
            generation, self.config.node_name, uuid.uuid4().hex[:12], now(), status.conditions
        )
        error = OperationError(ErrorReason.INVALID_REFERENCE, f"invalid spec: {spec.error}")
        await self.kube.patch_status(ref, lifecycle.failed_patch(run, error, now()))
        metrics.STATUS_WRITES.labels("final").inc()
        metrics.count_finished(spec.action, Phase.FAILED, str(error.reason))

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
        report = RunReport(self.reports, ref, spec, run, resume is not None, _pull_policy(spec))
        try:
            if resume and resume.next_retry_time:
                await _sleep_until(resume.next_retry_time)
            effective = await self._effective(ref, spec, report)
            auth = await self._prepare(ref, effective)
            result = await self._attempts(effective, report, auth)
        except OperationError as error:
            await report.failed(error)
        else:
            await report.succeeded(spec, result)
        finally:
            report.close()
            if report.final is not None:
                self.outcomes.remember(ref.uid, generation, report.final)
            metrics.IN_FLIGHT.labels(action).dec()

    async def _write_again(self, ref: ObjectRef, final: StatusPatch) -> None:
        await self.kube.patch_status(ref, final)

    def _run_state(self, generation: int, resume: ImageOperationStatus | None) -> RunState:
        if resume and resume.job_id:
            # A run that was still queued (Pending) has no startTime yet.
            return RunState(
                generation,
                self.config.node_name,
                resume.job_id,
                resume.start_time or now(),
                list(resume.conditions),
                resume.attempts,
                started=resume.start_time is not None,
            )
        conditions = list(resume.conditions) if resume else []
        return RunState(generation, self.config.node_name, uuid.uuid4().hex[:12], now(), conditions)

    async def _effective(
        self, ref: ObjectRef, spec: ImageOperationSpec, report: RunReport
    ) -> EffectiveSpec:
        """The spec with its session's defaults (read at the start of every run)."""
        session = None
        if spec.session_ref is not None:
            session = await self._session(ref, spec.session_ref.name, report)
        return effective_spec(spec, session, self.config.allowed_registries)

    async def _session(self, ref: ObjectRef, name: str, report: RunReport) -> ImageSessionSpec:
        """The named session; the run waits (Pending, SessionNotFound) while it is missing."""
        run = report.run

        async def waiting(message: str) -> None:
            reason = str(ErrorReason.SESSION_NOT_FOUND)
            await report.write_now(
                lambda: lifecycle.phase_patch(run, Phase.PENDING, reason, message, now())
            )
            self._spawn(self.kube.post_event(ref, "Warning", reason, message))

        async def found() -> None:
            message = f"ImageSession {name} found; running"
            await report.write_now(
                lambda: lifecycle.phase_patch(run, Phase.RUNNING, "Running", message, now())
            )

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
        self, effective: EffectiveSpec, report: RunReport, auth: RegistryAuth | None
    ) -> OperationResult:
        """Attempts until success, a permanent error or the backoff limit."""
        spec, run = effective.spec, report.run
        metrics.touch_registry(_registry_label(spec))
        while True:
            run.attempts += 1
            if run.attempts > 1:
                await report.write_now(lambda: lifecycle.attempt_patch(run))
            elif self.executor.busy():
                report.queued()  # every slot is taken: say so now, not after the grace
            try:
                return await self._attempt(spec, effective.timeout_seconds, auth, report)
            except OperationError as error:
                metrics.REGISTRY_ERRORS.labels(_registry_label(spec), str(error.reason)).inc()
                if not should_retry(error.retryable, run.attempts, effective.backoff_limit):
                    raise
                config = self.config
                delay = backoff_delay(
                    run.attempts, base=config.backoff_base, cap=config.backoff_cap
                )
                await report.retrying(error, delay)
                await asyncio.sleep(delay)

    async def _attempt(
        self,
        spec: ImageOperationSpec,
        timeout: float,
        auth: RegistryAuth | None,
        report: RunReport,
    ) -> OperationResult:
        """One attempt, sharing identical concurrent pulls; its progress goes to the report."""
        buffer = ProgressBuffer(report.progress_changed)
        report.watch(buffer)
        on_slot = report.running
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


def _pull_policy(spec: ImageOperationSpec) -> PullPolicy | None:
    """The effective pull policy a Pull's status shows (a bad reference fails later)."""
    if spec.action != Action.PULL:
        return None
    with contextlib.suppress(OperationError):
        return effective_pull_policy(spec)
    return None


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
