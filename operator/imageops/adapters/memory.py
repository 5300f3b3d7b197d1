"""Hand freed heap memory back to the operating system (glibc's ``malloc_trim``).

After a burst of operations the agent's Python objects are freed, but glibc keeps
the freed heap pages mapped, so the agent's resident memory stays at its peak. An
agent is idle most of the time: trimming when it goes idle returns those pages.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _trim() -> Callable[[int], int] | None:
    try:
        # The process's own symbols: glibc's, whatever its file is called.
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to do


def release_free_memory() -> bool:
    """Return the heap's free pages to the system; False where that is not possible."""
    trim = _trim()
    return bool(trim is not None and trim(0))
