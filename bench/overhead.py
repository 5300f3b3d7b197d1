"""P1 (operator overhead against the docker CLI), P2 (cache hit), P3 (pull deduplication)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.common import Summary, log, summarize
from bench.context import Context, run_cli_concurrently
from bench.images import (
    SIZES,
    ImageSize,
    absent,
    blob_fetches,
    make_image,
    remove_image,
    tag_lookups,
)
from bench.kube import failures
from bench.procs import Profiler, wall_breakdown

ACTIONS = ("pull", "push", "tag")


def _pair(
    first_operator: bool, operator: Callable[[], float], cli: Callable[[], float]
) -> tuple[float, float]:
    """Run both sides, alternating which goes first (so warm-up effects do not favour one)."""
    if first_operator:
        op = operator()
        return op, cli()
    c = cli()
    return operator(), c


def p1_overhead(ctx: Context) -> dict[str, Any]:
    """Create → Succeeded of Pull/Push/Tag against docker pull/push/tag, per image size."""
    out: dict[str, Any] = {}
    for index, size in enumerate(SIZES):
        if ctx.settings.sizes and size.label not in ctx.settings.sizes:
            continue
        samples: dict[str, dict[str, list[float]]] = {
            a: {"operator": [], "cli": []} for a in ACTIONS
        }
        blob_gets: dict[str, list[int]] = {"operator": [], "cli": []}
        for rep in range(ctx.settings.repeat):
            log(f"P1 {size.label}: repetition {rep + 1}/{ctx.settings.repeat}")
            times, gets = _p1_round(ctx, size, f"p1-{index}-{rep}", rep % 2 == 0)
            for action, (op, cli) in times.items():
                samples[action]["operator"].append(op)
                samples[action]["cli"].append(cli)
            for side, count in gets.items():
                blob_gets[side].append(count)
        out[size.label] = {
            "samples": samples,
            "blob_gets_per_pull": blob_gets,
            "phases": {
                action: _phases(
                    ctx, [f"p1-{index}-{rep}-{action}" for rep in range(ctx.settings.repeat)]
                )
                for action in ACTIONS
            },
        }
        out[size.label]["summary"] = {
            action: {side: Summary.of(values).as_dict() for side, values in sides.items()}
            | {"ratio": _ratio(sides)}
            for action, sides in samples.items()
        }
    return out


def _phases(ctx: Context, names: list[str]) -> dict[str, dict[str, float]]:
    """Median offsets from the create call to the first watch event of each phase."""
    offsets = [ctx.kube.phase_offsets(n) for n in names]
    phases = ("New", "Pending", "Running", "Succeeded")
    return {
        p: Summary.of([o[p] for o in offsets if p in o]).as_dict()
        for p in phases
        if any(p in o for o in offsets)
    }


def _ratio(sides: dict[str, list[float]]) -> float:
    return Summary.of(sides["operator"]).median / Summary.of(sides["cli"]).median


def _p1_round(
    ctx: Context, size: ImageSize, prefix: str, operator_first: bool
) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """One repetition: push two fresh images (one per side), tag them, pull one twice."""
    mine, theirs = ctx.ref(f"{prefix}-op"), ctx.ref(f"{prefix}-cli")
    make_image(ctx.bed, mine, size)
    make_image(ctx.bed, theirs, size)
    times: dict[str, tuple[float, float]] = {}
    try:
        times["push"] = _pair(
            operator_first,
            lambda: ctx.kube.run_one(f"{prefix}-push", ctx.spec("Push", mine))[0],
            lambda: ctx.cli("push", theirs),
        )
        tag_op, tag_cli = _retag(mine, "t"), _retag(theirs, "t")
        times["tag"] = _pair(
            operator_first,
            lambda: ctx.kube.run_one(f"{prefix}-tag", ctx.spec("Tag", mine, target=tag_op))[0],
            lambda: ctx.cli("tag", theirs, tag_cli),
        )
        remove_image(ctx.bed, tag_op, tag_cli, theirs)
        gets: dict[str, int] = {}

        def pulled(side: str, pull: Callable[[], float]) -> Callable[[], float]:
            def run() -> float:
                # Both sides pull the same image, each time from nothing.
                remove_image(ctx.bed, mine)
                if not absent(ctx.bed, mine):
                    raise RuntimeError(f"{mine} still present before the pull")
                offset = ctx.registry_log.mark()
                elapsed = pull()
                requests = ctx.registry_log.since(offset, ctx.repo_of(mine), settle=0)
                gets[side] = sum(blob_fetches(requests).values())
                return elapsed

            return run

        spec = ctx.spec("Pull", mine, pullPolicy="Always")
        times["pull"] = _pair(
            operator_first,
            pulled("operator", lambda: ctx.kube.run_one(f"{prefix}-pull", spec)[0]),
            pulled("cli", lambda: ctx.cli("pull", mine)),
        )
    finally:
        remove_image(ctx.bed, mine, theirs)
    return times, gets


def _retag(ref: str, tag: str) -> str:
    return f"{ref.rsplit(':', 1)[0]}:{tag}"


def p2_cache_hit(ctx: Context) -> dict[str, Any]:
    """IfNotPresent pull of a present image: create → Succeeded, in API round-trips."""
    ref = ctx.ref("p2")
    make_image(ctx.bed, ref, SIZES[0])
    ctx.cli("push", ref)  # so the local image knows its registry digest
    latencies: list[float] = []
    kubectl: list[float] = []
    python_get: list[float] = []
    _p2_loop(ctx, ref, latencies, kubectl, python_get)
    profile = _p2_profile(ctx, ref) if ctx.settings.profile else None
    remove_image(ctx.bed, ref)
    op, kc, pg = Summary.of(latencies), Summary.of(kubectl), Summary.of(python_get)
    result: dict[str, Any] = {
        "samples": {"operator": latencies, "kubectl_get": kubectl, "python_get": python_get},
        "operator": op.as_dict(),
        "kubectl_get": kc.as_dict(),
        "python_get": pg.as_dict(),
        "round_trips_kubectl": op.median / kc.median,
        "round_trips_python": op.median / pg.median,
        # Where the time goes: create → first event seen with each phase.
        "phase_offsets": _phases(ctx, [f"p2-{i}" for i in range(ctx.settings.fast_repeat)]),
        "with_credentials": _p2_credentials(ctx),
    }
    if profile is not None:
        result["profile"] = profile
    return result


P2_SECRET = "bench-p2-auth"


def _p2_credentials(ctx: Context) -> dict[str, Any]:
    """The same cache hit of a private image (auth registry), with the operation's Secret.

    The image gets to the node by a Push (so no pull record exists): the first hit asks the
    registry once with the operation's credentials, later ones find the recorded grant.
    """
    source = ctx.ref("p2auth-src")
    ref = ctx.ref("p2auth", registry=ctx.bed.auth_registry)
    make_image(ctx.bed, source, SIZES[0])
    ctx.kube.ops.secret(P2_SECRET, ctx.bed.dockerconfigjson())
    creds = {"credentials": {"secretRef": {"name": P2_SECRET}}}
    ctx.kube.run_one("p2auth-push", ctx.spec("Push", source, target=ref, **creds), timeout=120)
    latencies: list[float] = []
    for i in range(ctx.settings.fast_repeat):
        spec = ctx.spec("Pull", ref, pullPolicy="IfNotPresent", **creds)
        seconds, obj = ctx.kube.run_one(f"p2auth-{i}", spec, timeout=60)
        if not obj["status"].get("cacheHit"):
            raise RuntimeError(f"p2auth-{i} was not a cache hit: {obj['status']}")
        latencies.append(seconds)
    remove_image(ctx.bed, ref)
    remove_image(ctx.bed, source)
    return {
        "samples": latencies,
        "first": latencies[0],
        "operator": Summary.of(latencies).as_dict(),
        "operator_after_first": Summary.of(latencies[1:] or latencies).as_dict(),
    }


def _p2_profile(ctx: Context, ref: str, count: int = 200) -> dict[str, Any] | None:
    """Many cache hits in a row under py-spy (wall clock): where an operation's time goes."""
    assert ctx.operator is not None
    path = ctx.settings.work_dir / "profile-p2-wall.txt"
    spec = ctx.spec("Pull", ref, pullPolicy="IfNotPresent")
    with Profiler(ctx.operator.pid, path, True, wall=True):
        for i in range(count):
            ctx.kube.run_one(f"p2-profiled-{i}", spec, timeout=60)
    if not path.exists():
        return None
    breakdown = wall_breakdown(path)
    return {
        "wall_path": str(path),
        "ops": count,
        "thread_ms_per_op": {k: v * 1000 / count for k, v in breakdown.items()},
    }


def _p2_loop(
    ctx: Context, ref: str, latencies: list[float], kubectl: list[float], python_get: list[float]
) -> None:
    # Interleaved, so that load from elsewhere on the machine hits every series alike.
    for i in range(ctx.settings.fast_repeat):
        spec = ctx.spec("Pull", ref, pullPolicy="IfNotPresent")
        seconds, obj = ctx.kube.run_one(f"p2-{i}", spec, timeout=60)
        if not obj["status"].get("cacheHit"):
            raise RuntimeError(f"p2-{i} was not a cache hit: {obj['status']}")
        latencies.append(seconds)
        kubectl.append(ctx.kube.kubectl_get_seconds(f"p2-{i}"))
        python_get.append(ctx.kube.get_seconds(f"p2-{i}"))


def p3_dedupe(ctx: Context) -> dict[str, Any]:
    """N identical Always pulls of an absent image at once: blob GETs at the registry.

    Repeated BENCH_SCALE_REPEAT times (the image is removed from the node before each run),
    each run followed by the baseline: N concurrent `docker pull`.
    """
    size = SIZES[1]
    ref = ctx.ref("p3")
    make_image(ctx.bed, ref, size)
    ctx.cli("push", ref)
    operator_runs: list[dict[str, Any]] = []
    cli_runs: list[dict[str, Any]] = []
    try:
        for rep in range(ctx.settings.scale_repeat):
            operator_runs.append(_p3_operator(ctx, ref, rep))
            log(f"P3 run {rep + 1} operator: {_brief(operator_runs[-1])}")
            cli_runs.append(_p3_cli(ctx, ref))
            log(f"P3 run {rep + 1} CLI: {_brief(cli_runs[-1])}")
    finally:
        remove_image(ctx.bed, ref)
    keys = ("seconds", "blob_gets_total", "tag_lookups")
    return {
        "ops": ctx.settings.p3_ops,
        "layers": size.layers,
        "runs": len(operator_runs),
        "operator": {
            **summarize(operator_runs, (*keys, "shared_pulls")),
            "max_gets_per_blob": max(r["max_gets_per_blob"] for r in operator_runs),
            "blobs": max(r["blobs"] for r in operator_runs),
            "failed": sum(r["failed"] for r in operator_runs),
            "failures": [r["failures"] for r in operator_runs if r["failures"]],
            "runs": operator_runs,
        },
        "cli": {
            **summarize(cli_runs, keys),
            "max_gets_per_blob": max(r["max_gets_per_blob"] for r in cli_runs),
            "blobs": max(r["blobs"] for r in cli_runs),
            "runs": cli_runs,
        },
    }


def _brief(run: dict[str, Any]) -> str:
    return (
        f"{run['seconds']:.2f}s, {run['blob_gets_total']} blob GETs over {run['blobs']} blobs "
        f"(max {run['max_gets_per_blob']} per blob), {run['tag_lookups']} tag lookups"
    )


def _fetches(ctx: Context, offset: int, ref: str) -> dict[str, int]:
    requests = ctx.registry_log.since(offset, ctx.repo_of(ref))
    fetches = blob_fetches(requests)
    return {
        "blob_gets_total": sum(fetches.values()),
        "blobs": len(fetches),
        "max_gets_per_blob": max(fetches.values(), default=0),
        "tag_lookups": tag_lookups(requests),
    }


def _p3_operator(ctx: Context, ref: str, rep: int) -> dict[str, Any]:
    remove_image(ctx.bed, ref)
    shared_before = _metric(ctx, "imageops_shared_pulls_total")
    offset = ctx.registry_log.mark()
    names = [f"p3-{rep}-{i:03d}" for i in range(ctx.settings.p3_ops)]
    spec = ctx.spec("Pull", ref, pullPolicy="Always")
    starts = ctx.create_many([(n, spec) for n in names], workers=len(names))
    done = ctx.kube.watcher.wait(names, timeout=300)
    failed = failures(done)
    return {
        "seconds": max(t for t, _ in done.values()) - min(starts.values()),
        "failed": sum(f["count"] for f in failed.values()),
        "failures": failed,
        "shared_pulls": _metric(ctx, "imageops_shared_pulls_total") - shared_before,
        **_fetches(ctx, offset, ref),
    }


def _p3_cli(ctx: Context, ref: str) -> dict[str, Any]:
    remove_image(ctx.bed, ref)
    offset = ctx.registry_log.mark()
    seconds = run_cli_concurrently(ctx.bed, [["pull", "-q", ref]] * ctx.settings.p3_ops)
    return {"seconds": seconds, **_fetches(ctx, offset, ref)}


def _metric(ctx: Context, name: str) -> float:
    assert ctx.operator is not None
    return ctx.operator.metrics().get(name, 0.0)
