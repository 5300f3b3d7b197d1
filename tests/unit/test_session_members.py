"""The session members' state machine: each finished generation counted exactly once."""

from __future__ import annotations

from typing import Any

from imageops.services.session_stats import RECORDED_ANNOTATION
from imageops.workers.session_members import Members, MemberState


def op(
    uid: str, generation: int = 1, phase: str | None = "Succeeded", mark: int | None = None
) -> dict[str, Any]:
    """An ImageOperation body of session s."""
    annotations = {RECORDED_ANNOTATION: str(mark)} if mark is not None else {}
    status = {"phase": phase, "observedGeneration": generation} if phase else {}
    return {
        "apiVersion": "imageops.dev/v1alpha1",
        "kind": "ImageOperation",
        "metadata": {
            "name": f"op-{uid}",
            "namespace": "ns",
            "uid": uid,
            "generation": generation,
            "annotations": annotations,
        },
        "spec": {"action": "Pull", "image": "r/i:1", "sessionRef": {"name": "s"}},
        "status": status,
    }


def test_a_finished_operation_goes_queued_folded_stored_counted_once() -> None:
    members = Members()
    members.observe(None, op("u", phase="Running"))
    assert members.get("u").state is MemberState.ACTIVE  # type: ignore[union-attr]
    assert members.observe(None, op("u"))
    members.observe(None, op("u"))  # the same generation again: nothing new
    assert len(members.fold(10)) == 1 and members.fold(10) == []
    assert members.recorded() == ["u/1"]
    members.stored()
    member = members.get("u")
    assert member is not None and member.state is MemberState.STORED
    members.annotated(member, 1)
    assert member.state is MemberState.COUNTED and members.recorded() == []
    assert not members.observe(None, op("u", mark=1))


def test_after_a_restart_inherited_keys_are_annotated_not_counted_again() -> None:
    members = Members()
    members.inherit(["u/1", "v/1", "junk"], now=0.0)
    members.observe(None, op("u"))  # counted before the restart, annotation missing
    members.observe(None, op("v", mark=1))  # annotated before the restart
    assert members.get("u").state is MemberState.STORED  # type: ignore[union-attr]
    assert members.get("v").state is MemberState.COUNTED  # type: ignore[union-attr]
    assert members.fold(10) == []


def test_a_newer_generation_is_counted_and_a_deleted_one_still_counts() -> None:
    members = Members()
    members.observe(None, op("u"))
    members.fold(10)
    members.stored()
    members.observe(None, op("u", generation=2))
    member = members.get("u")
    assert member is not None and member.state is MemberState.QUEUED
    members.annotated(member, 1)  # the old generation's annotation landed late: ignored
    assert member.state is MemberState.QUEUED
    members.observe("DELETED", op("u", generation=2))
    assert member.gone and len(members.fold(10)) == 1
    members.stored()
    members.annotated(member, 2)
    assert members.get("u") is None


def test_inherited_keys_of_vanished_operations_are_forgotten_after_the_grace() -> None:
    members = Members()
    members.inherit(["u/1", "w/1"], now=0.0)
    assert not members.forget_inherited(-1.0, lambda uid: False)
    assert members.forget_inherited(1.0, lambda uid: uid == "w")
    assert members.recorded() == ["w/1"]


def test_the_transition_table_names_every_state() -> None:
    from imageops.workers import sessions

    doc = sessions.__doc__ or ""
    for state in MemberState:
        assert state.name in doc, f"{state.name} missing from the transition table"
