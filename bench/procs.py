"""The operator under benchmark as a process: start it, read its memory and CPU, profile it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.harness import REPO, OperatorProcess, wait_until

# Collapsed stacks (text), 100 Hz, without pausing the process for each sample.
PYSPY_ARGS = ["--format", "raw", "--rate", "100", "--nonblocking", "--output"]
PROBE = Path(__file__).resolve().parent / "agent_probe.py"


def operator_source() -> str:
    """Where the operator's code is imported from: BENCH_OPERATOR_SRC (to try a patched copy)."""
    return os.environ.get("BENCH_OPERATOR_SRC") or str(REPO / "operator")


def _state_dir(path: Path) -> list[str]:
    """--state-dir PATH, unless the measured operator predates the option (a baseline)."""
    cli = Path(operator_source()) / "imageops" / "cli.py"
    return ["--state-dir", str(path)] if "--state-dir" in cli.read_text() else []


def bed_pids() -> dict[str, int]:
    """Process ids of the test bed's daemons (from $IMAGEOPS_TESTENV_DIR/pids)."""
    pids: dict[str, int] = {}
    root = Path(os.environ.get("IMAGEOPS_TESTENV_DIR", str(REPO / ".testenv"))) / "pids"
    for name in ("kube-apiserver", "etcd", "dockerd", "registry-open"):
        try:
            pids[name] = int((root / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
    return pids


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time so far of each named process (missing ones are left out)."""
    found: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            found[name] = Usage.of(pid).cpu_seconds
        except (OSError, KeyError, ValueError):
            continue
    return found


class BenchOperator(OperatorProcess):
    """``imageops run`` with the production defaults, restricted to the benchmark namespace.

    The harness's test settings (short leases, 1 s backoff) are replaced by the defaults.
    Scope is the benchmark namespace (``-n``), and the agents' Leases live there too, so that
    controllers of other test runs sharing the bed never hand their operations to a
    benchmark node (and ours never touches theirs). BENCH_ALL_NAMESPACES=1 uses ``-A``.
    """

    def __init__(
        self,
        node: str,
        *extra: str,
        namespace: str,
        log_dir: Path,
        probe: bool = False,
    ) -> None:
        super().__init__(node, log_dir=log_dir)
        scope = ["-A"] if os.environ.get("BENCH_ALL_NAMESPACES") == "1" else ["-n", namespace]
        self.args = [
            "--node-name",
            node,
            "--metrics-port",
            str(self.metrics_port),
            *scope,
            "--lease-namespace",
            namespace,
            *_state_dir(log_dir / f"state-{node}"),
            *extra,
        ]
        entry = [str(PROBE)] if probe else ["-m", "imageops"]
        self.command = [sys.executable, *entry, "run"]

    def start(self, wait: bool = True) -> BenchOperator:
        """Start; with ``wait``, return once /healthz answers and the watches run."""
        env = dict(os.environ, PYTHONPATH=operator_source(), PYTHONUNBUFFERED="1")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.command, *self.args], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait for /healthz, then give kopf a moment to list and start watching."""
        wait_until(self._healthy, timeout=timeout, what=f"operator {self.node} healthy")
        time.sleep(1.0)

    @property
    def pid(self) -> int:
        """Process id of the operator."""
        assert self.proc is not None
        return self.proc.pid

    def usage(self) -> Usage:
        """Memory and CPU of the process right now."""
        return Usage.of(self.pid)


@dataclass(frozen=True)
class Usage:
    """Peak and current resident memory (bytes) and CPU time (seconds) of a process."""

    peak_rss: int
    rss: int
    cpu_seconds: float

    @classmethod
    def of(cls, pid: int) -> Usage:
        """Read /proc/<pid>/status (VmHWM, VmRSS) and /proc/<pid>/stat (utime + stime)."""
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) * 1024
        stat = Path(f"/proc/{pid}/stat").read_text()
        # Fields after the command name (which may contain spaces) start at state (field 3).
        rest = stat[stat.rindex(")") + 2 :].split()
        ticks = int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)
        return cls(fields["VmHWM"], fields["VmRSS"], ticks / os.sysconf("SC_CLK_TCK"))


def py_spy() -> str:
    """The py-spy executable: on PATH, or beside this Python (scale.sh installs it in the venv).

    A profile asked for and not possible is an error, not a run without one.
    """
    beside = Path(sys.executable).parent / "py-spy"
    found = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
    if found is None:
        raise RuntimeError("BENCH_PROFILE is set but py-spy is not installed")
    return found


class Profiler:
    """py-spy record of a process for the duration of a with-block (when enabled)."""

    def __init__(self, pid: int, out: Path, enabled: bool, wall: bool = False) -> None:
        self.pid = pid
        self.out = out
        # wall: every thread, idle or not, so that waiting on the API server shows;
        # otherwise only the thread holding the GIL: where the Python CPU time goes.
        self.extra = ["--idle", "--threads"] if wall else ["--gil"]
        self.enabled = enabled
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        if self.enabled:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.proc = subprocess.Popen(
                [
                    py_spy(),
                    "record",
                    "--pid",
                    str(self.pid),
                    *self.extra,
                    *PYSPY_ARGS,
                    str(self.out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# What a thread is doing, by a frame on its stack (first match wins).
ACTIVITIES = (
    ("status write (API)", "patch_namespaced_custom_object_status"),
    ("Event post (API)", "create_namespaced_event"),
    ("other API calls", "kubernetes/client/"),
    ("Docker calls", "docker/api/"),
    ("kopf event handling", "kopf/_core/reactor/processing.py"),
)
_IDLE_LEAVES = (
    "_worker (concurrent/futures/thread.py",
    "select (selectors.py",
    "wait (threading.py",
)


def wall_breakdown(raw: Path, rate: int = 100) -> dict[str, float]:
    """Seconds of thread time per activity in a ``--idle --threads`` profile; idle left out."""
    seconds: dict[str, float] = {}
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if not stack or not weight.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        activity = next((name for name, frame in ACTIVITIES if frame in stack), None)
        if activity is None:
            if any(idle in leaf for idle in _IDLE_LEAVES):
                continue
            activity = "other"
        seconds[activity] = seconds.get(activity, 0.0) + int(weight) / rate
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


# Standard-library packages whose time belongs to their caller (json decoding for the
# Kubernetes client, asyncio for whoever scheduled the callback).
_STDLIB_DIRS = frozenset(
    {
        "asyncio",
        "concurrent",
        "json",
        "http",
        "email",
        "logging",
        "urllib",
        "importlib",
        "collections",
        "encodings",
        "ctypes",
        "xml",
        "re",
    }
)


def cpu_by_package(raw: Path) -> dict[str, float]:
    """Share of samples per package: the innermost non-stdlib frame of each stack owns it."""
    total = 0
    owners: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if not stack or not weight.isdigit():
            continue
        total += int(weight)
        owner = "python (event loop, threads)"
        for frame in reversed(stack.split(";")):
            path = frame.rpartition(" (")[2].rsplit(":", 1)[0]
            top = path.split("/", 1)[0]
            # imageops' entry points are only the roots of the event loop's stacks.
            entry = path in ("imageops/cli.py", "imageops/__main__.py")
            if "/" not in path or top in _STDLIB_DIRS or entry:
                continue
            owner = "/".join(path.split("/")[:2]) if top == "imageops" else top
            break
        owners[owner] = owners.get(owner, 0) + int(weight)
    ranked = sorted(owners.items(), key=lambda kv: -kv[1])
    return {k: n / total for k, n in ranked} if total else {}


def top_self(raw: Path, count: int = 12) -> list[tuple[str, float]]:
    """From py-spy's raw (collapsed) output: the frames most often on top, with their share."""
    total = 0
    own: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if not stack or not weight.isdigit():
            continue
        total += int(weight)
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(weight)
    ranked = sorted(own.items(), key=lambda kv: -kv[1])[:count]
    return [(frame, n / total) for frame, n in ranked] if total else []
