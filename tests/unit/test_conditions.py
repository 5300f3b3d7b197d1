from datetime import UTC, datetime, timedelta

from imageops.models.common import Condition, ConditionStatus, Phase
from imageops.services.conditions import (
    conditions_for_phase,
    get_condition,
    set_condition,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def _status(conds: list[Condition], ctype: str) -> str:
    cond = get_condition(conds, ctype)
    assert cond is not None
    return str(cond.status)


def test_running_is_reconciling_not_ready() -> None:
    conds = conditions_for_phase(
        [], phase=Phase.RUNNING, generation=2, reason="Running", message="pulling", now=T0
    )
    assert [c.type for c in conds] == ["Ready", "Reconciling", "Stalled"]
    assert (_status(conds, "Ready"), _status(conds, "Reconciling"), _status(conds, "Stalled")) == (
        "False",
        "True",
        "False",
    )
    assert all(c.observed_generation == 2 for c in conds)


def test_succeeded_is_ready_and_failed_is_stalled() -> None:
    ok = conditions_for_phase(
        [], phase=Phase.SUCCEEDED, generation=1, reason="Succeeded", message="digest x", now=T0
    )
    assert _status(ok, "Ready") == "True" and _status(ok, "Reconciling") == "False"
    bad = conditions_for_phase(
        [], phase=Phase.FAILED, generation=1, reason="AuthFailed", message="unauthorized", now=T0
    )
    stalled = get_condition(bad, "Stalled")
    assert stalled is not None and stalled.status == ConditionStatus.TRUE
    assert stalled.reason == "AuthFailed" and stalled.message == "unauthorized"
    assert _status(bad, "Ready") == "False"


def test_transition_time_moves_only_on_status_change() -> None:
    first = conditions_for_phase(
        [], phase=Phase.RUNNING, generation=1, reason="Running", message="", now=T0
    )
    again = conditions_for_phase(
        first,
        phase=Phase.RUNNING,
        generation=1,
        reason="Retrying",
        message="attempt 1 failed",
        now=T1,
    )
    ready = get_condition(again, "Ready")
    assert ready is not None and ready.last_transition_time == T0 and ready.reason == "Retrying"
    done = conditions_for_phase(
        again, phase=Phase.SUCCEEDED, generation=1, reason="Succeeded", message="", now=T1
    )
    ready = get_condition(done, "Ready")
    assert ready is not None and ready.last_transition_time == T1


def test_other_condition_types_are_kept() -> None:
    custom = Condition(type="Custom", status=ConditionStatus.TRUE, reason="X")
    conds = set_condition([custom], Condition(type="Ready", status=ConditionStatus.FALSE), T0)
    conds = conditions_for_phase(
        conds, phase=Phase.SUCCEEDED, generation=1, reason="S", message="", now=T1
    )
    assert [c.type for c in conds] == ["Custom", "Ready", "Reconciling", "Stalled"]
