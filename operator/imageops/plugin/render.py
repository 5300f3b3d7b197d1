"""Drawing a watch: bars in a terminal (rich), plain lines when piped, JSON lines for -o json."""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any, TextIO

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from imageops.plugin.view import Bar, Snapshot
from imageops.services.errors import SUGGESTIONS
from imageops.services.progress_text import (
    eta_seconds,
    human_bytes,
    human_duration,
    percent,
    summary,
)

_STYLE = {"Succeeded": "green", "Failed": "red", "Running": "cyan", "Pending": "yellow"}
_WINDOW = 8.0  # seconds of samples a rate is measured over


class RateMeter:
    """Bytes per second of each bar over the last few seconds, from what the watch saw."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, key: str, done: int, now: float | None = None) -> float:
        """Record ``done`` bytes for ``key``; the rate over the window (0 until two samples)."""
        now = time.monotonic() if now is None else now
        samples = self._samples.setdefault(key, deque())
        if not samples or samples[-1][1] != done:
            samples.append((now, done))
        while len(samples) > 2 and now - samples[0][0] > _WINDOW:
            samples.popleft()
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        if t1 <= t0 or b1 <= b0:
            return 0.0
        # The agent publishes every ~2 s: measure to now, so a stall shows a falling rate.
        return (b1 - b0) / max(now - t0, t1 - t0)


def _figures(bar: Bar, rate: float) -> tuple[str, str, str]:
    size = summary(bar.bytes_done, bar.bytes_total, 0, 0) if bar.bytes_total else "-"
    if bar.phase in ("Succeeded", "Failed"):
        return size, "", ""
    eta = eta_seconds(bar.bytes_done, bar.bytes_total, rate)
    return size, f"{human_bytes(rate)}/s" if rate else "", human_duration(eta) if eta else ""


def suggestion(error: dict[str, Any]) -> str:
    """The suggestion the status carries, else the one services.errors has for the reason."""
    text = str(error.get("suggestion") or "")
    if text:
        return text
    return next((s for r, s in SUGGESTIONS.items() if str(r) == error.get("reason")), "")


def final_lines(snap: Snapshot) -> list[str]:
    """The closing lines: phase, digest, each error's reason, message and suggestion."""
    what = f"{snap.kind.lower()}/{snap.name}"
    lines = [f"{snap.phase} {what}" + (f" digest {snap.digest}" if snap.digest else "")]
    if snap.message and snap.kind != "ImageOperation":
        lines.append(f"  {snap.message}")
    seen = set()
    for error in snap.errors:
        key = (error.get("reason"), error.get("message"))
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"  error: {error.get('reason')}: {error.get('message')}")
        hint = suggestion(error)
        if hint:
            lines.append(f"  suggestion: {hint}")
    return lines


class TerminalView:
    """Live bars, redrawn in place, with bytes, rate and ETA per bar."""

    def __init__(self, out: TextIO) -> None:
        self.console = Console(file=out, force_terminal=True)
        self.rates = RateMeter()
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def show(self, snap: Snapshot) -> None:
        """Redraw with the latest snapshot."""
        self.live.update(self._render(snap))

    def _render(self, snap: Snapshot) -> Group:
        total_rate = self.rates.observe("\0total", snap.bytes_done)
        head = Text.assemble(
            (f"{snap.kind} {snap.namespace}/{snap.name} ", "bold"),
            (snap.phase, _STYLE.get(snap.phase, "")),
            f"  {summary(snap.bytes_done, snap.bytes_total, 0, 0)}",
            f"  {human_bytes(total_rate)}/s" if total_rate else "",
            f"  {snap.message}" if snap.message else "",
        )
        table = Table.grid(padding=(0, 1))
        for _ in range(6):
            table.add_column()
        for bar in snap.bars:
            rate = self.rates.observe(bar.label, bar.bytes_done)
            size, speed, eta = _figures(bar, rate)
            complete = 100 if bar.phase == "Succeeded" else percent(bar.bytes_done, bar.bytes_total)
            table.add_row(
                Text(bar.label[:40]),
                Text(bar.phase, _STYLE.get(bar.phase, "")),
                ProgressBar(total=100, completed=complete, width=30),
                size,
                speed,
                eta or bar.note,
            )
        return Group(head, table)

    def close(self, snap: Snapshot | None) -> None:
        """Stop redrawing; print the closing lines under the last frame."""
        if snap is not None:
            self.live.update(self._render(snap))
        self.live.stop()
        if snap is not None:
            for line in final_lines(snap):
                style = _STYLE.get(snap.phase, "") if line == final_lines(snap)[0] else ""
                self.console.print(Text(line, style))


class PlainView:
    """One line per bar whenever its phase or whole per cent changes (for logs and CI)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.rates = RateMeter()
        self._last: dict[str, tuple[str, int]] = {}

    def show(self, snap: Snapshot) -> None:
        """Print the bars that changed."""
        for bar in snap.bars:
            rate = self.rates.observe(bar.label, bar.bytes_done)
            key = (bar.phase, percent(bar.bytes_done, bar.bytes_total))
            if self._last.get(bar.label) == key:
                continue
            self._last[bar.label] = key
            size, speed, eta = _figures(bar, rate)
            parts = [bar.label, bar.phase, size, speed, f"eta {eta}" if eta else "", bar.note]
            print("  ".join(p for p in parts if p), file=self.out, flush=True)

    def close(self, snap: Snapshot | None) -> None:
        """Print the closing lines."""
        if snap is not None:
            self.show(snap)
            for line in final_lines(snap):
                print(line, file=self.out, flush=True)


def snapshot_json(snap: Snapshot) -> dict[str, Any]:
    """The JSON form of one frame (one line each with -o json)."""
    return {
        "kind": snap.kind,
        "namespace": snap.namespace,
        "name": snap.name,
        "phase": snap.phase,
        "finished": snap.finished,
        "succeeded": snap.succeeded,
        "bytesDone": snap.bytes_done,
        "bytesTotal": snap.bytes_total,
        "digest": snap.digest,
        "bars": [vars(b) for b in snap.bars],
        "errors": [{**e, "suggestion": suggestion(e)} for e in snap.errors],
        "message": snap.message,
    }


class JsonView:
    """A JSON line (or YAML document) per changed frame; the last has ``finished: true``."""

    def __init__(self, out: TextIO, output: str = "json") -> None:
        self.out = out
        self.output = output
        self._last = ""

    def show(self, snap: Snapshot) -> None:
        """Print the frame when it differs from the last one printed."""
        frame = snapshot_json(snap)
        line = json.dumps(frame, sort_keys=True)
        if line == self._last:
            return
        self._last = line
        if self.output == "yaml":
            self.out.write("---\n" + yaml.safe_dump(frame, sort_keys=False))
            self.out.flush()
        else:
            print(line, file=self.out, flush=True)

    def close(self, snap: Snapshot | None) -> None:
        """Print the final frame (if not printed yet)."""
        if snap is not None:
            self.show(snap)


View = TerminalView | PlainView | JsonView


def make_view(out: TextIO, output: str | None) -> View:
    """Bars on a terminal; plain lines when piped; JSON lines (YAML documents) with -o."""
    if output in ("json", "yaml"):
        return JsonView(out, output)
    if output is None and out.isatty():
        return TerminalView(out)
    return PlainView(out)
