"""Scale benchmark: a warm-up Workflow fanned out to N nodes (N = 10, 100, 1000).

For each N, in a namespace of its own: N Node objects in one pool, of which
BENCH_SCALE_REAL (2) run a real agent (``imageops run --role agent`` on the bed's
dockerd) and the rest are simulated by one FakeAgentFleet process (bench/fleet.py)
with heartbeat Leases (bench/fleet_nodes.py); the real controller
(``imageops run --role controller``, production defaults) runs as a process of
its own, started fresh for each N. One Workflow (3 steps: pull, then two tags of
the pulled digest; parallelism 100, failFast false, ceil(1% of N) nodes failing)
is applied and timed to its final phase. Measured, for each N: the Workflow's
status size (largest seen and final), the controller's writes from the API
server's apiserver_request_total (per child and per node), the controller's
VmHWM and CPU seconds, and apply → all children created and last child done →
Workflow final. Writes bench/out/scale.json; bench/scale_report.py renders it.

    python -m bench.scale      (bench/scale.sh prepares the bed; make bench-scale)
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from bench import scale_metrics as am
from bench.common import BENCH_DIR, REPO, log, machine_info
from bench.fleet import failing_nodes
from bench.fleet_nodes import FakeNodePool, node_names
from bench.kube import BenchKube, PhaseWatcher
from bench.procs import (
    BenchOperator,
    Profiler,
    Usage,
    bed_pids,
    cpu_by_package,
    cpu_seconds,
    operator_source,
    top_self,
)
from bench.scale_timeline import timeline

POOL_LABEL = "bench.imageops.dev/pool"
CONTROLLER_NODE = "scale-controller"
WORKFLOW = "warmup"


@dataclass(frozen=True)
class ScaleSettings:
    """BENCH_SCALE_* environment variables (see bench/scale.sh)."""

    sizes: tuple[int, ...] = (10, 100, 1000)
    real_agents: int = 2
    parallelism: int = 100
    failing_rate: float = 0.01
    latency: str = "lognormal:0.5,0.5"
    lease_duration: int = 60
    timeout: float = 900.0
    profile: bool = False

    @classmethod
    def from_env(cls) -> ScaleSettings:
        """Read the environment."""
        env = os.environ.get
        sizes = tuple(int(s) for s in env("BENCH_SCALE_NODES", "10,100,1000").split(",") if s)
        return cls(
            sizes=sizes,
            real_agents=int(env("BENCH_SCALE_REAL", "2")),
            parallelism=int(env("BENCH_SCALE_PARALLELISM", "100")),
            failing_rate=float(env("BENCH_SCALE_FAILING", "0.01")),
            latency=env("BENCH_SCALE_LATENCY", "lognormal:0.5,0.5"),
            timeout=float(env("BENCH_SCALE_TIMEOUT", "900")),
            profile=env("BENCH_PROFILE", "0") not in ("", "0", "false"),
        )


def _status_bytes(obj: dict[str, Any]) -> int:
    return len(json.dumps(obj.get("status") or {}, separators=(",", ":")))


class WorkflowWatcher(PhaseWatcher):
    """The Workflow's watch: when it became final, and how large its status grew."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.max_status_bytes = 0
        self.max_object_bytes = 0
        self.versions = 0
        super().__init__(api, namespace, plural="workflows")

    def _seen(self, obj: dict[str, Any]) -> None:
        self.versions += 1
        self.max_status_bytes = max(self.max_status_bytes, _status_bytes(obj))
        self.max_object_bytes = max(
            self.max_object_bytes, len(json.dumps(obj, separators=(",", ":")))
        )
        super()._seen(obj)


def workflow_spec(settings: ScaleSettings, pool: str, image: str, target: str) -> dict[str, Any]:
    """The warm-up: pull, then tag the pulled digest twice (warm, then stable)."""
    return {
        "allNodes": True,
        "nodeSelector": {POOL_LABEL: pool},
        "parallelism": settings.parallelism,
        "failFast": False,
        "steps": [
            {"name": "pull", "action": "Pull", "image": image},
            {
                "name": "tag",
                "action": "Tag",
                "imageFrom": {"step": "pull"},
                "target": f"{target}:warm",
                "force": True,
            },
            {
                "name": "stable",
                "action": "Tag",
                "imageFrom": {"step": "pull"},
                "dependsOn": ["tag"],
                "target": f"{target}:stable",
                "force": True,
            },
        ],
    }


class FleetProcess:
    """bench/fleet.py as a process, for the simulated nodes."""

    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        nodes: list[str],
        failing: set[str],
        latency: str,
        log_dir: Path,
    ) -> None:
        nodes_file = log_dir / f"fleet-nodes-{namespace}.txt"
        nodes_file.write_text("\n".join(nodes))
        failing_file = log_dir / f"fleet-failing-{namespace}.txt"
        failing_file.write_text("\n".join(sorted(failing)))
        self.stderr = (log_dir / f"fleet-{namespace}.log").open("ab")
        env = dict(os.environ, PYTHONPATH=f"{REPO}:{operator_source()}", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fleet", "--kubeconfig", kubeconfig,
             "--namespace", namespace, "--nodes-file", str(nodes_file),
             "--failing-nodes-file", str(failing_file), "--latency", latency],
            stdout=subprocess.PIPE, stderr=self.stderr, env=env, text=True,
        )  # fmt: skip
        self.counters: dict[str, int] = {}

    def wait_ready(self, timeout: float = 120) -> None:
        """Until the fleet printed "ready" (its watches run)."""
        assert self.proc.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not line or line[0].strip() != "ready":
            raise RuntimeError(f"fleet not ready after {timeout}s: {line}")

    def stop(self) -> dict[str, int]:
        """SIGTERM; its counters."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        lines = [x for x in out.splitlines() if x.startswith("{")]
        self.counters = json.loads(lines[-1]) if lines else {}
        self.stderr.close()
        return self.counters


def run_size(kubeconfig: str, n: int, settings: ScaleSettings, log_dir: Path) -> dict[str, Any]:
    """One fan-out to ``n`` nodes; every figure of the table."""
    run_id = uuid.uuid4().hex[:6]
    kube = BenchKube(kubeconfig, f"scale-{run_id}-n{n}")
    namespace, api = kube.namespace, kube.api
    pool_value = f"scale-{run_id}"
    real = [f"scale-{run_id}-real-{i}" for i in range(min(settings.real_agents, n))]
    fake = node_names(f"scale-{run_id}-sim", n - len(real))
    failing = set(failing_nodes(fake, settings.failing_rate))
    labels = {POOL_LABEL: pool_value}
    pool = FakeNodePool(api, namespace, fake, labels, settings.lease_duration)
    real_pool = FakeNodePool(api, namespace, real, labels)
    agents = [
        BenchOperator(node, "--role", "agent", namespace=namespace, log_dir=log_dir)
        for node in real
    ]
    controller = BenchOperator(
        CONTROLLER_NODE, "--role", "controller", namespace=namespace, log_dir=log_dir
    )
    fleet: FleetProcess | None = None
    log(f"scale N={n}: namespace {namespace}, {len(real)} real agents, {len(fake)} simulated")
    try:
        started = time.perf_counter()
        pool.create()
        pool.start()
        real_pool.create(leases=False)  # their agents renew their own Leases
        for agent in agents:
            agent.start(wait=False)
        fleet = FleetProcess(kubeconfig, namespace, fake, failing, settings.latency, log_dir)
        for agent in agents:
            agent.wait_ready(timeout=120)
        fleet.wait_ready()
        controller.start()
        time.sleep(4)  # the controller's node directory reads the Leases every 3 s
        setup_seconds = time.perf_counter() - started
        result = _measure(kube, controller, n, settings, pool_value, log_dir, run_id)
        result["setup_seconds"] = setup_seconds
        result["real_agents"] = len(real)
        result["simulated_nodes"] = len(fake)
        result["failing_nodes"] = len(failing)
        result["agents_rss_bytes"] = [Usage.of(a.pid).peak_rss for a in agents]
        result["fleet_usage"] = asdict(Usage.of(fleet.proc.pid))
        return result
    finally:
        controller.stop()
        for agent in agents:
            agent.stop()
        if fleet is not None:
            counters = fleet.stop()
            log(f"scale N={n}: fleet {counters}")
        pool.delete()
        real_pool.delete()
        _clean(kube)


def _clean(kube: BenchKube) -> None:
    """Delete the namespace's objects with no controller running (no per-child deletes)."""
    try:
        kube.clean()
    except Exception as exc:  # best effort: a fresh namespace per size anyway
        log(f"clean-up of {kube.namespace} failed: {exc}")


def _measure(kube: BenchKube, controller: BenchOperator, n: int, settings: ScaleSettings,
             pool_value: str, log_dir: Path, run_id: str) -> dict[str, Any]:  # fmt: skip
    """Apply the Workflow, wait for its final phase, and read every figure."""
    namespace, api = kube.namespace, kube.api
    image = os.environ["IMAGEOPS_SEED_REF"]  # in the open registry
    target = f"{os.environ['IMAGEOPS_REGISTRY']}/scale/{run_id}"
    spec = workflow_spec(settings, pool_value, image, target)
    wf_watch = WorkflowWatcher(api, namespace)
    events_before = am.events_by_instance(api, namespace)
    requests_before = am.request_totals(kube.kubeconfig)
    bed_before = cpu_seconds(bed_pids())
    usage_before = controller.usage()
    profile_out = log_dir / f"scale-controller-{n}.txt"
    with Profiler(controller.pid, profile_out, settings.profile and n == max(settings.sizes)):
        applied = time.perf_counter()
        kube.custom.create_namespaced_custom_object(
            "imageops.dev", "v1alpha1", namespace, "workflows",
            {"apiVersion": "imageops.dev/v1alpha1", "kind": "Workflow",
             "metadata": {"name": WORKFLOW}, "spec": spec},
        )  # fmt: skip
        final_at, final = wf_watch.wait([WORKFLOW], settings.timeout)[WORKFLOW]
    usage_after = controller.usage()
    time.sleep(2)  # writes the final pass started reach the counters
    requests_after = am.request_totals(kube.kubeconfig)
    bed_after = cpu_seconds(bed_pids())
    events_after = am.events_by_instance(api, namespace)
    wf_watch.stop()
    children = kube.watcher
    created = {name: min(seen.values()) for name, seen in children.phase_seen.items()}
    done_times = [t for t, _ in children.done.values()]
    requests = am.delta(requests_after, requests_before)
    new_events = events_after - events_before
    ctrl_events = new_events.get(CONTROLLER_NODE, 0)
    writes = am.controller_writes(requests, ctrl_events)
    writes.pop("POST events", None)
    agent_w = am.agent_writes(requests, sum(new_events.values()) - ctrl_events)
    status = final.get("status") or {}
    n_children = len(created)
    ctrl_total = sum(writes.values())
    result: dict[str, Any] = {
        "nodes": n,
        "phase": status.get("phase"),
        "message": str(status.get("message", ""))[:300],
        "counts": status.get("counts"),
        "node_counts": status.get("nodeCounts"),
        "children": n_children,
        "status_bytes_final": _status_bytes(final),
        "status_bytes_max": wf_watch.max_status_bytes,
        "object_bytes_max": wf_watch.max_object_bytes,
        "workflow_versions_seen": wf_watch.versions,
        "requests": requests,
        "controller_writes": writes,
        "controller_writes_total": ctrl_total,
        "controller_writes_per_child": ctrl_total / max(n_children, 1),
        "controller_writes_per_node": ctrl_total / n,
        "status_patches": sum(v for k, v in writes.items() if k.endswith("workflows/status")),
        "agent_writes": agent_w,
        "events_by_instance": dict(new_events),
        "controller_cpu_seconds": usage_after.cpu_seconds - usage_before.cpu_seconds,
        "controller_cpu_seconds_total": usage_after.cpu_seconds,
        "controller_rss_idle_bytes": usage_before.rss,
        "controller_vmhwm_bytes": usage_after.peak_rss,
        "bed_cpu_seconds": {k: bed_after[k] - bed_before.get(k, 0.0) for k in bed_after},
        "seconds_apply_to_all_created": (max(created.values()) - applied) if created else None,
        "seconds_last_child_done_to_final": (final_at - max(done_times)) if done_times else None,
        "seconds_apply_to_final": final_at - applied,
        "load_average": os.getloadavg(),
        "timeline": timeline(created, dict(children.done), applied),
    }
    if profile_out.exists():
        result["profile"] = {
            "file": str(profile_out),
            "top_self": top_self(profile_out, 15),
            "by_package": dict(list(cpu_by_package(profile_out).items())[:10]),
        }
    log(
        f"scale N={n}: {result['phase']} in {result['seconds_apply_to_final']:.1f}s, "
        f"status {result['status_bytes_max']} B max, {ctrl_total} controller writes "
        f"({result['controller_writes_per_child']:.2f}/child), controller CPU "
        f"{result['controller_cpu_seconds']:.1f}s, VmHWM {usage_after.peak_rss / 2**20:.0f} MiB"
    )
    return result


def main() -> int:
    """Run every size; write bench/out/scale.json (then bench.scale_report renders it)."""
    settings = ScaleSettings.from_env()
    kubeconfig = os.environ["KUBECONFIG"]
    work = Path(os.environ.get("BENCH_WORK", str(BENCH_DIR / "out")))
    log_dir = work / f"scale-logs-{uuid.uuid4().hex[:6]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for n in settings.sizes:
        try:
            runs.append(run_size(kubeconfig, n, settings, log_dir))
        except Exception as exc:  # report the sizes that worked
            log(f"scale N={n} failed: {exc!r}")
            errors[str(n)] = repr(exc)[:2000]
    results = {
        "settings": asdict(settings),
        "runs": runs,
        "errors": errors,
        "elapsed_seconds": time.monotonic() - started,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "machine": machine_info(os.environ.get("DOCKER_HOST", "")),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "log_dir": str(log_dir),
    }
    out = work / "scale.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    log(f"wrote {out} ({math.ceil(float(str(results['elapsed_seconds'])))} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
