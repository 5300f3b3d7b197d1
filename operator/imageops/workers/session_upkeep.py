"""What the session tracker keeps of one ImageSession, and the API calls it makes for it:
the status write, the annotations, the archive, expiry and the clean-up."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from imageops.adapters.kube import ObjectRef
from imageops.models.imageoperation import PLURAL as OP_PLURAL
from imageops.models.imagesession import (
    MAX_RECORDED,
    PLURAL,
    ImageSession,
    ImageSessionSpec,
    ImageSessionStatus,
)
from imageops.models.labels import SESSION_LABEL
from imageops.models.workflow import PLURAL as WORKFLOW_PLURAL
from imageops.models.workflow_object import WorkflowObject
from imageops.services import session_archive
from imageops.services import session_stats as stats
from imageops.workers.context import ControllerContext
from imageops.workers.session_members import Member, Members, MemberState

log = logging.getLogger(__name__)
Key = tuple[str, str]
MARK_CONCURRENCY = 4  # annotation patches (and deletions) in flight
# Workflows in these phases hold their session's expiry off, even between steps.
BUSY_WORKFLOW = frozenset({"Pending", "Running"})


@dataclass
class SessionState:
    """What the controller keeps of one ImageSession."""

    ref: ObjectRef
    spec: ImageSessionSpec
    status: ImageSessionStatus
    generation: int
    created: datetime | None
    members: Members = field(default_factory=Members)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # flush, expiry, deletion
    dirty: bool = True
    deleted: bool = False
    last_flush: float = float("-inf")
    written: dict[str, object] | None = None
    workflows_cleaned: bool = False

    @classmethod
    def load(cls, session: ImageSession, now: float) -> SessionState:
        """A session seen for the first time (or after a restart); ``now`` is monotonic."""
        meta = session.metadata
        state = cls(
            ref=ObjectRef(session.api_version, session.kind, PLURAL, *meta.key, meta.uid),
            spec=session.spec,
            status=session.status,
            generation=meta.generation,
            created=meta.creation_timestamp,
        )
        state.members.inherit(session.status.recorded or [], now)
        return state

    @property
    def key(self) -> Key:
        """(namespace, name)."""
        return self.ref.namespace, self.ref.name

    @property
    def uid(self) -> str:
        """metadata.uid of the session this state is of."""
        return self.ref.uid


class Upkeep:
    """The tracker's API side; every method takes the state it works on."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.kube = ctx.kube
        self._marks = asyncio.Semaphore(MARK_CONCURRENCY)
        self._deletes = asyncio.Semaphore(MARK_CONCURRENCY)

    def refresh(self, state: SessionState) -> None:
        """Recompute jobs, phase and expiry from the session's live operations."""
        active = [op for op in self.ctx.index.by_session(*state.key) if stats.is_active(op)]
        latest = max((t for t in map(stats.activity_time, active) if t), default=None)
        stats.refresh(
            state.status,
            state.spec,
            generation=state.generation,
            active=len(active),
            uncounted=state.members.count([MemberState.QUEUED]),
            latest_activity=latest,
            created=state.created,
            now=self.ctx.clock.now(),
        )
        state.status.recorded = state.members.recorded()[-MAX_RECORDED:] or None

    async def write(self, state: SessionState) -> bool:
        """Write the in-memory status if it changed; False when the session is gone."""
        patch = stats.status_patch(state.status)
        if patch == state.written:
            return True
        if not await self.kube.patch_status(state.ref, patch):
            return False
        state.written = patch
        return True

    async def annotate(self, state: SessionState) -> bool:
        """Annotate every STORED member; False when one failed (tried again later)."""
        stored = state.members.in_state(MemberState.STORED)
        done = await asyncio.gather(*(self._annotate(state, m) for m in stored))
        return all(done)

    async def _annotate(self, state: SessionState, member: Member) -> bool:
        generation = member.generation
        if not member.gone and member.ref is not None:
            value = str(generation)
            patch = {"metadata": {"annotations": {stats.RECORDED_ANNOTATION: value}}}
            async with self._marks:
                try:
                    await self.kube.patch_object(member.ref, patch)
                except Exception as exc:
                    ref = member.ref
                    log.warning("could not mark %s/%s: %s", ref.namespace, ref.name, exc)
                    return False
        state.members.annotated(member, generation)
        return True

    async def workflows_busy(self, state: SessionState) -> bool:
        """Whether a workflow of the session still runs (between steps it has no operation)."""
        return any(str(wf.status.phase) in BUSY_WORKFLOW for wf in await self._workflows(state))

    async def _workflows(self, state: SessionState) -> list[WorkflowObject]:
        items = await self.kube.call(
            self.kube.sync.list_custom, state.ref.namespace, WORKFLOW_PLURAL
        )
        found = map(WorkflowObject.from_body, items)
        return [
            wf
            for wf in found
            if wf.spec is not None
            and wf.spec.session_ref is not None
            and wf.spec.session_ref.name == state.ref.name
        ]

    async def mark_expired(self, state: SessionState, now: datetime) -> bool:
        """Archive (preserveLogs) before anything is deleted, then write Expired."""
        archived = (
            session_archive.archive_name(state.ref.name) if state.spec.preserve_logs else None
        )
        expired = state.status.model_copy(deep=True)
        stats.mark_expired(expired, state.generation, now, archived)
        if archived:  # a failure here leaves all as it was
            await self.archive(state, expired, "Expired")
        state.status = expired
        if not await self.write(state):
            return False
        where = f"; history archived to ConfigMap {archived}" if archived else ""
        await self.kube.post_event(
            state.ref, "Normal", "Expired", f"idle for {state.spec.ttl_seconds_after_idle}s{where}"
        )
        log.info("session %s/%s expired%s", *state.key, where)
        return True

    async def archive(self, state: SessionState, status: ImageSessionStatus, reason: str) -> str:
        """Write ``status`` as the session's history to its ConfigMap; returns its name."""
        name = session_archive.archive_name(state.ref.name)
        ref, now = state.ref, self.ctx.clock.now()
        doc = session_archive.build_archive(
            ref.namespace, ref.name, ref.uid, state.spec, status, reason, now
        )
        labels = {SESSION_LABEL: ref.name} if len(ref.name) <= 63 else {}
        await self.kube.call(
            self.kube.sync.apply_configmap,
            ref.namespace,
            name,
            {session_archive.ARCHIVE_KEY: json.dumps(doc, indent=1)},
            labels,
        )
        return name

    async def cleanup(self, state: SessionState) -> float | None:
        """Delete the session's operations (from the index) and, once, its workflows.

        Returns when to try again (a deletion failed), else None.
        """
        doomed: list[tuple[str, str, Member | None]] = []
        for op in self.ctx.index.by_session(*state.key):
            meta = op["metadata"]
            member = state.members.get(str(meta["uid"]))
            if (member is None or not member.deleting) and not meta.get("deletionTimestamp"):
                if member is not None:
                    member.deleting = True
                doomed.append((OP_PLURAL, str(meta["name"]), member))
        if not state.workflows_cleaned:
            doomed += [(WORKFLOW_PLURAL, wf.meta.name, None) for wf in await self._workflows(state)]
            state.workflows_cleaned = True
        done = await asyncio.gather(*(self._delete(state, *item) for item in doomed))
        if doomed:
            log.info("session %s/%s: deleting %d object(s)", *state.key, len(doomed))
        return None if all(done) else self.ctx.sweep_interval

    async def _delete(
        self, state: SessionState, plural: str, name: str, member: Member | None
    ) -> bool:
        async with self._deletes:
            try:
                await self.kube.call(
                    self.kube.sync.delete_custom, state.ref.namespace, plural, name
                )
            except Exception as exc:  # the next pass tries again
                log.warning("could not delete %s %s/%s: %s", plural, state.ref.namespace, name, exc)
                if plural == WORKFLOW_PLURAL:
                    state.workflows_cleaned = False
                elif member is not None:
                    member.deleting = False
                return False
        return True
