"""The spec an agent actually runs: the operation's own fields, then its session's defaults.

An ImageOperation may leave ``credentials``, ``backoffLimit`` and
``timeoutSeconds`` unset; its ImageSession (``spec.sessionRef``) fills them
in, and the built-in defaults fill whatever is still missing. A session's
``allowedRegistries`` narrows what the agent allows; it never widens it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imageops.models.imageoperation import (
    DEFAULT_BACKOFF_LIMIT,
    DEFAULT_TIMEOUT_SECONDS,
    ImageOperationSpec,
)
from imageops.models.imagesession import ImageSessionSpec


@dataclass(frozen=True)
class EffectiveSpec:
    """An operation spec with every default resolved."""

    spec: ImageOperationSpec
    # Credentials taken from the session serve only registries their Secret knows;
    # for any other registry the operation goes anonymous instead of failing.
    credentials_inherited: bool
    backoff_limit: int
    timeout_seconds: int
    # Each list must allow a registry (an empty list allows every registry).
    allowed_registries: tuple[tuple[str, ...], ...]


def effective_spec(
    spec: ImageOperationSpec,
    session: ImageSessionSpec | None,
    agent_allowed: Sequence[str] = (),
) -> EffectiveSpec:
    """Resolve ``spec`` against its session's defaults and the built-in ones."""
    updates: dict[str, object] = {}
    inherited = session is not None and spec.credentials is None and session.credentials is not None
    if inherited:
        updates["credentials"] = session.credentials  # type: ignore[union-attr]
    backoff = _first(
        spec.backoff_limit, session.backoff_limit if session else None, DEFAULT_BACKOFF_LIMIT
    )
    timeout = _first(
        spec.timeout_seconds, session.timeout_seconds if session else None, DEFAULT_TIMEOUT_SECONDS
    )
    updates.update(backoff_limit=backoff, timeout_seconds=timeout)
    allowed = [tuple(agent_allowed)]
    if session is not None and session.allowed_registries:
        allowed.append(tuple(session.allowed_registries))
    return EffectiveSpec(
        spec.model_copy(update=updates), inherited, backoff, timeout, tuple(allowed)
    )


def _first(*values: int | None) -> int:
    return next(v for v in values if v is not None)
