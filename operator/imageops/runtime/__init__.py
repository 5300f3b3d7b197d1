"""Wiring of the operator's roles (``imageops run``).

kopf is imported here, first, without the official ``kubernetes`` client it
would import for nothing (see :mod:`imageops.runtime.imports`).
"""

from imageops.runtime.imports import refused

with refused("kubernetes"):
    import kopf  # noqa: F401
