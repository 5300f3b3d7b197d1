"""Entry point of the benchmarks (``python -m bench.main``; run.sh prepares the bed first)."""

from __future__ import annotations

import json
import os
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.testbed import Testbed

from bench import fanout, node, overhead, plots, report, scale_report, throughput, workflows
from bench.common import Settings, commit_info, log, machine_info
from bench.context import MAIN_NODE, Context
from bench.images import RegistryLog
from bench.kube import BenchKube
from bench.procs import BenchOperator


def concurrent_activity() -> str:
    """Other heavy work on the machine (the figures are only comparable on a quiet one)."""
    me = os.getpid()
    counts = {"pytest": 0, "dockerd": 0, "imageops run": 0}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(proc.name) == me:
            continue
        for key in counts:
            if key in cmd and "bench" not in cmd:
                counts[key] += 1
    return ", ".join(f"{n} x {k}" for k, n in counts.items())


def _section(
    ctx: Context, name: str, fn: Callable[[], dict[str, Any]], errors: dict[str, str]
) -> None:
    if not ctx.settings.wants(name):
        return
    log(f"{name}: start")
    started = time.monotonic()
    try:
        ctx.results[name] = fn()
    except Exception:
        errors[name] = traceback.format_exc()
        log(f"{name}: FAILED\n{errors[name]}")
    log(f"{name}: done in {time.monotonic() - started:.0f}s")


def run(settings: Settings, run_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Every selected benchmark; (results, errors by section)."""
    bed = Testbed.from_env()
    kube = BenchKube(os.environ["KUBECONFIG"], f"bench-{run_id}")
    ctx = Context(
        bed,
        kube,
        settings,
        run_id,
        RegistryLog(os.environ["IMAGEOPS_REGISTRY_LOG"]),
        RegistryLog(os.environ["IMAGEOPS_AUTH_REGISTRY_LOG"]),
    )
    log_dir = settings.work_dir / f"logs-{run_id}"
    log_dir.mkdir(parents=True, exist_ok=True)
    errors: dict[str, str] = {}
    log(f"run {run_id}: namespace {kube.namespace}, logs in {log_dir}")
    try:
        if any(settings.wants(s) for s in ("p1", "p2", "p3", "workflows")):
            ctx.operator = BenchOperator(MAIN_NODE, namespace=kube.namespace, log_dir=log_dir)
            ctx.operator.start()
            try:
                ctx.warm_up([MAIN_NODE])
                _section(ctx, "p1", lambda: overhead.p1_overhead(ctx), errors)
                _section(ctx, "p2", lambda: overhead.p2_cache_hit(ctx), errors)
                _section(ctx, "p3", lambda: overhead.p3_dedupe(ctx), errors)
                _section(ctx, "workflows", lambda: _workflows(ctx), errors)
            finally:
                ctx.operator.stop()
                ctx.operator = None
        _section(ctx, "p4", lambda: throughput.p4_throughput(ctx, log_dir), errors)
        _section(ctx, "p5", lambda: fanout.p5_fanout(ctx, log_dir), errors)
        # Last: the chart's own controller and agents, on the bed's real node.
        _section(ctx, "node", lambda: node.p6_node(ctx), errors)
    finally:
        if os.environ.get("BENCH_KEEP_OBJECTS") == "1":
            log(f"keeping namespace {kube.namespace} and its objects (BENCH_KEEP_OBJECTS=1)")
        else:
            kube.clean()
    return ctx.results, errors


def _workflows(ctx: Context) -> dict[str, Any]:
    ok, why = workflows.available(ctx)
    if not ok:
        log(f"workflows: not measured (controller not available: {why})")
        return {"skipped": why}
    return workflows.promotion(ctx)


def main() -> int:
    """Run, then write results.json (work dir), results.md and the plots."""
    settings = Settings.from_env()
    partial = bool(settings.only) and "BENCH_OUT" not in os.environ
    # A partial run must not overwrite the committed results of a full one.
    out = settings.work_dir if partial else settings.out_dir
    out.mkdir(parents=True, exist_ok=True)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    machine = machine_info(os.environ.get("DOCKER_HOST", ""))
    activity = concurrent_activity()
    run_id = uuid.uuid4().hex[:6]
    results, errors = run(settings, run_id)
    results["meta"] = {
        "run_id": run_id,
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_seconds": time.monotonic() - started,
        "settings": {
            "BENCH_REPEAT": settings.repeat,
            "BENCH_FAST_REPEAT": settings.fast_repeat,
            "BENCH_P3_OPS": settings.p3_ops,
            "BENCH_P4_OPS": settings.p4_ops,
            "BENCH_P5_AGENTS": settings.p5_agents,
            "BENCH_P5_OPS": settings.p5_ops,
            "BENCH_ONLY": ",".join(sorted(settings.only)) or "all",
            "BENCH_SIZES": ",".join(sorted(settings.sizes)) or "all",
            "BENCH_OPERATOR_SRC": os.environ.get("BENCH_OPERATOR_SRC", "operator/"),
        },
        "machine": {**machine, "other processes at start": activity},
        "commit": commit_info(),
        "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "note": os.environ.get("BENCH_NOTE", ""),
        "operator_command": (
            "python -m imageops run --node-name bench-main --metrics-port <free> "
            + ("-A" if os.environ.get("BENCH_ALL_NAMESPACES") == "1" else "-n <bench namespace>")
            + " --lease-namespace <bench namespace> (P5 agents: --role agent --node-name bench-NN)"
        ),
        "errors": errors,
    }
    (settings.work_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    for path in plots.write_all(results, out):
        log(f"wrote {path}")
    previous = (out / "results.md").read_text() if (out / "results.md").exists() else ""
    # The Scale section comes from make bench-scale (bench/scale_report.py): keep it.
    (out / "results.md").write_text(scale_report.kept(previous, report.render(results)))
    log(f"wrote {out / 'results.md'}")
    if errors:
        log(f"sections failed: {', '.join(errors)}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
