"""Reading Docker's pull/push progress stream, shared by the SDK and command-line backends.

The daemon reports a pull or push as a stream of JSON items (the SDK sees them
as dicts; the command line prints them as ``id: status`` lines when stdout is
not a terminal). This module turns either form into layer and byte totals,
finds errors reported inside the stream and picks out the digest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imageops.models.common import ErrorReason
from imageops.services.backend import CancelToken, ImageInfo, ProgressCallback, TransferProgress
from imageops.services.errors import OperationError, from_message
from imageops.services.reference import ImageRef

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_PULL_DIGEST_RE = re.compile(r"^Digest: (sha256:[a-f0-9]{64})")
_PUSH_DIGEST_RE = re.compile(r"digest: (sha256:[a-f0-9]{64}) size: (\d+)")
# The daemon shows layer ids cut to 12 hex characters.
_LAYER_ID_RE = re.compile(r"^[a-f0-9]{12}$")
_CLI_LINE_RE = re.compile(r"^(?P<id>[a-f0-9]{12}): (?P<status>.+)$")

# Only items with these statuses describe a layer: "v1: Pulling from x" carries
# the tag as its id, and a tag may look like a layer id.
_LAYER_STATUSES = (
    "Pulling fs layer",
    "Waiting",
    "Downloading",
    "Verifying Checksum",
    "Download complete",
    "Extracting",
    "Pull complete",
    "Already exists",
    "Preparing",
    "Pushing",
    "Pushed",
    "Layer already exists",
    "Mounted from",
    "Retrying in",
)
# Statuses after which a layer needs nothing more.
_DONE_STATUSES = (
    "Pull complete",
    "Already exists",
    "Pushed",
    "Layer already exists",
    "Mounted from",
)
# Statuses after which every byte of the layer has been transferred.
_TRANSFERRED_STATUSES = ("Download complete", "Verifying Checksum", *_DONE_STATUSES)
# Statuses whose progressDetail counts transferred bytes (Extracting counts
# unpacked bytes again from zero, so it is left out).
_BYTE_STATUSES = ("Downloading", "Pushing")
_UP_TO_DATE = "Status: Image is up to date"


def stream_error(item: Mapping[str, Any]) -> str | None:
    """The error message an item of the stream reports, or None for a normal item."""
    detail = item.get("errorDetail")
    if isinstance(detail, Mapping) and detail.get("message"):
        return str(detail["message"])
    error = item.get("error")
    if error:
        return str(error)
    return None


def pull_digest(item: Mapping[str, Any]) -> str | None:
    """The manifest digest from a pull's "Digest: sha256:..." status, if this item is it."""
    match = _PULL_DIGEST_RE.match(str(item.get("status") or ""))
    return match.group(1) if match else None


def push_digest(item: Mapping[str, Any]) -> tuple[str, int] | None:
    """(digest, size) from a push's aux item or its "tag: digest: ... size: N" status line."""
    aux = item.get("aux")
    if isinstance(aux, Mapping) and _DIGEST_RE.fullmatch(str(aux.get("Digest") or "")):
        return str(aux["Digest"]), int(aux.get("Size") or 0)
    match = _PUSH_DIGEST_RE.search(str(item.get("status") or ""))
    if match:
        return match.group(1), int(match.group(2))
    return None


def parse_cli_line(line: str) -> dict[str, Any]:
    """The stream item a line of non-terminal ``docker pull``/``push`` output stands for."""
    text = line.strip()
    match = _CLI_LINE_RE.match(text)
    if match:
        return {"id": match.group("id"), "status": match.group("status")}
    return {"status": text}


@dataclass
class _Layer:
    status: str = ""
    current: int = 0
    total: int = 0
    done: bool = False
    cached: bool = False


class ProgressTracker:
    """Sums the layers and bytes of one pull or push from its stream items."""

    def __init__(self) -> None:
        self._layers: dict[str, _Layer] = {}
        self.up_to_date = False

    def feed(self, item: Mapping[str, Any]) -> bool:
        """Account for one item; True when the totals changed."""
        status = str(item.get("status") or "")
        if status.startswith(_UP_TO_DATE):
            self.up_to_date = True
            return False
        layer_id = str(item.get("id") or "")
        if not _LAYER_ID_RE.match(layer_id) or not status.startswith(_LAYER_STATUSES):
            return False
        layer = self._layers.setdefault(layer_id, _Layer())
        layer.status = status
        self._account(layer, status, item.get("progressDetail"))
        return True

    @staticmethod
    def _account(layer: _Layer, status: str, detail: object) -> None:
        if status.startswith(_BYTE_STATUSES) and isinstance(detail, Mapping):
            current = int(detail.get("current") or 0)
            total = int(detail.get("total") or 0)
            # A push reports the uncompressed size as total while counting the
            # bytes of the tar stream, so current may pass total: keep done <= total.
            layer.current = max(layer.current, current)
            layer.total = max(layer.total, total, layer.current)
        if status.startswith(_TRANSFERRED_STATUSES):
            layer.current = layer.total
        if status.startswith(_DONE_STATUSES):
            layer.done = True
            layer.cached = status.startswith("Already exists")

    def snapshot(self) -> TransferProgress:
        """The totals so far."""
        layers = self._layers.values()
        return TransferProgress(
            layers_done=sum(1 for layer in layers if layer.done),
            layers_total=len(self._layers),
            bytes_done=sum(layer.current for layer in layers),
            bytes_total=sum(layer.total for layer in layers),
        )

    @property
    def cache_hit(self) -> bool:
        """Whether the pull transferred nothing: up to date, or every layer already present."""
        if self.up_to_date:
            return True
        return all(layer.cached for layer in self._layers.values())


class StreamReader:
    """Follows one pull or push stream: errors, progress, digest and whether it finished."""

    def __init__(self, kind: str, on_progress: ProgressCallback) -> None:
        """``kind`` is "pull" or "push"; ``on_progress`` gets the totals after each change."""
        self.kind = kind
        self.tracker = ProgressTracker()
        self.digest: str | None = None
        self.size = 0
        self.finished = False
        self._on_progress = on_progress

    def feed(self, item: Mapping[str, Any]) -> None:
        """Take one item; raise OperationError if the daemon reported an error in it."""
        message = stream_error(item)
        if message is not None:
            raise from_message(message)
        if self.tracker.feed(item):
            self._on_progress(self.tracker.snapshot())
        if self.kind == "pull":
            self._feed_pull(item)
        else:
            self._feed_push(item)

    def _feed_pull(self, item: Mapping[str, Any]) -> None:
        self.digest = pull_digest(item) or self.digest
        # Every successful pull ends with "Status: Downloaded newer image" or "... up to date".
        if str(item.get("status") or "").startswith("Status: "):
            self.finished = True

    def _feed_push(self, item: Mapping[str, Any]) -> None:
        found = push_digest(item)
        if found is not None:
            self.digest, self.size = found
            self.finished = True


def cancelled_error(cancel: CancelToken, what: str) -> OperationError:
    """The error for a call stopped through its token (Timeout when the deadline stopped it)."""
    if cancel.reason == "timeout":
        return OperationError(ErrorReason.TIMEOUT, f"{what} stopped: timeout")
    return OperationError(ErrorReason.CANCELLED, f"{what} stopped: {cancel.reason or 'cancelled'}")


def push_target(ref: ImageRef) -> str:
    """``name:tag`` to push (tag ``latest`` by default); a digest cannot be pushed to."""
    if ref.digest is not None:
        raise OperationError(
            ErrorReason.INVALID_REFERENCE,
            f"invalid reference format: {ref}: a push or tag target needs a tag, not a digest",
        )
    return ref.repo_tag


def repo_digest(image: ImageInfo, ref: ImageRef) -> str | None:
    """The digest in ``image``'s RepoDigests that belongs to ``ref``'s repository."""
    for entry in image.repo_digests:
        name, _, digest = entry.rpartition("@")
        if name == ref.name and digest:
            return digest
    return None
