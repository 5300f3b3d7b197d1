"""The ImageSession controller: statistics, phase, expiry and clean-up of sessions.

Every finished generation of an operation is counted once. The tracker keeps
one record per operation of a session (:mod:`imageops.workers.session_members`)
in one of these states:

=====================  ==========================================  ===============
from                   event                                       to
=====================  ==========================================  ===============
(none)                 operation seen, not finished                ACTIVE
(none), ACTIVE         generation g finished, annotated g          COUNTED
(none), ACTIVE         generation g finished, not annotated        QUEUED
INHERITED (of g)       generation g finished, not annotated        STORED
INHERITED (of g)       generation g finished, annotated g          COUNTED
INHERITED (of g)       seen at a newer generation, not finished    ACTIVE
INHERITED              not seen ``INHERIT_GRACE`` after loading    (dropped)
QUEUED                 a flush folds it into the status            FOLDED
FOLDED                 that status write succeeds                  STORED
STORED                 annotation ``recorded-generation: g``       COUNTED
any                    a newer generation g' finishes              QUEUED (of g')
QUEUED/FOLDED/STORED   operation deleted                           same, ``gone``
other                  operation deleted                           (dropped)
STORED, ``gone``       (nothing to annotate)                       (dropped)
=====================  ==========================================  ===============

INHERITED records come from the stored ``status.recorded`` when a tracker
loads a session (after a restart); ``status.recorded`` always lists the
INHERITED, FOLDED and STORED records. So a count is stored before its
operation is annotated, and until the annotation is confirmed the status
lists the operation: a controller restarted in between counts it neither
twice nor not at all. History stays in the status when operations go.

Scheduling is one :class:`WorkQueue` keyed by session: an event adds the key,
and a pass flushes (at most every ``FLUSH_INTERVAL``), expires (requeue-after
at ``status.expiresAt``) and cleans up. Annotations are a second queue, so
they never hold counting up. No finalizers: a deleted session is archived
(preserveLogs) from the DELETED watch event's body and its operations and
workflows are deleted then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from imageops.models.imagesession import MAX_RECORDED, ImageSession, SessionPhase
from imageops.services import session_stats as stats
from imageops.workers.context import ControllerContext
from imageops.workers.opindex import session_of
from imageops.workers.queue import WorkQueue
from imageops.workers.session_members import RECORDED, UNSETTLED, MemberState
from imageops.workers.session_upkeep import Key, SessionState, Upkeep

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0  # seconds between two status writes of one session
BATCH = 100  # operations folded per write, which bounds status.recorded
# A key inherited from a stored status.recorded whose operation has not shown up
# this long after start-up belongs to an operation deleted meanwhile: forget it.
INHERIT_GRACE = 60.0


class SessionTracker:
    """Keeps every ImageSession's status; expires and cleans up sessions."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.kube = ctx.kube
        self.sessions: dict[Key, SessionState] = {}
        self.queue: WorkQueue[Key] = WorkQueue("sessions", self.reconcile, workers=ctx.workers)
        self.marks: WorkQueue[Key] = WorkQueue("session-marks", self.annotate, workers=2)
        self.upkeep = Upkeep(ctx)

    async def observe(self, event_type: str | None, session: ImageSession) -> None:
        """Handle one watch event of an ImageSession (validated by the handler)."""
        if event_type == "DELETED":
            await self._on_deleted(session)
            return
        key = session.metadata.key
        state = self.sessions.get(key)
        if state is None or state.uid != session.metadata.uid:
            if state is not None:  # replaced under the same name without a DELETED seen
                state.deleted = True
            state = self._load(session)
            self.sessions[key] = state
        else:
            state.spec = session.spec
            state.dirty |= session.metadata.generation != state.generation
            state.generation = session.metadata.generation
        self.queue.add(key)

    async def on_operation(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Handle one ImageOperation event (subscribed to the OperationIndex)."""
        name = session_of(body)
        key = (str(body["metadata"]["namespace"]), name or "")
        state = self.sessions.get(key) if name else None
        if state is None:
            return  # a session seen later catches up from the index
        state.members.observe(event_type, body)
        state.dirty = True
        self.queue.add(key)

    async def run(self) -> None:
        """Serve both queues until cancelled."""
        await asyncio.gather(self.queue.run(), self.marks.run())

    def _load(self, session: ImageSession) -> SessionState:
        """State of a session seen for the first time (or after a restart)."""
        state = SessionState.load(session, self.ctx.clock.monotonic())
        if state.members.count([MemberState.INHERITED]):
            log.info(
                "session %s/%s: %d counted operation(s) may still lack their annotation",
                *state.key,
                state.members.count([MemberState.INHERITED]),
            )
        for op in self.ctx.index.by_session(*state.key):
            state.members.observe(None, op)
        return state

    async def reconcile(self, key: Key) -> float | None:
        """One pass over a session: flush when due, expire, clean up; the next pass's delay."""
        state = self.sessions.get(key)
        if state is None or state.deleted:
            return None
        before = self.ctx.clock.monotonic() - INHERIT_GRACE
        if state.members.forget_inherited(before, lambda uid: self.ctx.index.get(uid) is not None):
            state.dirty = True
        wait = await self._flush_when_due(state)
        grace = self._until_inherit_grace(state)
        if state.status.phase == SessionPhase.EXPIRED:
            return _soonest(wait, grace, await self.upkeep.cleanup(state))
        if wait is not None:  # nothing expires before everything is counted
            return _soonest(wait, grace)
        if stats.expiry_due(state.status, self.ctx.clock.now()):
            return await self._expire(state)
        return _soonest(self._until_expiry(state), grace)

    async def _flush_when_due(self, state: SessionState) -> float | None:
        """Flush now if due; else seconds until it may (None: nothing to flush)."""
        if not state.dirty and not state.members.count([MemberState.QUEUED]):
            return None
        left = state.last_flush + FLUSH_INTERVAL - self.ctx.clock.monotonic()
        if left > 0:
            return left
        await self.flush(state)
        queued = state.dirty or state.members.count([MemberState.QUEUED])
        return FLUSH_INTERVAL if queued else None

    async def flush(self, state: SessionState) -> None:
        """Fold queued operations in, write the status, then annotate the operations."""
        async with state.lock:
            if state.deleted:
                return
            state.dirty = False
            state.last_flush = self.ctx.clock.monotonic()
            room = MAX_RECORDED - state.members.count(RECORDED)
            for item in state.members.fold(min(BATCH, room)):
                stats.fold(state.status, item, state.spec.history_limit)
            self.upkeep.refresh(state)
            if not await self.upkeep.write(state):
                return
            # Every count folded so far is stored now: its operation may be annotated.
            state.members.stored()
        if state.members.count([MemberState.STORED]):
            self.marks.add(state.key)

    async def annotate(self, key: Key) -> float | None:
        """Annotate the operations whose counts are stored (the marks queue's reconcile)."""
        state = self.sessions.get(key)
        if state is None or state.deleted:
            return None
        done = await self.upkeep.annotate(state)
        state.dirty = True  # status.recorded shrinks with the next write
        self.queue.add(key)
        return None if done else FLUSH_INTERVAL  # a failed annotation is tried again

    async def _expire(self, state: SessionState) -> float | None:
        """Archive (preserveLogs), turn Expired, then delete the operations and workflows."""
        async with state.lock:
            self.upkeep.refresh(state)
            if state.deleted or state.members.count(UNSETTLED):
                return FLUSH_INTERVAL  # count everything first, then expire
            now = self.ctx.clock.now()
            if not stats.expiry_due(state.status, now):
                return self._until_expiry(state)
            if await self.upkeep.workflows_busy(state):
                return self.ctx.sweep_interval  # between steps a workflow has no operation
            if not await self.upkeep.mark_expired(state, now):
                return None
        return await self.upkeep.cleanup(state)

    def _until_expiry(self, state: SessionState) -> float | None:
        expires = state.status.expires_at
        if expires is None or state.status.phase == SessionPhase.EXPIRED:
            return None
        return max((expires - self.ctx.clock.now()).total_seconds(), 0.0)

    def _until_inherit_grace(self, state: SessionState) -> float | None:
        now = self.ctx.clock.monotonic()
        ends = [m.since + INHERIT_GRACE for m in state.members.in_state(MemberState.INHERITED)]
        future = [end - now for end in ends if end > now]
        return min(future) + 0.1 if future else None

    async def _on_deleted(self, session: ImageSession) -> None:
        """A session was deleted: archive from its last body, then clean up."""
        key = session.metadata.key
        state = self.sessions.get(key)
        if state is None or state.uid != session.metadata.uid:
            state = self._load(session)
        else:
            del self.sessions[key]
            self.queue.forget(key)
            self.marks.forget(key)
        state.spec = session.spec
        async with state.lock:
            state.deleted = True
            for item in state.members.fold(len(state.members.in_state(MemberState.QUEUED))):
                stats.fold(state.status, item, state.spec.history_limit)
            if state.spec.preserve_logs and not state.status.archived_to:
                self.upkeep.refresh(state)
                name = await self.upkeep.archive(state, state.status, "Deleted")
                log.info("session %s/%s deleted; history archived to %s", *key, name)
        await self.upkeep.cleanup(state)


def _soonest(*delays: float | None) -> float | None:
    known = [d for d in delays if d is not None]
    return min(known) if known else None
