"""P4: throughput of many Tag operations on one agent, against two sequential loops of tags.

The floors: the ``docker tag`` CLI loop (a process start-up per tag) and, the real
one, ``APIClient.tag`` of docker-py in a loop on one warm connection. The API
server's own ``apiserver_request_total`` counts the writes per operation.
BENCH_P4_ROLE=agent runs the operator as ``--role agent`` (the DaemonSet's
process) instead of every role.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench.common import Summary, distribution, log, summarize
from bench.context import MAIN_NODE, Context
from bench.images import ImageSize, make_image, remove_image
from bench.kube import failures
from bench.procs import (
    BenchOperator,
    Profiler,
    bed_pids,
    cpu_by_package,
    cpu_seconds,
    top_self,
    wall_breakdown,
)

TINY = ImageSize("tiny", 4096, 1)


def p4_throughput(ctx: Context, log_dir: Path) -> dict[str, Any]:
    """BENCH_SCALE_REPEAT runs, each: N Tags created at once on a fresh agent, then N CLI tags."""
    src = ctx.ref("p4-src")
    make_image(ctx.bed, src, TINY)
    runs: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    try:
        for rep in range(ctx.settings.scale_repeat):
            run = _operator_run(ctx, src, log_dir, rep, None)
            log(f"P4 run {rep + 1}: operator {run['seconds_to_all_ready']:.1f}s")
            run["cli"] = _cli_run(ctx, src, rep)
            run["ratio"] = run["seconds_to_all_ready"] / run["cli"]["seconds_total"]
            log(f"P4 run {rep + 1}: CLI loop {run['cli']['seconds_total']:.1f}s")
            run["api"] = _api_run(ctx, src, rep)
            run["api_ratio"] = run["seconds_to_all_ready"] / run["api"]["seconds_total"]
            log(f"P4 run {rep + 1}: Docker API loop {run['api']['seconds_total']:.2f}s")
            runs.append(run)
        if ctx.settings.profile:
            # Extra runs, not counted: py-spy's sampling must not colour the figures.
            for mode in ("wall", "cpu"):
                extra = _operator_run(ctx, src, log_dir, len(runs) + len(profiles), mode)
                if "profile" in extra:
                    profiles.append(extra["profile"])
    finally:
        remove_image(ctx.bed, src)
    result = _aggregate(runs, ctx.settings.p4_ops)
    if profiles:
        result["profile"] = {k: v for p in profiles for k, v in p.items()}
    return result


def _targets(ctx: Context, side: str, rep: int) -> list[str]:
    return [ctx.ref("p4", f"{side}-{rep}-{i}") for i in range(ctx.settings.p4_ops)]


def _operator_run(
    ctx: Context, src: str, log_dir: Path, rep: int, profile_mode: str | None
) -> dict[str, Any]:
    """One fresh agent process; its memory and CPU, and the bed's CPU, over the run.

    profile_mode "wall": py-spy on every thread, waits included; "cpu": running threads only.
    """
    targets = _targets(ctx, "op", rep)
    names = [f"p4-{rep}-{i:04d}" for i in range(len(targets))]
    ctx.kube.delete_operations()  # every run starts from an empty namespace
    items = [(n, ctx.spec("Tag", src, target=t)) for n, t in zip(names, targets, strict=True)]
    role = ["--role", "agent"] if os.environ.get("BENCH_P4_ROLE") == "agent" else []
    operator = BenchOperator(
        MAIN_NODE, *role, namespace=ctx.kube.namespace, log_dir=log_dir
    ).start()
    ctx.operator = operator
    pids = bed_pids() | {"agent": operator.pid, "bench client": os.getpid()}
    wall = profile_mode == "wall"
    profiled = profile_mode is not None
    profile = ctx.settings.work_dir / f"profile-p4-{profile_mode}.txt"
    try:
        ctx.warm_up([MAIN_NODE])
        idle, cpu_before = operator.usage(), cpu_seconds(pids)
        requests_before = apiserver_writes()
        with Profiler(operator.pid, profile, profiled, wall=wall):
            starts = ctx.create_many(items, workers=16)
            created = time.perf_counter()
            done = ctx.kube.watcher.wait(names, timeout=60 + len(names))
        busy, cpu_after = operator.usage(), cpu_seconds(pids)
        # The last Events are posted just after the last status: let them land.
        time.sleep(1.0)
        writes = _difference(apiserver_writes(), requests_before)
    finally:
        operator.stop()
        ctx.operator = None
        _remove(ctx, targets)
    failed = failures(done)
    run: dict[str, Any] = {
        "failed": sum(f["count"] for f in failed.values()),
        "failures": failed,
        "seconds_to_create_all": created - min(starts.values()),
        "seconds_to_all_ready": max(t for t, _ in done.values()) - min(starts.values()),
        "latency_samples": [done[n][0] - starts[n] for n in names],
        "agent_duration_samples": [
            float(obj["status"].get("durationSeconds") or 0) for _, obj in done.values()
        ],
        "peak_rss_bytes": busy.peak_rss,
        "idle_rss_bytes": idle.rss,
        "cpu_seconds": busy.cpu_seconds - idle.cpu_seconds,
        "cpu_by_process": {k: cpu_after[k] - cpu_before[k] for k in cpu_after if k in cpu_before},
        "api_writes_per_op": {k: v / len(names) for k, v in writes.items()},
    }
    if profiled and profile.exists():
        if wall:
            breakdown = wall_breakdown(profile)
            run["profile"] = {
                "wall_path": str(profile),
                "thread_ms_per_op": {k: v * 1000 / len(names) for k, v in breakdown.items()},
            }
        else:
            run["profile"] = {
                "cpu_path": str(profile),
                "cpu_top_self": top_self(profile, 8),
                "cpu_by_package": cpu_by_package(profile),
            }
    return run


def _cli_run(ctx: Context, src: str, rep: int) -> dict[str, Any]:
    """The same number of `docker tag` calls, one after the other."""
    targets = _targets(ctx, "cli", rep)
    cpu_before, children = cpu_seconds(bed_pids()), _children_cpu()
    try:
        samples = [ctx.cli("tag", src, target) for target in targets]
    finally:
        cpu_after = cpu_seconds(bed_pids())
        _remove(ctx, targets)
    return {
        "seconds_total": sum(samples),
        "samples": samples,
        "cpu_by_process": {k: cpu_after[k] - cpu_before[k] for k in cpu_after if k in cpu_before}
        | {"docker CLI processes": _children_cpu() - children},
    }


def _api_run(ctx: Context, src: str, rep: int) -> dict[str, Any]:
    """The same number of tags through docker-py's APIClient on one warm connection."""
    import docker

    targets = _targets(ctx, "api", rep)
    api = docker.APIClient(base_url=ctx.bed.docker_host)
    try:
        api.ping()  # the connection is open and warm before the clock starts
        start = time.perf_counter()
        for target in targets:
            repository, _, tag = target.rpartition(":")
            api.tag(src, repository, tag)
        total = time.perf_counter() - start
    finally:
        api.close()
        _remove(ctx, targets)
    return {"seconds_total": total, "per_tag_ms": total * 1000 / len(targets)}


def apiserver_writes() -> dict[str, float]:
    """The API server's own count of write requests so far, by verb and resource."""
    out = subprocess.run(
        ["kubectl", "get", "--raw", "/metrics"], capture_output=True, check=True, timeout=30
    ).stdout.decode()
    counts: dict[str, float] = {}
    for line in out.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("verb") not in ("POST", "PATCH", "PUT", "DELETE", "APPLY"):
            continue
        key = f"{labels['verb']} {labels.get('resource', '')}"
        if labels.get("subresource"):
            key += f"/{labels['subresource']}"
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def _difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in sorted(after.items()) if v > before.get(k, 0.0)}


def _remove(ctx: Context, refs: list[str]) -> None:
    for i in range(0, len(refs), 100):
        remove_image(ctx.bed, *refs[i : i + 100])


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def _median_by_key(maps: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for m in maps for k in m}
    return {k: median(m[k] for m in maps if k in m) for k in sorted(keys)}


def _aggregate(runs: list[dict[str, Any]], ops: int) -> dict[str, Any]:
    """Medians over the runs; latency distributions over every operation of every run."""
    latencies = [x for run in runs for x in run["latency_samples"]]
    cli = [x for run in runs for x in run["cli"]["samples"]]
    result: dict[str, Any] = {
        "ops": ops,
        "runs": len(runs),
        "failed": sum(run["failed"] for run in runs),
        "failures": [run["failures"] for run in runs if run["failures"]],
        **summarize(runs, ("seconds_to_all_ready", "seconds_to_create_all", "ratio", "api_ratio")),
        **summarize(runs, ("cpu_seconds", "idle_rss_bytes")),
        "peak_rss_bytes": max(run["peak_rss_bytes"] for run in runs),
        "latency": distribution(latencies),
        "latency_samples": latencies,
        "per_run_p50": Summary.of(
            [distribution(r["latency_samples"])["p50"] for r in runs]
        ).as_dict(),
        "per_run_p95": Summary.of(
            [distribution(r["latency_samples"])["p95"] for r in runs]
        ).as_dict(),
        "agent_duration": distribution([x for r in runs for x in r["agent_duration_samples"]]),
        "cpu_by_process": _median_by_key([run["cpu_by_process"] for run in runs]),
        "api_writes_per_op": _median_by_key([run["api_writes_per_op"] for run in runs]),
        "api": {
            "seconds_total": Summary.of([run["api"]["seconds_total"] for run in runs]).as_dict(),
        },
        "cli": {
            "seconds_total": Summary.of([run["cli"]["seconds_total"] for run in runs]).as_dict(),
            "latency": distribution(cli),
            "samples": cli,
            "cpu_by_process": _median_by_key([run["cli"]["cpu_by_process"] for run in runs]),
        },
    }
    return result
