"""Prometheus metrics and the health endpoints, served on --metrics-port.

``/metrics`` is the Prometheus exposition.
``/readyz`` (readiness) answers 200 only while the event loop is alive and every
watch the process needs is established and working (see :class:`WatchHealth`).
``/healthz`` and ``/livez`` (liveness) answer 200 while the event loop is alive
(a heartbeat it refreshes) and no needed watch has been down longer than
``--watch-down-seconds``; 503 otherwise, so the kubelet restarts a stuck process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from imageops.models.common import Action, ErrorReason, Phase
from imageops.settings import DEFAULTS

OPERATIONS = Counter(
    "imageops_operations_total", "Finished image operations.", ["action", "result"]
)
DURATION = Histogram(
    "imageops_operation_duration_seconds",
    "Wall time of finished operations, first attempt to result.",
    ["action"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
BYTES = Counter("imageops_bytes_transferred_total", "Image bytes pulled or pushed.", ["action"])
CACHE_HITS = Counter("imageops_cache_hits_total", "Pulls served by an image already present.")
IN_FLIGHT = Gauge("imageops_operations_in_flight", "Operations being worked on now.", ["action"])
RETRIES = Counter(
    "imageops_retries_total", "Retries after retryable failures.", ["action", "reason"]
)
ERRORS = Counter(
    "imageops_errors_total",
    "Failed operations by reason (one per failure; retried attempts are counted in "
    'imageops_retries_total), so the sum equals imageops_operations_total{result="failed"}.',
    ["reason"],
)
WATCH_EVENTS = Counter(
    "imageops_watch_events_total",
    "Watch events received from the API server, by resource and role (the agent's are "
    "filtered server-side to its node).",
    ["resource", "role"],
)
FOREIGN_EVENTS = Counter(
    "imageops_foreign_events_total",
    "Events an agent received for another node's operation (0 while the API server "
    "filters the watch by spec.nodeName); such operations are ignored.",
)
SHARED_PULLS = Counter(
    "imageops_shared_pulls_total", "Pulls that joined an identical pull already under way."
)
REGISTRY_ERRORS = Counter(
    "imageops_registry_errors_total",
    "Failed attempts by the registry the operation talks to and the error reason (Tag: none).",
    ["registry", "reason"],
)
STATUS_WRITES = Counter(
    "imageops_status_writes_total",
    "ImageOperation status writes of the agent, by kind: final (one per finished run), "
    "paced (first status, Queued to Running, progress: at most one per --progress-interval "
    "for the whole node) and immediate (a retry, a missing session, a further attempt).",
    ["kind"],
)
STATUS_WRITE_KINDS = ("final", "paced", "immediate")
AGENT_UP = Gauge(
    "imageops_agent_up",
    "Controller's view of each node: 1 while its agent's heartbeat Lease is live, 0 for a "
    "Node without a live agent (a Lease without a Node shows only while live).",
    ["node"],
)
OVERDUE = Gauge(
    "imageops_operations_overdue",
    "Operations still Running although every attempt allowed by timeoutSeconds and "
    "backoffLimit, with the retry delays, has had its time (controller's view).",
    # Not "namespace": Prometheus' own target label of that name would rename it.
    ["operation_namespace"],
)


def _initialise() -> None:
    """Create the series of every known label value at 0.

    A counter series that first appears at 1 hides that first increment from rate() and
    increase(): the first failure of a reason would never reach an alert.
    """
    # Every reason too, so the sum can be checked against the failed operations.
    for reason in ErrorReason:
        ERRORS.labels(str(reason))
    for kind in STATUS_WRITE_KINDS:
        STATUS_WRITES.labels(kind)
    for action in Action:
        for result in (Phase.SUCCEEDED, Phase.FAILED):
            OPERATIONS.labels(str(action), result.value.lower())


def touch_registry(registry: str) -> None:
    """Create a registry's RateLimited series at 0 when an attempt first talks to it."""
    REGISTRY_ERRORS.labels(registry, str(ErrorReason.RATE_LIMITED))


_initialise()

# Label values each gauge above currently shows, so that gone ones can be removed.
_SHOWN: dict[str, set[str]] = {"agent_up": set(), "overdue": set()}


def _replace(gauge: Gauge, key: str, values: dict[str, int]) -> None:
    for gone in _SHOWN[key] - set(values):
        gauge.remove(gone)
    for label, value in values.items():
        gauge.labels(label).set(value)
    _SHOWN[key] = set(values)


def set_agents_up(live: dict[str, bool]) -> None:
    """Publish one sample per known node; nodes no longer known disappear."""
    _replace(AGENT_UP, "agent_up", {node: int(up) for node, up in live.items()})


def set_overdue(per_namespace: dict[str, int]) -> None:
    """Overdue operations per namespace that has operations (0 when none is late)."""
    _replace(OVERDUE, "overdue", per_namespace)


def count_finished(action: str, phase: str, reason: str | None = None) -> None:
    """Count one finished operation; a failure is counted under its reason too."""
    OPERATIONS.labels(action, phase.lower()).inc()
    if phase.lower() == "failed":
        ERRORS.labels(reason or "Unknown").inc()


class Heartbeat:
    """A timestamp the event loop refreshes; stale means the loop is stuck."""

    def __init__(self, tolerance: float = 60.0) -> None:
        self.tolerance = tolerance
        self._last = time.monotonic()

    def beat(self) -> None:
        """Record that the loop is alive."""
        self._last = time.monotonic()

    def alive(self) -> bool:
        """Whether the loop beat within the tolerance."""
        return time.monotonic() - self._last < self.tolerance


class WatchHealth:
    """Whether each watch the process needs is established and working.

    A watch is named ``role/plural``; it starts down ("not started"). The
    operator reports each one up or down (with why) as it checks them; a watch
    down for longer than ``down_bound`` seconds makes the process not live.
    """

    def __init__(
        self, names: Iterable[str], down_bound: float = DEFAULTS.watch_down_seconds
    ) -> None:
        self.down_bound = down_bound
        now = time.monotonic()
        self._lock = threading.Lock()
        # name -> (down since, why); absent while the watch is up.
        self._down: dict[str, tuple[float, str]] = {n: (now, "not started") for n in names}
        self._names = set(self._down)

    def report(self, name: str, up: bool, why: str = "") -> None:
        """Record the state of one watch."""
        with self._lock:
            self._names.add(name)
            if up:
                self._down.pop(name, None)
            elif name not in self._down:
                self._down[name] = (time.monotonic(), why)
            else:
                self._down[name] = (self._down[name][0], why)

    def ready(self) -> tuple[bool, str]:
        """(every watch up, a line per watch that is not)."""
        with self._lock:
            lines = [f"{n}: down: {why}" for n, (_, why) in sorted(self._down.items())]
        return not lines, "\n".join(lines)

    def live(self) -> tuple[bool, str]:
        """(no watch down for longer than down_bound, a line per watch that is)."""
        now = time.monotonic()
        with self._lock:
            lines = [
                f"{n}: down for {now - since:.0f}s (bound {self.down_bound:.0f}s): {why}"
                for n, (since, why) in sorted(self._down.items())
                if now - since > self.down_bound
            ]
        return not lines, "\n".join(lines)


def _handler(heartbeat: Heartbeat, watches: WatchHealth) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez", "/readyz"):
                ok, why = watches.ready() if path == "/readyz" else watches.live()
                if not heartbeat.alive():
                    ok, why = False, "event loop stalled"
                body = b"ok\n" if ok else why.encode() + b"\n"
                self._reply(200 if ok else 503, body, "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every few seconds would flood the operator's log

    return Handler


def serve(
    port: int, heartbeat: Heartbeat, watches: WatchHealth, host: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """Start the metrics and health server in a daemon thread."""
    server = ThreadingHTTPServer((host, port), _handler(heartbeat, watches))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
