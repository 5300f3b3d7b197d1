"""Readiness and liveness of the watches the operator needs.

An operator started while the API server is down, or before the CRDs exist,
must not come up serving nothing: kopf resolves its resources once at start-up
(and only re-scans on CRD changes), so the operator waits until the API server
serves every kind a role needs before it starts kopf. Afterwards a probe checks,
every few seconds, that each needed resource is served by kopf and answers a
list on the API server; the result feeds ``/readyz`` and ``/healthz``
(adapters.metrics.WatchHealth).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from imageops.adapters.kube import AsyncKube
from imageops.adapters.metrics import WatchHealth
from imageops.adapters.retries import brief

log = logging.getLogger(__name__)
# (watch name "role/plural", plural)
Watch = tuple[str, str]


async def _check(kube: AsyncKube, namespace: str | None, plural: str) -> tuple[bool, str]:
    try:
        if await kube.call(kube.sync.served, namespace, plural):
            return True, ""
        return False, f"the API server does not serve {plural} (CRD not installed?)"
    except Exception as exc:
        return False, f"API server unreachable: {brief(exc)}"


async def wait_until_served(
    kube: AsyncKube,
    namespace: str | None,
    watches: Sequence[Watch],
    health: WatchHealth,
    interval: float = 2.0,
) -> None:
    """Return once the API server serves every watched resource; retries for ever."""
    logged = ""
    while True:
        missing = []
        for name, plural in watches:
            ok, why = await _check(kube, namespace, plural)
            if not ok:
                missing.append(why)
                health.report(name, False, why)
            else:
                health.report(name, False, "starting")
        if not missing:
            return
        text = "; ".join(sorted(set(missing)))
        if text != logged:
            log.warning("waiting before starting: %s", text)
            logged = text
        await asyncio.sleep(interval)


async def probe_watches(
    kube: AsyncKube,
    namespace: str | None,
    watches: Sequence[Watch],
    served_by_kopf: Callable[[str, str], bool],
    health: WatchHealth,
    interval: float = 2.0,
) -> None:
    """Report every watch up or down, every ``interval`` seconds, until cancelled."""
    while True:
        for name, plural in watches:
            if not served_by_kopf(name, plural):
                health.report(name, False, "kopf does not serve it (yet)")
                continue
            ok, why = await _check(kube, namespace, plural)
            health.report(name, ok, why)
        await asyncio.sleep(interval)
