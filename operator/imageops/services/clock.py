"""The one clock of the package: wall time (UTC) and monotonic time, injectable.

Workers take a :class:`Clock` (the system's by default) so that tests can
control time instead of sleeping; code without a clock of its own calls
:func:`now`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


def now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def now_seconds() -> datetime:
    """The current time in whole seconds: status times are stored so."""
    return now().replace(microsecond=0)


class Clock(Protocol):
    """What a worker asks of time."""

    def now(self) -> datetime:
        """Wall time, timezone-aware in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds of a clock that never goes back (intervals, grace periods)."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        """See :func:`now`."""
        return now()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


SYSTEM = SystemClock()
