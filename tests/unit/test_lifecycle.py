from datetime import UTC, datetime, timedelta

from imageops.models.common import ErrorReason, Phase
from imageops.models.imageoperation import ImageOperationStatus
from imageops.services.backend import TransferProgress
from imageops.services.errors import OperationError
from imageops.services.lifecycle import (
    Decision,
    OperationResult,
    RunState,
    decide,
    failed_patch,
    retrying_patch,
    short_digest,
    started_patch,
    succeeded_patch,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def _status(**kw: object) -> ImageOperationStatus:
    return ImageOperationStatus.model_validate(kw)


def test_decide() -> None:
    assert decide(1, _status(), None) is Decision.START
    assert decide(1, _status(observedGeneration=1, phase="Succeeded"), None) is Decision.SKIP
    assert decide(1, _status(observedGeneration=1, phase="Failed"), None) is Decision.SKIP
    assert decide(2, _status(observedGeneration=1, phase="Succeeded"), None) is Decision.START
    assert decide(1, _status(observedGeneration=1, phase="Running"), None) is Decision.RESUME
    assert decide(1, _status(observedGeneration=1, phase="Running"), 1) is Decision.SKIP
    assert decide(2, _status(observedGeneration=1, phase="Running"), 1) is Decision.RESTART


def _run() -> RunState:
    return RunState(
        generation=3, node="n1", job_id="j1", start_time=T0, conditions=[], attempts=1, started=True
    )


def test_a_queued_run_is_pending_without_a_start_time() -> None:
    run = RunState(generation=3, node="n1", job_id="j1", start_time=T0, conditions=[])
    patch = started_patch(run, Phase.PENDING, "queued: all 2 slots", T0, reason="Queued")
    assert patch["phase"] == "Pending" and patch["startTime"] is None
    reconciling = next(c for c in patch["conditions"] if c["type"] == "Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("True", "Queued")


def test_a_succeeded_transfer_reports_every_layer_done() -> None:
    progress = TransferProgress(layers_done=0, layers_total=1, bytes_done=700, bytes_total=700)
    result = OperationResult(digest=DIGEST, image_id="sha256:1", progress=progress)
    patch = succeeded_patch(_run(), result, T0)
    wire = patch["progress"]
    assert (wire["layersDone"], wire["layersTotal"]) == (1, 1)
    assert (wire["bytesDone"], wire["bytesTotal"]) == (700, 700)
    assert wire["summary"].startswith("100%")
    assert "progress" not in succeeded_patch(_run(), OperationResult(digest=DIGEST), T0)


def test_started_patch_clears_nothing_it_sets() -> None:
    patch = started_patch(_run(), Phase.RUNNING, "go", T0)
    assert patch["phase"] == "Running" and patch["observedGeneration"] == 3
    assert patch["startTime"] == "2026-01-01T00:00:00Z" and patch["completionTime"] is None
    assert {c["type"]: c["status"] for c in patch["conditions"]} == {
        "Ready": "False",
        "Reconciling": "True",
        "Stalled": "False",
    }


def test_succeeded_patch() -> None:
    run = _run()
    patch = succeeded_patch(
        run, OperationResult(digest=DIGEST, image_id="sha256:1"), T0 + timedelta(seconds=4.5)
    )
    assert patch["phase"] == "Succeeded" and patch["digest"] == DIGEST
    assert patch["shortDigest"] == "ab" * 6 and patch["durationSeconds"] == 4.5
    assert patch["lastError"] is None
    ready = next(c for c in patch["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == 3


def test_retrying_and_failed_patches_carry_the_error() -> None:
    run = _run()
    err = OperationError(ErrorReason.REGISTRY_UNAVAILABLE, "connection refused")
    patch = retrying_patch(run, err, 4.0, T0, T0 + timedelta(seconds=4))
    assert patch["lastError"]["reason"] == "RegistryUnavailable" and patch["lastError"]["retryable"]
    assert patch["nextRetryTime"] == "2026-01-01T00:00:04Z"
    final = failed_patch(run, OperationError(ErrorReason.AUTH_FAILED, "unauthorized"), T0)
    assert final["phase"] == "Failed" and final["lastError"]["retryable"] is False
    assert final["lastError"]["suggestion"]
    stalled = next(c for c in final["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "AuthFailed"


def test_short_digest() -> None:
    assert short_digest(None) is None
    assert short_digest(DIGEST) == "abababababab"
