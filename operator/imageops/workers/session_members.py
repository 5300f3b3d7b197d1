"""The members of one ImageSession: one record per operation, in a named state.

The transition table is in :mod:`imageops.workers.sessions`'s docstring.
Every method here is synchronous (no awaits), so a transition never
interleaves with another; the tracker does the API calls around them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from imageops.adapters.kube import ObjectRef
from imageops.models.imageoperation import PLURAL as OP_PLURAL
from imageops.services import session_stats as stats
from imageops.services.session_stats import Finished
from imageops.workers.opindex import workflow_of

_order = itertools.count()


class MemberState(StrEnum):
    """Where one operation of a session is in the exactly-once counting protocol."""

    ACTIVE = "Active"  # seen, nothing to count (not finished, or already counted)
    INHERITED = "Inherited"  # listed in a stored status.recorded; not seen since a restart
    QUEUED = "Queued"  # finished; to be folded into the status at the next flush
    FOLDED = "Folded"  # folded into the in-memory status, which is not stored yet
    STORED = "Stored"  # its count is stored (status.recorded lists it); to annotate
    COUNTED = "Counted"  # annotated imageops.dev/recorded-generation: done


# The states status.recorded lists: counted here, but not annotated on the operation.
RECORDED = frozenset({MemberState.INHERITED, MemberState.FOLDED, MemberState.STORED})
# The states whose count is not finished: a session does not expire while one is left.
UNSETTLED = frozenset({MemberState.QUEUED, MemberState.FOLDED, MemberState.STORED})


@dataclass
class Member:
    """One operation of the session and the generation this record is about."""

    uid: str
    generation: int
    state: MemberState
    ref: ObjectRef | None = None  # None while INHERITED: not seen yet
    item: Finished | None = None  # what to fold, while QUEUED
    gone: bool = False  # the operation was deleted: nothing to annotate
    since: float = 0.0  # monotonic time of INHERITED
    deleting: bool = False  # the session's clean-up asked for its deletion
    order: int = 0  # QUEUED members fold first come, first served

    @property
    def key(self) -> str:
        """``uid/generation``: what status.recorded lists."""
        return f"{self.uid}/{self.generation}"

    def to(self, state: MemberState) -> None:
        """Enter ``state`` (a transition of the table)."""
        self.state = state
        if state is MemberState.QUEUED:
            self.order = next(_order)
        else:
            self.item = None  # only a QUEUED record has something left to fold


class Members:
    """The records of one session, by operation uid."""

    def __init__(self) -> None:
        self._by_uid: dict[str, Member] = {}

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._by_uid.values()))

    def get(self, uid: str) -> Member | None:
        """The record of one operation."""
        return self._by_uid.get(uid)

    def in_state(self, *states: MemberState) -> list[Member]:
        """The records in any of ``states`` (QUEUED ones oldest first)."""
        found = [m for m in self._by_uid.values() if m.state in states]
        return sorted(found, key=lambda m: m.order)

    def count(self, states: Iterable[MemberState]) -> int:
        """How many records are in any of ``states``."""
        wanted = frozenset(states)
        return sum(1 for m in self._by_uid.values() if m.state in wanted)

    def recorded(self) -> list[str]:
        """status.recorded: the keys counted here and not annotated yet."""
        return [m.key for m in self._by_uid.values() if m.state in RECORDED]

    def inherit(self, keys: Iterable[str], now: float) -> None:
        """A stored status.recorded, loaded after a restart (or by a new tracker)."""
        for key in keys:
            uid, _, generation = key.rpartition("/")
            if uid and generation.isdigit():
                self._by_uid[uid] = Member(uid, int(generation), MemberState.INHERITED, since=now)

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """Apply one ImageOperation event; True when something is left to count."""
        deleted = event_type == "DELETED"
        uid = str(body["metadata"]["uid"])
        member = self._by_uid.get(uid)
        item = stats.finished_from_body(body, workflow_of(body))
        if item is not None:
            member = self._finished(member, item, body, deleted)
        elif not deleted and (member is None or _superseded(member, body)):
            ref = ObjectRef.from_body(body, OP_PLURAL)
            member = Member(uid, stats.generation_of(body), MemberState.ACTIVE, ref=ref)
            self._by_uid[uid] = member
        if deleted and member is not None:
            self._deleted(member)
        return any(m.state is MemberState.QUEUED for m in self._by_uid.values())

    def _finished(
        self, member: Member | None, item: Finished, body: Mapping[str, Any], deleted: bool
    ) -> Member:
        """A finished generation: count it unless it is counted (or being counted)."""
        same = member is not None and member.generation == item.generation
        waiting = (MemberState.ACTIVE, MemberState.INHERITED)
        if member is not None and same and member.state not in waiting:
            return member  # counted, or on its way: exactly once
        ref = ObjectRef.from_body(body, OP_PLURAL)
        inherited = same and member is not None and member.state is MemberState.INHERITED
        fresh = Member(item.uid, item.generation, MemberState.ACTIVE, ref=ref, gone=deleted)
        if member is not None:
            fresh.deleting = member.deleting
        self._by_uid[item.uid] = fresh
        if stats.recorded_generation(body) == item.generation:
            fresh.to(MemberState.COUNTED)  # annotated: counted before, nothing to do
        elif inherited:
            fresh.to(MemberState.STORED)  # counted before a restart: annotate only
        else:
            fresh.item = item
            fresh.to(MemberState.QUEUED)
        return fresh

    def _deleted(self, member: Member) -> None:
        if member.state in UNSETTLED:
            member.gone = True  # its count still goes through; no annotation
        else:
            self._by_uid.pop(member.uid, None)

    def fold(self, limit: int) -> list[Finished]:
        """QUEUED -> FOLDED for the oldest ``limit`` records; what to fold in."""
        taken = self.in_state(MemberState.QUEUED)[: max(limit, 0)]
        items = [m.item for m in taken if m.item is not None]
        for member in taken:
            member.to(MemberState.FOLDED)
        return items

    def stored(self) -> None:
        """FOLDED -> STORED: the status write that holds their counts succeeded."""
        for member in self.in_state(MemberState.FOLDED):
            member.to(MemberState.STORED)

    def annotated(self, member: Member, generation: int) -> None:
        """STORED -> COUNTED once the annotation of ``generation`` is written."""
        if member.state is not MemberState.STORED or member.generation != generation:
            return  # superseded meanwhile by a newer generation
        if member.gone:
            self._by_uid.pop(member.uid, None)
        else:
            member.to(MemberState.COUNTED)

    def forget_inherited(self, before: float, exists: Callable[[str], bool]) -> bool:
        """Drop INHERITED records loaded before ``before`` whose operation is gone."""
        stale = [
            m
            for m in self._by_uid.values()
            if m.state is MemberState.INHERITED and m.since < before and not exists(m.uid)
        ]
        for member in stale:
            del self._by_uid[member.uid]
        return bool(stale)


def _superseded(member: Member, body: Mapping[str, Any]) -> bool:
    """An INHERITED key of an operation now at a newer generation: nothing to annotate."""
    return member.state is MemberState.INHERITED and stats.generation_of(body) > member.generation
