"""Imports an agent process refuses, to stay light (every MiB of agent is a GiB of a cluster).

Some libraries import optional packages the operator never uses:

- kopf imports the official ``kubernetes`` client (~800 generated modules,
  ~20 MiB) only to recognise its model objects in kopf's helpers; the operator
  never hands it any (``adapters.kubehttp`` talks plain JSON);
- requests (under docker-py) imports ``charset_normalizer`` (~3 MiB of compiled
  modules) to guess the text encoding of answers that name none; the Docker API
  answers JSON, and without a detector requests reads text as UTF-8, as it
  documents.

:func:`refused` makes such imports fail (``sys.modules[name] = None``, the
documented way) while the library that would make them is imported, then lets
them be imported again: a later explicit import (the login's fallback to the
official client) still works.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def refused(*names: str) -> Iterator[None]:
    """Within the block, ``import name`` raises ImportError for each name not imported yet."""
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
