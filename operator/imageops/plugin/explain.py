"""``kubectl imageops explain REASON``: what an error reason means and what to do.

Everything shown comes from services.errors (SUGGESTIONS, RETRYABLE), the single
source the agent also writes into ``status.lastError``.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

import yaml

from imageops.models.common import ErrorReason
from imageops.services.errors import RETRYABLE, SUGGESTIONS


def describe(reason: ErrorReason) -> dict[str, Any]:
    """The facts about one reason."""
    return {
        "reason": str(reason),
        "retryable": reason in RETRYABLE,
        "suggestion": SUGGESTIONS.get(reason, ""),
    }


def _lookup(text: str) -> ErrorReason | None:
    wanted = text.strip().lower()
    return next((r for r in ErrorReason if str(r).lower() == wanted), None)


def _lines(info: dict[str, Any]) -> list[str]:
    retried = (
        "yes: retried with exponential backoff up to spec.backoffLimit times, then Failed"
        if info["retryable"]
        else "no: the operation fails at once (attempts: 1); fix the cause and re-apply"
    )
    return [
        f"REASON:     {info['reason']}",
        f"RETRIED:    {retried}",
        f"WHAT TO DO: {info['suggestion']}",
        "SEEN IN:    status.lastError.reason, the Stalled/Ready condition reason, "
        f'Warning Events, imageops_errors_total{{reason="{info["reason"]}"}}',
    ]


def explain(reason: str | None, out: TextIO, output: str | None = None) -> int:
    """Print one reason (or all of them); 2 for a reason that does not exist."""
    if reason is None:
        infos = [describe(r) for r in ErrorReason]
    else:
        found = _lookup(reason)
        if found is None:
            known = ", ".join(str(r) for r in ErrorReason)
            print(f"error: unknown reason {reason!r}; known reasons: {known}", file=out)
            return 2
        infos = [describe(found)]
    if output == "json":
        out.write(json.dumps(infos if reason is None else infos[0], indent=2) + "\n")
    elif output == "yaml":
        out.write(yaml.safe_dump(infos if reason is None else infos[0], sort_keys=False))
    elif reason is None:
        for info in infos:
            flag = "retried" if info["retryable"] else "final"
            print(f"{info['reason']:<20} {flag:<8} {info['suggestion']}", file=out)
    else:
        print("\n".join(_lines(infos[0])), file=out)
    return 0
