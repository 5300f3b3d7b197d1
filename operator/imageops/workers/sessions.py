"""The ImageSession controller: statistics, phase, expiry and clean-up of sessions.

Every finished generation of an operation is counted once. It is folded into
an in-memory copy of its session's status, which is written at most every
``FLUSH_INTERVAL`` seconds per session; only after that write does the
operation get the annotation ``imageops.dev/recorded-generation``. Until the
annotation is confirmed, status.recorded lists the operation, so a controller
restarted in between counts it neither twice nor not at all. History stays in
the session's status when operations are deleted later.

No finalizers: a deleted session is archived (preserveLogs) from the DELETED
watch event's body and its operations and workflows are deleted then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imageops.adapters.kube import ObjectRef
from imageops.models.imageoperation import PLURAL as OP_PLURAL
from imageops.models.imagesession import (
    MAX_RECORDED,
    PLURAL,
    ImageSessionSpec,
    ImageSessionStatus,
    SessionPhase,
)
from imageops.models.labels import SESSION_LABEL
from imageops.models.workflow import PLURAL as WORKFLOW_PLURAL
from imageops.services import session_stats as stats
from imageops.services.session_stats import Finished
from imageops.workers.context import ControllerContext
from imageops.workers.opindex import session_of, workflow_of

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0  # seconds between two status writes of one session
BATCH = 100  # operations folded per write, which bounds status.recorded
MARK_CONCURRENCY = 4  # annotation patches (and deletions) in flight
# A key inherited from a stored status.recorded whose operation has not shown up
# this long after start-up belongs to an operation deleted meanwhile: forget it.
INHERIT_GRACE = 60.0
# Workflows in these phases hold their session's expiry off, even between steps.
BUSY_WORKFLOW = frozenset({"Pending", "Running"})

Body = Mapping[str, Any]
Key = tuple[str, str]


@dataclass
class _Mark:
    """A counted operation whose recorded-generation annotation is still to be written."""

    ref: ObjectRef
    generation: int
    gone: bool = False  # deleted: nothing to annotate


@dataclass
class _Session:
    """What the controller keeps of one ImageSession."""

    ref: ObjectRef
    spec: ImageSessionSpec
    status: ImageSessionStatus
    generation: int
    created: datetime | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queue: dict[str, tuple[Finished, _Mark]] = field(default_factory=dict)
    counted: dict[str, int] = field(default_factory=dict)  # uid -> generation counted
    unmarked: dict[str, _Mark] = field(default_factory=dict)
    inherited: dict[str, float] = field(default_factory=dict)  # key -> when loaded
    dirty: bool = True
    deleted: bool = False
    persisted: set[str] = field(default_factory=set)  # unmarked keys the status stores
    last_flush: float = 0.0
    flush_task: asyncio.Task[None] | None = None
    mark_task: asyncio.Task[None] | None = None
    written: dict[str, Any] | None = None
    deleting: set[str] = field(default_factory=set)
    workflows_cleaned: bool = False

    @property
    def key(self) -> Key:
        return self.ref.namespace, self.ref.name


def _now() -> datetime:
    return datetime.now(UTC)


def _stop(state: _Session) -> None:
    """Retire a session's state: no more flushes or annotations."""
    state.deleted = True
    for task in (state.flush_task, state.mark_task):
        if task is not None and task is not asyncio.current_task():
            task.cancel()


class SessionTracker:
    """Keeps every ImageSession's status; expires and cleans up sessions."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.kube = ctx.kube
        self.sessions: dict[Key, _Session] = {}
        self._marks = asyncio.Semaphore(MARK_CONCURRENCY)
        self._deletes = asyncio.Semaphore(MARK_CONCURRENCY)

    async def observe(self, event_type: str | None, body: Body) -> None:
        """Handle one watch event of an ImageSession."""
        if event_type == "DELETED":
            await self._on_deleted(body)
            return
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        state = self.sessions.get(key)
        if state is None or state.ref.uid != meta["uid"]:
            if state is not None:  # replaced under the same name without a DELETED seen
                _stop(state)
            state = self._load(body)
            self.sessions[key] = state
            for op in self.ctx.index.by_session(*key):
                self._consider(state, None, op)
        else:
            state.spec = stats.load_spec(body.get("spec"))
            state.dirty |= stats.generation_of(body) != state.generation
            state.generation = stats.generation_of(body)
        self._schedule(state)

    async def on_operation(self, event_type: str | None, body: Body) -> None:
        """Handle one ImageOperation event (subscribed to the OperationIndex)."""
        name = session_of(body)
        state = self.sessions.get((body["metadata"]["namespace"], name)) if name else None
        if state is None:
            return  # a session seen later catches up from the index
        self._consider(state, event_type, body)
        self._schedule(state)

    def _load(self, body: Body) -> _Session:
        """State of a session seen for the first time (or after a restart)."""
        status = stats.load_status(body.get("status"))
        state = _Session(
            ref=ObjectRef.from_body(body, PLURAL),
            spec=stats.load_spec(body.get("spec")),
            status=status,
            generation=stats.generation_of(body),
            created=stats.parse_time(body["metadata"].get("creationTimestamp")),
        )
        loaded = time.monotonic()
        state.inherited = dict.fromkeys(status.recorded or [], loaded)
        if state.inherited:
            log.info(
                "session %s/%s: %d counted operation(s) may still lack their annotation",
                *state.key,
                len(state.inherited),
            )
        return state

    def _consider(self, state: _Session, event_type: str | None, body: Body) -> None:
        """Queue a finished, not yet counted operation generation (no awaits: no races)."""
        state.dirty = True
        deleted = event_type == "DELETED"
        item = stats.finished_from_body(body, workflow_of(body))
        if item is not None and state.counted.get(item.uid) != item.generation:
            state.counted[item.uid] = item.generation
            mark = _Mark(ObjectRef.from_body(body, OP_PLURAL), item.generation, gone=deleted)
            if stats.recorded_generation(body) == item.generation:
                state.inherited.pop(item.key, None)
            elif state.inherited.pop(item.key, None) is not None:
                state.unmarked[item.key] = mark  # counted before a restart: annotate only
            else:
                state.queue[item.key] = (item, mark)
        if deleted:
            uid = body["metadata"]["uid"]
            state.counted.pop(uid, None)
            state.deleting.discard(uid)
            key = f"{uid}/{stats.generation_of(body)}"
            state.inherited.pop(key, None)
            queued = state.queue.get(key)
            for pending in (state.unmarked.get(key), queued[1] if queued else None):
                if pending is not None:
                    pending.gone = True

    def _schedule(self, state: _Session) -> None:
        """Flush soon (at most every FLUSH_INTERVAL), unless a flush is already due."""
        if state.deleted or (state.flush_task is not None and not state.flush_task.done()):
            return
        state.flush_task = asyncio.create_task(
            self._flush_later(state), name=f"imgsess/{state.ref.namespace}/{state.ref.name}"
        )

    async def _flush_later(self, state: _Session) -> None:
        delay = state.last_flush + FLUSH_INTERVAL - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await self._flush(state)
        except Exception:
            # The sweeper tries again; rescheduling here would spin on a persistent error.
            log.exception("could not write the status of session %s/%s", *state.key)
            state.dirty = True
            state.flush_task = None
            return
        state.flush_task = None
        if state.dirty or state.queue:
            self._schedule(state)

    async def _flush(self, state: _Session) -> None:
        """Fold queued operations in, write the status, then annotate the operations."""
        async with state.lock:
            if state.deleted:
                return
            state.dirty = False
            state.last_flush = time.monotonic()
            room = MAX_RECORDED - len(state.unmarked) - len(state.inherited)
            for key in list(state.queue)[: max(min(BATCH, room), 0)]:
                item, mark = state.queue.pop(key)
                stats.fold(state.status, item, state.spec.history_limit)
                state.unmarked[key] = mark
            self._refresh(state)
            if not await self._write(state):
                return
            # Every count folded so far is stored now: its operation may be annotated.
            state.persisted.update(state.unmarked)
        if state.persisted and (state.mark_task is None or state.mark_task.done()):
            state.mark_task = asyncio.create_task(self._write_marks(state))

    def _refresh(self, state: _Session) -> None:
        """Recompute jobs, phase and expiry from the session's live operations."""
        active = [op for op in self.ctx.index.by_session(*state.key) if stats.is_active(op)]
        latest = max((t for t in map(stats.activity_time, active) if t), default=None)
        stats.refresh(
            state.status,
            state.spec,
            generation=state.generation,
            active=len(active),
            uncounted=len(state.queue),
            latest_activity=latest,
            created=state.created,
            now=_now(),
        )
        state.status.recorded = [*state.inherited, *state.unmarked][-MAX_RECORDED:] or None

    async def _write(self, state: _Session) -> bool:
        """Write the in-memory status if it changed; False when the session is gone."""
        patch = stats.status_patch(state.status)
        if patch == state.written:
            return True
        if not await self.kube.patch_status(state.ref, patch):
            return False
        state.written = patch
        return True

    async def _write_marks(self, state: _Session) -> None:
        """Annotate operations whose counts are stored, beside the flushes (not holding
        counting up); status.recorded covers the operations not annotated yet."""
        while not state.deleted:
            state.persisted.intersection_update(state.unmarked)
            marks = [(k, state.unmarked[k]) for k in state.persisted]
            if not marks:
                return
            done = await asyncio.gather(*(self._annotate(state, k, m) for k, m in marks))
            state.dirty = True  # status.recorded shrinks with the next write
            self._schedule(state)
            if not all(done):
                return  # the next flush tries again

    async def _annotate(self, state: _Session, key: str, mark: _Mark) -> bool:
        """Write one operation's recorded-generation annotation (nothing if it is gone)."""
        if not mark.gone:
            patch = {"metadata": {"annotations": {stats.RECORDED_ANNOTATION: str(mark.generation)}}}
            async with self._marks:
                try:
                    await self.kube.patch_object(mark.ref, patch)
                except Exception as exc:
                    log.warning("could not mark %s/%s: %s", mark.ref.namespace, mark.ref.name, exc)
                    return False
        state.unmarked.pop(key, None)
        state.persisted.discard(key)
        return True

    async def run_sweeper(self) -> None:
        """Every sweep_interval: expire idle sessions, clean up expired ones, retry writes."""
        while True:
            await asyncio.sleep(self.ctx.sweep_interval)
            for state in list(self.sessions.values()):
                try:
                    await self._sweep_one(state)
                except Exception:
                    log.exception("sweeping session %s/%s failed", *state.key)

    async def _sweep_one(self, state: _Session) -> None:
        if state.deleted:
            return
        loaded_before = time.monotonic() - INHERIT_GRACE
        for key, loaded in list(state.inherited.items()):
            if loaded < loaded_before and self.ctx.index.get(key.split("/")[0]) is None:
                del state.inherited[key]
                state.dirty = True
        if state.status.phase == SessionPhase.EXPIRED:
            await self._cleanup(state)
        elif stats.expiry_due(state.status, _now()):
            await self._expire(state)
        if state.dirty or state.queue or state.unmarked:
            self._schedule(state)

    async def _expire(self, state: _Session) -> None:
        """Archive (preserveLogs), turn Expired, then delete the operations and workflows."""
        async with state.lock:
            self._refresh(state)
            if state.deleted or state.queue or state.unmarked:
                return  # count everything first; the next sweep expires it
            if not stats.expiry_due(state.status, _now()) or await self._workflows_busy(state):
                return
            archived = stats.archive_name(state.ref.name) if state.spec.preserve_logs else None
            expired = state.status.model_copy(deep=True)
            stats.mark_expired(expired, state.generation, _now(), archived)
            if archived:  # before anything is deleted: a failure here leaves all as it was
                await self._archive(state, expired, "Expired")
            state.status = expired
            if not await self._write(state):
                return
        where = f"; history archived to ConfigMap {archived}" if archived else ""
        await self.kube.post_event(
            state.ref, "Normal", "Expired", f"idle for {state.spec.ttl_seconds_after_idle}s{where}"
        )
        log.info("session %s/%s expired%s", *state.key, where)
        await self._cleanup(state)

    async def _workflows_busy(self, state: _Session) -> bool:
        """Whether a workflow of the session still runs (between steps it has no operation)."""
        workflows = await self._workflows(state)
        return any((wf.get("status") or {}).get("phase") in BUSY_WORKFLOW for wf in workflows)

    async def _workflows(self, state: _Session) -> list[dict[str, Any]]:
        items = await self.kube.call(
            self.kube.sync.list_custom, state.ref.namespace, WORKFLOW_PLURAL
        )
        return [
            wf
            for wf in items
            if ((wf.get("spec") or {}).get("sessionRef") or {}).get("name") == state.ref.name
        ]

    async def _archive(self, state: _Session, status: ImageSessionStatus, reason: str) -> str:
        """Write ``status`` as the session's history to its ConfigMap; returns its name."""
        name = stats.archive_name(state.ref.name)
        doc = stats.build_archive(
            state.ref.namespace, state.ref.name, state.ref.uid, state.spec, status, reason, _now()
        )
        labels = {SESSION_LABEL: state.ref.name} if len(state.ref.name) <= 63 else {}
        await self.kube.call(
            self.kube.sync.apply_configmap,
            state.ref.namespace,
            name,
            {stats.ARCHIVE_KEY: json.dumps(doc, indent=1)},
            labels,
        )
        return name

    async def _cleanup(self, state: _Session) -> None:
        """Delete the session's operations (from the index) and, once, its workflows."""
        doomed: list[tuple[str, str, str | None]] = []
        for op in self.ctx.index.by_session(*state.key):
            meta = op["metadata"]
            if meta["uid"] not in state.deleting and not meta.get("deletionTimestamp"):
                state.deleting.add(meta["uid"])
                doomed.append((OP_PLURAL, str(meta["name"]), str(meta["uid"])))
        if not state.workflows_cleaned:
            doomed += [
                (WORKFLOW_PLURAL, wf["metadata"]["name"], None)
                for wf in await self._workflows(state)
            ]
            state.workflows_cleaned = True
        await asyncio.gather(*(self._delete(state, *item) for item in doomed))
        if doomed:
            log.info("session %s/%s: deleting %d object(s)", *state.key, len(doomed))

    async def _delete(self, state: _Session, plural: str, name: str, uid: str | None) -> None:
        async with self._deletes:
            try:
                await self.kube.call(
                    self.kube.sync.delete_custom, state.ref.namespace, plural, name
                )
            except Exception as exc:  # an expired session's next sweep tries again
                log.warning("could not delete %s %s/%s: %s", plural, state.ref.namespace, name, exc)
                if uid is None:
                    state.workflows_cleaned = False
                else:
                    state.deleting.discard(uid)

    async def _on_deleted(self, body: Body) -> None:
        """A session was deleted: archive from its last body, then clean up."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        state = self.sessions.get(key)
        if state is None or state.ref.uid != meta["uid"]:
            state = self._load(body)
            for op in self.ctx.index.by_session(*key):
                self._consider(state, None, op)
        else:
            del self.sessions[key]
        state.spec = stats.load_spec(body.get("spec"))
        async with state.lock:
            _stop(state)
            for item, _mark in state.queue.values():
                stats.fold(state.status, item, state.spec.history_limit)
            state.queue.clear()
            if state.spec.preserve_logs and not state.status.archived_to:
                self._refresh(state)
                name = await self._archive(state, state.status, "Deleted")
                log.info("session %s/%s deleted; history archived to %s", *key, name)
        await self._cleanup(state)
