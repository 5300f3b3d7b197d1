"""Status conditions in the Kubernetes API convention.

Three condition types describe every resource, as Flux's kstatus and
``kubectl wait`` read them:

- ``Ready``: True once the work succeeded for the current generation.
- ``Reconciling``: True while work for the current generation is under way.
- ``Stalled``: True when the work failed for good and will not be retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from imageops.models.common import Condition, ConditionStatus, Phase

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_TYPES = (READY, RECONCILING, STALLED)


def set_condition(
    conditions: Sequence[Condition], new: Condition, now: datetime
) -> list[Condition]:
    """Return ``conditions`` with ``new`` replacing the one of its type.

    ``lastTransitionTime`` moves only when the status value changes, as the
    API convention asks; the list keeps its order (a new type is appended).
    """
    result: list[Condition] = []
    found = False
    for old in conditions:
        if old.type != new.type:
            result.append(old)
            continue
        found = True
        changed = old.status != new.status or old.last_transition_time is None
        when = now if changed else old.last_transition_time
        result.append(new.model_copy(update={"last_transition_time": when}))
    if not found:
        result.append(new.model_copy(update={"last_transition_time": now}))
    return result


def conditions_for_phase(
    existing: Sequence[Condition],
    *,
    phase: Phase,
    generation: int,
    reason: str,
    message: str,
    now: datetime,
) -> list[Condition]:
    """The full Ready/Reconciling/Stalled set for a phase.

    The whole list is returned because a status patch replaces the list
    as a whole; conditions of other types already present are kept.
    """
    values = {
        Phase.PENDING: (ConditionStatus.FALSE, ConditionStatus.TRUE, ConditionStatus.FALSE),
        Phase.RUNNING: (ConditionStatus.FALSE, ConditionStatus.TRUE, ConditionStatus.FALSE),
        Phase.SUCCEEDED: (ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.FALSE),
        Phase.FAILED: (ConditionStatus.FALSE, ConditionStatus.FALSE, ConditionStatus.TRUE),
    }[phase]
    result = list(existing)
    for ctype, status in zip(CONDITION_TYPES, values, strict=True):
        active = status is ConditionStatus.TRUE
        result = set_condition(
            result,
            Condition(
                type=ctype,
                status=status,
                reason=reason if active or ctype == READY else phase.value,
                message=message if active or ctype == READY else "",
                observed_generation=generation,
            ),
            now,
        )
    return result


def get_condition(conditions: Sequence[Condition], ctype: str) -> Condition | None:
    """The condition of type ``ctype``, if present."""
    return next((c for c in conditions if c.type == ctype), None)
