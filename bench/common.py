"""Shared pieces of the benchmarks: settings from the environment, statistics, machine facts."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
T = TypeVar("T")


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


@dataclass(frozen=True)
class Settings:
    """What to run and how often (all from BENCH_* environment variables)."""

    repeat: int = 5
    fast_repeat: int = 20
    scale_repeat: int = 3
    p3_ops: int = 50
    p4_ops: int = 500
    p5_agents: int = 20
    p5_ops: int = 200
    only: frozenset[str] = field(default_factory=frozenset)
    sizes: frozenset[str] = field(default_factory=frozenset)
    profile: bool = False
    out_dir: Path = BENCH_DIR
    work_dir: Path = BENCH_DIR / "out"

    @classmethod
    def from_env(cls) -> Settings:
        """Read BENCH_REPEAT, BENCH_FAST_REPEAT, BENCH_P3_OPS, ... (see bench/run.sh)."""
        only = os.environ.get("BENCH_ONLY", "")
        return cls(
            repeat=_int_env("BENCH_REPEAT", 5),
            fast_repeat=_int_env("BENCH_FAST_REPEAT", 20),
            scale_repeat=_int_env("BENCH_SCALE_REPEAT", 3),
            p3_ops=_int_env("BENCH_P3_OPS", 50),
            p4_ops=_int_env("BENCH_P4_OPS", 500),
            p5_agents=_int_env("BENCH_P5_AGENTS", 20),
            p5_ops=_int_env("BENCH_P5_OPS", 200),
            only=frozenset(s.strip().lower() for s in only.split(",") if s.strip()),
            sizes=frozenset(
                s.strip() for s in os.environ.get("BENCH_SIZES", "").split(",") if s.strip()
            ),
            profile=os.environ.get("BENCH_PROFILE", "0") not in ("", "0", "false"),
            out_dir=Path(os.environ.get("BENCH_OUT", str(BENCH_DIR))),
            work_dir=Path(os.environ.get("BENCH_WORK", str(BENCH_DIR / "out"))),
        )

    def wants(self, section: str) -> bool:
        """Whether BENCH_ONLY (empty: everything) selects ``section``."""
        return not self.only or section in self.only


@dataclass(frozen=True)
class Summary:
    """Median, minimum and maximum of a series (seconds unless said otherwise)."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarise a non-empty series."""
        if not values:
            raise ValueError("no samples")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def as_dict(self) -> dict[str, float]:
        """JSON form."""
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def summarize(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Median, min and max over runs of each numeric ``key``."""
    return {k: Summary.of([float(run[k]) for run in runs]).as_dict() for k in keys}


def distribution(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, min, max and mean of a non-empty series."""
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty series."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall time of ``fn()`` in seconds, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def log(message: str) -> None:
    """Progress line on stderr-like stdout (flushed: run.sh output is often piped)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _cmd(*args: str) -> str:
    if shutil.which(args[0]) is None:
        return "n/a"
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    return (out.stdout or out.stderr).strip() or "n/a"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "n/a"


def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "n/a"


def machine_info(docker_host: str) -> dict[str, str]:
    """Facts about the machine and the parts the figures depend on."""
    kube = _cmd("kubectl", "version", "-o", "json")
    versions: dict[str, Any] = {}
    if kube.startswith("{"):
        import json

        versions = json.loads(kube)
    import kopf

    return {
        "cpus (nproc)": _cmd("nproc"),
        "cpu model": _cpu_model(),
        "memory": _mem_total(),
        "kernel": platform.release(),
        "docker client": _cmd(
            "docker", "-H", docker_host, "version", "--format", "{{.Client.Version}}"
        ),
        "dockerd": _cmd("docker", "-H", docker_host, "version", "--format", "{{.Server.Version}}"),
        "kubectl": versions.get("clientVersion", {}).get("gitVersion", "n/a"),
        "kube-apiserver": versions.get("serverVersion", {}).get("gitVersion", "n/a"),
        "registry": _cmd("docker-registry", "--version").split("\n")[0],
        "python": platform.python_version(),
        "kopf": str(getattr(kopf, "__version__", "n/a")),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def commit_info() -> dict[str, str]:
    """Short commit and whether the working tree had changes."""
    head = _cmd("git", "-C", str(REPO), "rev-parse", "--short", "HEAD")
    porcelain = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    changed = [line[3:] for line in porcelain.splitlines() if not line[3:].startswith("bench/")]
    return {"commit": head, "dirty": "yes" if changed else "no", "changed": ", ".join(changed)}
