"""What an agent does with an ImageOperation it observes, and the status it writes.

Pure functions: the agent feeds in what it sees (generation, status, what it
runs already) and gets back a decision or a status patch. Patches are JSON
merge patches of ``status``, each built as an ``ImageOperationStatus`` and
serialised by it (``models.meta.merge_patch``): a misspelled field cannot be
written, and fields set to ``None`` delete stale values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from imageops.models.common import Condition, Phase, Progress, PullPolicy
from imageops.models.imageoperation import ImageOperationStatus
from imageops.models.meta import merge_patch
from imageops.services.backend import TransferProgress
from imageops.services.conditions import conditions_for_phase
from imageops.services.errors import OperationError
from imageops.services.progress_text import progress_wire

TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class Decision(StrEnum):
    """What to do with an observed ImageOperation."""

    SKIP = "Skip"  # finished for this generation, or already running it
    START = "Start"  # a new generation: run from the first attempt
    RESUME = "Resume"  # this generation was under way when the agent stopped
    RESTART = "Restart"  # the spec changed while an older generation runs


def decide(
    generation: int, status: ImageOperationStatus, running_generation: int | None
) -> Decision:
    """Decide from the object's generation and status, and the generation run locally.

    Re-applying an unchanged spec leaves the generation as it is, so a
    finished operation is never run again; a changed spec (new generation)
    runs again.
    """
    if running_generation == generation:
        return Decision.SKIP
    if running_generation is not None:
        return Decision.RESTART
    if status.observed_generation == generation:
        return Decision.SKIP if status.phase in TERMINAL else Decision.RESUME
    return Decision.START


@dataclass(frozen=True)
class OperationResult:
    """A verified result of one operation."""

    digest: str | None = None
    image_id: str | None = None
    size_bytes: int | None = None
    cache_hit: bool = False
    previous_target_image_id: str | None = None
    dry_run_result: str | None = None
    bytes_transferred: int = 0
    # The transfer's last progress (Pull, Push): the final status reports it.
    progress: TransferProgress | None = None


@dataclass
class RunState:
    """What the agent knows of the run in progress: the basis of every patch."""

    generation: int
    node: str
    job_id: str
    start_time: datetime
    conditions: list[Condition]
    attempts: int = 0
    # Whether start_time is when an attempt really began (it held a slot); until
    # then it is when the run was created, and no startTime is written.
    started: bool = False


StatusPatch = dict[str, Any]
# Result fields of an earlier generation, removed when a new generation starts.
RESULT_FIELDS = (
    "digest",
    "short_digest",
    "image_id",
    "size_bytes",
    "cache_hit",
    "last_error",
    "progress",
    "previous_target_image_id",
    "dry_run_result",
)


def _stamp(dt: datetime | None) -> datetime | None:
    # Status timestamps are whole seconds, as the API server's own.
    return None if dt is None else dt.replace(microsecond=0)


def _conditions(
    run: RunState, phase: Phase, reason: str, message: str, now: datetime
) -> list[Condition]:
    run.conditions = conditions_for_phase(
        run.conditions,
        phase=phase,
        generation=run.generation,
        reason=reason,
        message=message,
        now=now,
    )
    return run.conditions


def _patch(**fields: Any) -> StatusPatch:
    """A merge patch of exactly ``fields`` (snake_case), checked by ImageOperationStatus."""
    return merge_patch(ImageOperationStatus(**fields))


def started_patch(
    run: RunState,
    phase: Phase,
    message: str,
    now: datetime,
    reason: str | None = None,
    pull_policy: PullPolicy | None = None,
    clear: bool = False,
) -> StatusPatch:
    """Status when a run starts, resumes or waits for a slot (Pending/Running).

    ``reason`` is the Reconciling reason (default: the phase), such as Queued
    for a run waiting for a --max-concurrent slot. startTime is written once
    an attempt really began. ``clear`` removes every result of an earlier
    generation, so that none is read as this one's.
    """
    reason = reason or ("Running" if phase is Phase.RUNNING else "Pending")
    fields: dict[str, Any] = dict.fromkeys(RESULT_FIELDS) if clear else {}
    if pull_policy is not None:
        fields["pull_policy"] = pull_policy
    return _patch(
        phase=phase,
        observed_generation=run.generation,
        node=run.node,
        job_id=run.job_id,
        attempts=run.attempts,
        start_time=_stamp(run.start_time) if run.started else None,
        conditions=_conditions(run, phase, reason, message, now),
        completion_time=None,
        duration_seconds=None,
        next_retry_time=None,
        **fields,
    )


def phase_patch(
    run: RunState, phase: Phase, reason: str, message: str, now: datetime
) -> StatusPatch:
    """Status of a run that waits (Pending, e.g. for its session) or goes on (Running)."""
    return _patch(phase=phase, conditions=_conditions(run, phase, reason, message, now))


def attempt_patch(run: RunState) -> StatusPatch:
    """Status when a further attempt starts after a retry delay."""
    return _patch(attempts=run.attempts, phase=Phase.RUNNING)


def progress_patch(progress: TransferProgress) -> StatusPatch:
    """Live transfer progress of the attempt under way."""
    return _patch(progress=Progress.model_validate(progress_wire(progress)))


def retrying_patch(
    run: RunState, error: OperationError, delay: float, now: datetime, next_retry: datetime
) -> StatusPatch:
    """Status after a retryable failure, before the next attempt."""
    message = f"attempt {run.attempts} failed ({error.reason}); retrying in {delay:.0f}s"
    return _patch(
        phase=Phase.RUNNING,
        attempts=run.attempts,
        last_error=error.to_info(),
        next_retry_time=_stamp(next_retry),
        conditions=_conditions(run, Phase.RUNNING, "Retrying", message, now),
    )


def _finished(run: RunState, now: datetime) -> dict[str, Any]:
    return {
        "observed_generation": run.generation,
        "attempts": run.attempts,
        "completion_time": _stamp(now),
        "duration_seconds": round(max((now - run.start_time).total_seconds(), 0.0), 3),
        "next_retry_time": None,
    }


def succeeded_patch(run: RunState, result: OperationResult, now: datetime) -> StatusPatch:
    """Status of a verified success."""
    digest = result.digest
    message = f"digest {digest}" if digest else f"image {result.image_id}"
    if result.dry_run_result:
        message = f"dry run: {result.dry_run_result}"
    progress = _final_progress(result.progress)
    return _patch(
        **_finished(run, now),
        phase=Phase.SUCCEEDED,
        digest=digest,
        short_digest=short_digest(digest),
        image_id=result.image_id,
        size_bytes=result.size_bytes,
        cache_hit=result.cache_hit,
        previous_target_image_id=result.previous_target_image_id,
        dry_run_result=result.dry_run_result,
        last_error=None,
        **({} if progress is None else {"progress": progress}),
        conditions=_conditions(run, Phase.SUCCEEDED, "Succeeded", message, now),
    )


def _final_progress(progress: TransferProgress | None) -> Progress | None:
    """The progress of a succeeded transfer: every layer and byte is done by then."""
    if progress is None:
        return None
    total = max(progress.bytes_total, progress.bytes_done)
    layers = tuple(
        dataclasses.replace(c, bytes_done=max(c.bytes_done, c.bytes_total), done=True)
        for c in progress.layers
    )
    done = dataclasses.replace(
        progress,
        layers_done=progress.layers_total,
        bytes_done=total,
        bytes_total=total,
        layers=layers,
    )
    return Progress.model_validate(progress_wire(done))


def failed_patch(run: RunState, error: OperationError, now: datetime) -> StatusPatch:
    """Status of a permanent failure (or retries exhausted)."""
    return _patch(
        **_finished(run, now),
        phase=Phase.FAILED,
        last_error=error.to_info(),
        conditions=_conditions(run, Phase.FAILED, str(error.reason), error.message, now),
    )


def short_digest(digest: str | None) -> str | None:
    """The first 12 hex digits of a digest, for printer columns."""
    if not digest:
        return None
    return digest.split(":", 1)[-1][:12]


def parse_conditions(raw: Sequence[dict[str, Any]] | None) -> list[Condition]:
    """Conditions from a stored status, skipping entries that do not validate."""
    result = []
    for item in raw or []:
        try:
            result.append(Condition.model_validate(item))
        except ValueError:
            continue
    return result
