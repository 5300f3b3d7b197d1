"""Progress as people read it: "42% 120/285MB" in a printer column, the plugin's bars.

One formatting for the agent (which writes ``status.progress.summary``) and for
``kubectl imageops``, so that both show the same figures.
"""

from __future__ import annotations

from typing import Any

from imageops.models.common import MAX_PROGRESS_LAYERS
from imageops.services.backend import TransferProgress

_UNITS = ("B", "kB", "MB", "GB", "TB")


def _scale(total: int) -> tuple[int, str]:
    """The divisor and unit that show ``total`` with at most three integer digits."""
    divisor, unit = 1, _UNITS[0]
    for name in _UNITS[1:]:
        if total < divisor * 1000:
            break
        divisor, unit = divisor * 1000, name
    return divisor, unit


def human_bytes(count: float) -> str:
    """``count`` bytes in decimal units, such as "120MB" or "1.5GB"."""
    divisor, unit = _scale(int(count))
    value = count / divisor
    if divisor == 1 or value >= 10:
        return f"{value:.0f}{unit}"
    return f"{value:.1f}{unit}"


def percent(done: int, total: int) -> int:
    """Whole per cent of ``done`` in ``total`` (0 while the total is unknown)."""
    if total <= 0:
        return 0
    return min(100, int(done * 100 / total))


def summary(bytes_done: int, bytes_total: int, layers_done: int, layers_total: int) -> str:
    """The printer-column text: "42% 120/285MB", or "3/7 layers" while no bytes are known."""
    if bytes_total <= 0:
        return f"{layers_done}/{layers_total} layers" if layers_total else "0%"
    divisor, unit = _scale(bytes_total)
    done = bytes_done / divisor
    total = bytes_total / divisor
    digits = 0 if divisor == 1 or total >= 10 else 1
    return f"{percent(bytes_done, bytes_total)}% {done:.{digits}f}/{total:.{digits}f}{unit}"


def eta_seconds(bytes_done: int, bytes_total: int, rate: float) -> float | None:
    """Seconds until ``bytes_total`` at ``rate`` bytes per second (None when unknown)."""
    if rate <= 0 or bytes_total <= 0 or bytes_done >= bytes_total:
        return None
    return (bytes_total - bytes_done) / rate


def human_duration(seconds: float | None) -> str:
    """ "1m05s", "42s", or "-" when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    if whole >= 60:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole}s"


def progress_wire(progress: TransferProgress) -> dict[str, Any]:
    """``status.progress`` of a snapshot: totals, the summary and every layer (capped)."""
    return {
        "layersDone": progress.layers_done,
        "layersTotal": progress.layers_total,
        "bytesDone": progress.bytes_done,
        "bytesTotal": progress.bytes_total,
        "summary": summary(
            progress.bytes_done, progress.bytes_total, progress.layers_done, progress.layers_total
        ),
        # A merge patch replaces the list whole: every write carries every layer shown.
        "layers": [
            {"id": c.id, "bytesDone": c.bytes_done, "bytesTotal": c.bytes_total, "done": c.done}
            for c in progress.layers[:MAX_PROGRESS_LAYERS]
        ],
    }
