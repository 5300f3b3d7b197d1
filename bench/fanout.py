"""P5: many agents (one process each) on one API server; which watch events each receives."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from tests.e2e.harness import wait_until

from bench.common import Summary, distribution, log
from bench.context import Context
from bench.images import make_image, remove_image
from bench.kube import failures
from bench.procs import BenchOperator, Usage, operator_source
from bench.throughput import TINY

_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})?$")


def parse_samples(samples: dict[str, float], metric: str) -> list[tuple[dict[str, str], float]]:
    """The samples of ``metric`` with their labels, from OperatorProcess.metrics()."""
    found = []
    for key, value in samples.items():
        match = _SAMPLE.match(key)
        if not match or match["name"] != metric:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        found.append((labels, value))
    return found


def _counted(samples: dict[str, float], source: str, node: str, since: dict[str, float]) -> int:
    return _count_of(samples, source, node) - _count_of(since, source, node)


def _count_of(samples: dict[str, float], source: str, node: str) -> int:
    return int(
        sum(
            v
            for labels, v in parse_samples(samples, "imageops_bench_watch_events_total")
            if labels.get("source") == source and labels.get("node") == node
        )
    )


def p5_fanout(ctx: Context, log_dir: Path) -> dict[str, Any]:
    """Many agents on one API server: watch events each received against those for its node."""
    n_agents, count = ctx.settings.p5_agents, ctx.settings.p5_ops
    batches = ctx.settings.scale_repeat
    native = has_native_counters()
    probe = not native or os.environ.get("BENCH_P5_PROBE") == "1"
    agents = [
        BenchOperator(
            f"bench-{i:02d}",
            "--role",
            "agent",
            namespace=ctx.kube.namespace,
            log_dir=log_dir,
            probe=probe,
        )
        for i in range(n_agents)
    ]
    src = ctx.ref("p5-src")
    make_image(ctx.bed, src, TINY)
    ctx.kube.delete_operations()
    started = time.perf_counter()
    try:
        for agent in agents:
            agent.start(wait=False)
        for agent in agents:
            wait_until(agent._healthy, timeout=300, what=f"agent {agent.node}")
        ctx.warm_up([agent.node for agent in agents])
        startup = time.perf_counter() - started
        log(f"P5: {n_agents} agents up in {startup:.1f}s")
        result = _p5_run(ctx, agents, src, native)
        result["agents_startup_seconds"] = startup
        result["counted_by"] = (
            "imageops_watch_events_total{role=agent} and imageops_foreign_events_total"
            if native
            else "bench/agent_probe.py (kopf's watch stream)"
        )
        result["probe"] = probe
    finally:
        for agent in agents:
            if agent.proc and agent.proc.poll() is None:
                agent.proc.terminate()
        for agent in agents:
            agent.stop()
        refs = [ctx.ref("p5", f"op-{b}-{i}") for b in range(batches) for i in range(count)]
        for i in range(0, len(refs), 100):
            remove_image(ctx.bed, *refs[i : i + 100])
        remove_image(ctx.bed, src)
    return result


def has_native_counters() -> bool:
    """Whether the operator exports imageops_watch_events_total and _foreign_events_total."""
    metrics = Path(operator_source()) / "imageops" / "adapters" / "metrics.py"
    text = metrics.read_text() if metrics.exists() else ""
    return "imageops_watch_events_total" in text and "imageops_foreign_events_total" in text


def _native(samples: dict[str, float], metric: str, **labels: str) -> float:
    return sum(
        v
        for found, v in parse_samples(samples, metric)
        if all(found.get(k) == want for k, want in labels.items())
    )


def _agent_row(
    node: str, samples: dict[str, float], since: dict[str, float], native: bool
) -> dict[str, Any]:
    """What one agent received: during the measured run (own), and since it started (other)."""
    row: dict[str, Any] = {"node": node}
    if native:
        kind = {"resource": "imageoperations", "role": "agent"}
        received = _native(samples, "imageops_watch_events_total", **kind) - _native(
            since, "imageops_watch_events_total", **kind
        )
        foreign = _native(samples, "imageops_foreign_events_total")
        foreign_run = foreign - _native(since, "imageops_foreign_events_total")
        # Both counters count initial-list objects too: "other" covers the list as well.
        row |= {"received_own": int(received - foreign_run), "received_other": int(foreign)}
        row["listed_other"] = 0
    if "imageops_bench_watch_events_total" in "".join(samples):
        probe = {
            "probe_own": _counted(samples, "watch", "own", since),
            "probe_other": _count_of(samples, "watch", "other"),
            "probe_listed_other": _count_of(samples, "list", "other"),
        }
        row |= probe
        if not native:
            row["received_own"] = probe["probe_own"]
            row["received_other"] = probe["probe_other"]
            row["listed_other"] = probe["probe_listed_other"]
    return row


def _batch(
    ctx: Context, agents: list[BenchOperator], src: str, batch: int
) -> tuple[float, list[float], dict[str, Any]]:
    """One batch, round-robin over the agents' nodes: (time to all ready, latencies, failed)."""
    names = [f"p5-{batch}-{i:04d}" for i in range(ctx.settings.p5_ops)]
    items = [
        (
            name,
            {
                "action": "Tag",
                "image": src,
                "target": ctx.ref("p5", f"op-{batch}-{i}"),
                "nodeName": agents[i % len(agents)].node,
            },
        )
        for i, name in enumerate(names)
    ]
    starts = ctx.create_many(items, workers=16)
    done = ctx.kube.watcher.wait(names, timeout=60 + len(names))
    elapsed = max(t for t, _ in done.values()) - min(starts.values())
    return elapsed, [done[n][0] - starts[n] for n in names], failures(done)


def _p5_run(ctx: Context, agents: list[BenchOperator], src: str, native: bool) -> dict[str, Any]:
    time.sleep(1)  # the warm-up's last events reach every agent's watch
    before = ctx.kube.watcher.node_counts()
    scraped = {agent.node: agent.metrics() for agent in agents}
    batches = [_batch(ctx, agents, src, b) for b in range(ctx.settings.scale_repeat)]
    time.sleep(3)  # let the last status writes reach every watch
    after = ctx.kube.watcher.node_counts()
    rows: list[dict[str, Any]] = []
    for agent in agents:
        row = _agent_row(agent.node, agent.metrics(), scraped[agent.node], native)
        row["addressed"] = after[agent.node] - before[agent.node]
        row["rss_bytes"] = Usage.of(agent.pid).rss
        rows.append(row)
    return {
        "agents": len(agents),
        "ops": ctx.settings.p5_ops,
        "batches": len(batches),
        "failed": sum(f["count"] for _, _, failed in batches for f in failed.values()),
        "failures": [failed for _, _, failed in batches if failed],
        "seconds_to_all_ready": Summary.of([elapsed for elapsed, _, _ in batches]).as_dict(),
        "latency": distribution([x for _, latencies, _ in batches for x in latencies]),
        "per_agent": rows,
        "received_other_total": sum(r["received_other"] + r["listed_other"] for r in rows),
        "received_own_total": sum(r["received_own"] for r in rows),
        "addressed_total": sum(r["addressed"] for r in rows),
        "agents_rss_total_bytes": sum(r["rss_bytes"] for r in rows),
        "agent_rss": Summary.of([float(r["rss_bytes"]) for r in rows]).as_dict(),
    }
