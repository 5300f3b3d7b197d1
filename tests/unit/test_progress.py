"""Reading pull/push progress streams, with items recorded from dockerd 20.10 and the docker CLI."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from imageops.adapters.progress import (
    ProgressTracker,
    StreamReader,
    cancelled_error,
    parse_cli_line,
    pull_digest,
    push_digest,
    push_target,
    repo_digest,
    stream_error,
)
from imageops.models.common import ErrorReason
from imageops.services.backend import CancelToken, ImageInfo, LayerCount, TransferProgress
from imageops.services.errors import OperationError
from imageops.services.reference import parse_reference

DIGEST = "sha256:fd116bda7c262694222e6e3c69cf920b0f406ec1cb7fb1c70d45532573bf4e39"
LAYER = "454c4f742b69"

# A pull of a one-layer 100 MB image, as docker-py decodes it (Extracting items trimmed).
PULL: list[dict[str, Any]] = [
    {"status": "Pulling from dev/big", "id": "v1"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": LAYER},
    {
        "status": "Downloading",
        "progressDetail": {"current": 552960, "total": 104889863},
        "progress": "[>   ]    553kB/104.9MB",
        "id": LAYER,
    },
    {
        "status": "Downloading",
        "progressDetail": {"current": 52428800, "total": 104889863},
        "id": LAYER,
    },
    {"status": "Verifying Checksum", "progressDetail": {}, "id": LAYER},
    {"status": "Download complete", "progressDetail": {}, "id": LAYER},
    {
        "status": "Extracting",
        "progressDetail": {"current": 557056, "total": 104889863},
        "id": LAYER,
    },
    {"status": "Pull complete", "progressDetail": {}, "id": LAYER},
    {"status": f"Digest: {DIGEST}"},
    {"status": "Status: Downloaded newer image for 127.0.0.1:25000/dev/big:v1"},
]

# A push of a 6-byte layer: "Pushing" counts tar bytes past the uncompressed total.
PUSH: list[dict[str, Any]] = [
    {"status": "The push refers to repository [127.0.0.1:25001/dev/seed]"},
    {"status": "Preparing", "progressDetail": {}, "id": "b8ff902c03b5"},
    {"status": "Pushing", "progressDetail": {"current": 512, "total": 6}, "id": "b8ff902c03b5"},
    {"status": "Pushing", "progressDetail": {"current": 10240, "total": 6}, "id": "b8ff902c03b5"},
    {"status": "Pushed", "progressDetail": {}, "id": "b8ff902c03b5"},
    {"status": f"v1: digest: {DIGEST} size: 523"},
    {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": DIGEST, "Size": 523}},
]

NO_AUTH = {
    "errorDetail": {"message": "no basic auth credentials"},
    "error": "no basic auth credentials",
}


def fed(items: list[dict[str, Any]]) -> ProgressTracker:
    tracker = ProgressTracker()
    for item in items:
        tracker.feed(item)
    return tracker


def test_stream_error_reads_error_detail_then_error() -> None:
    assert stream_error(NO_AUTH) == "no basic auth credentials"
    assert stream_error({"error": "unauthorized: authentication required"}) == (
        "unauthorized: authentication required"
    )
    assert stream_error({"errorDetail": {}, "error": "boom"}) == "boom"
    assert all(stream_error(item) is None for item in PULL + PUSH)


def totals(progress: TransferProgress) -> TransferProgress:
    """The sums only (the per-layer tuple checked separately)."""
    assert all(isinstance(layer, LayerCount) for layer in progress.layers)
    return dataclasses.replace(progress, layers=())


def test_pull_totals() -> None:
    tracker = ProgressTracker()
    snapshots = [tracker.snapshot() for item in PULL if tracker.feed(item)]
    assert totals(snapshots[0]) == TransferProgress(0, 1, 0, 0)
    assert totals(snapshots[1]) == TransferProgress(0, 1, 552960, 104889863)
    # Extracting starts counting from zero again; it must not move bytes_done back.
    assert [s.bytes_done for s in snapshots] == sorted(s.bytes_done for s in snapshots)
    assert totals(snapshots[-1]) == TransferProgress(1, 1, 104889863, 104889863)
    # Per layer too, for the plugin's bars: one layer, every byte, done.
    assert [layer.done for layer in snapshots[-1].layers] == [True]
    assert snapshots[-1].layers[0].bytes_done == snapshots[-1].layers[0].bytes_total > 0
    assert not tracker.cache_hit


def test_push_bytes_never_pass_the_total() -> None:
    tracker = ProgressTracker()
    for item in PUSH:
        tracker.feed(item)
        progress = tracker.snapshot()
        assert progress.bytes_done <= progress.bytes_total
    assert totals(tracker.snapshot()) == TransferProgress(1, 1, 10240, 10240)


def test_items_that_are_not_layers_are_ignored() -> None:
    # A tag of twelve hex characters looks like a layer id; its statuses do not.
    tracker = fed(
        [
            {"status": "Pulling from dev/x", "id": "abcdef123456"},
            {"status": f"digest: {DIGEST} size: 1", "id": "abcdef123456"},
            {"status": "Preparing", "id": "v1"},
        ]
    )
    assert tracker.snapshot() == TransferProgress()


def test_cache_hit_when_up_to_date_or_every_layer_exists() -> None:
    assert fed(
        [{"status": f"Digest: {DIGEST}"}, {"status": "Status: Image is up to date for x:1"}]
    ).cache_hit
    assert fed(
        [
            {"status": "Already exists", "id": "aaaaaaaaaaaa"},
            {"status": "Already exists", "id": "bbbbbbbbbbbb"},
            {"status": "Status: Downloaded newer image for x:1"},
        ]
    ).cache_hit
    assert not fed(
        [
            {"status": "Already exists", "id": "aaaaaaaaaaaa"},
            {"status": "Pull complete", "id": "bbbbbbbbbbbb"},
        ]
    ).cache_hit


def test_layer_done_statuses() -> None:
    done = [
        "Pull complete",
        "Already exists",
        "Pushed",
        "Layer already exists",
        "Mounted from library/busybox",
    ]
    tracker = fed(
        [{"status": s, "id": f"{i:012x}"} for i, s in enumerate(done)]
        + [{"status": "Waiting", "id": "ffffffffffff"}]
    )
    assert (tracker.snapshot().layers_done, tracker.snapshot().layers_total) == (5, 6)


def test_digests() -> None:
    assert pull_digest({"status": f"Digest: {DIGEST}"}) == DIGEST
    assert pull_digest({"status": "Pulling fs layer"}) is None
    assert push_digest(PUSH[-1]) == (DIGEST, 523)
    assert push_digest(PUSH[-2]) == (DIGEST, 523)
    assert push_digest({"aux": {"ID": "sha256:abc"}}) is None
    assert all(push_digest(item) is None for item in PUSH[:-2])


@pytest.mark.parametrize(
    ("line", "item"),
    [
        ("454c4f742b69: Pull complete\n", {"id": LAYER, "status": "Pull complete"}),
        (f"Digest: {DIGEST}", {"status": f"Digest: {DIGEST}"}),
        (f"latest: digest: {DIGEST} size: 528", {"status": f"latest: digest: {DIGEST} size: 528"}),
        ("v1: Pulling from dev/seed", {"status": "v1: Pulling from dev/seed"}),
    ],
)
def test_parse_cli_line(line: str, item: dict[str, str]) -> None:
    assert parse_cli_line(line) == item


def test_cli_lines_give_layers_and_digest() -> None:
    lines = [
        "v1: Pulling from dev/big",
        f"{LAYER}: Pulling fs layer",
        f"{LAYER}: Verifying Checksum",
        f"{LAYER}: Download complete",
        f"{LAYER}: Pull complete",
        f"Digest: {DIGEST}",
        "Status: Downloaded newer image for 127.0.0.1:25000/dev/big:v1",
        "127.0.0.1:25000/dev/big:v1",
    ]
    seen: list[TransferProgress] = []
    reader = StreamReader("pull", seen.append)
    for line in lines:
        reader.feed(parse_cli_line(line))
    assert reader.finished and reader.digest == DIGEST
    assert totals(seen[-1]) == TransferProgress(1, 1, 0, 0)


def test_stream_reader_raises_the_classified_error() -> None:
    reader = StreamReader("push", lambda _: None)
    reader.feed(PUSH[0])
    with pytest.raises(OperationError) as caught:
        reader.feed(NO_AUTH)
    assert caught.value.reason is ErrorReason.AUTH_FAILED
    assert not reader.finished


def test_stream_reader_push_result() -> None:
    seen: list[TransferProgress] = []
    reader = StreamReader("push", seen.append)
    for item in PUSH:
        reader.feed(item)
    assert (reader.digest, reader.size, reader.finished) == (DIGEST, 523, True)
    assert len(seen) == 4  # only items that changed a layer


def test_pull_is_finished_only_by_its_status_line() -> None:
    reader = StreamReader("pull", lambda _: None)
    for item in PULL[:-1]:
        reader.feed(item)
    assert reader.digest == DIGEST and not reader.finished
    reader.feed(PULL[-1])
    assert reader.finished


def test_cancelled_error_reason() -> None:
    token = CancelToken()
    token.cancel("timeout")
    assert cancelled_error(token, "pull").reason is ErrorReason.TIMEOUT
    token = CancelToken()
    token.cancel("deleted")
    error = cancelled_error(token, "push")
    assert error.reason is ErrorReason.CANCELLED and "deleted" in error.message


def test_push_target() -> None:
    assert push_target(parse_reference("127.0.0.1:5000/x")) == "127.0.0.1:5000/x:latest"
    assert push_target(parse_reference("busybox:1")) == "busybox:1"
    with pytest.raises(OperationError) as caught:
        push_target(parse_reference(f"127.0.0.1:5000/x@{DIGEST}"))
    assert caught.value.reason is ErrorReason.INVALID_REFERENCE


def test_repo_digest_matches_the_repository() -> None:
    image = ImageInfo(
        "sha256:1", repo_digests=(f"127.0.0.1:5000/x/y@{DIGEST}", "busybox@sha256:" + "1" * 64)
    )
    assert repo_digest(image, parse_reference("127.0.0.1:5000/x/y:v1")) == DIGEST
    assert repo_digest(image, parse_reference("docker.io/library/busybox")) == (
        "sha256:" + "1" * 64
    )
    assert repo_digest(image, parse_reference("127.0.0.1:5000/x")) is None
