"""The promotion Workflow (pull → tag → push to the auth registry) against three CLI commands."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from bench.common import REPO, Summary, log
from bench.context import MAIN_NODE, Context
from bench.images import SIZES, make_image, remove_image
from bench.kube import PhaseWatcher, crd_exists

SECRET = "bench-auth"


def available(ctx: Context) -> tuple[bool, str]:
    """Whether the Workflow CRD exists and a controller for it is wired into the operator."""
    if not crd_exists(ctx.kube.api, "workflows.imageops.dev"):
        return False, "CRD workflows.imageops.dev not installed"
    module = REPO / "operator" / "imageops" / "workers" / "workflows.py"
    if not module.exists():
        return False, "operator/imageops/workers/workflows.py does not exist"
    runtime = (REPO / "operator" / "imageops" / "runtime" / "operator.py").read_text()
    if "workflow" not in runtime.lower():
        return False, "runtime/operator.py does not wire a Workflow controller"
    return True, "available"


def _workflow(name: str, source: str, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "imageops.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {
            "nodeName": MAIN_NODE,
            "steps": [
                {"name": "pull", "action": "Pull", "image": source, "pullPolicy": "Always"},
                {
                    "name": "tag",
                    "dependsOn": ["pull"],
                    "action": "Tag",
                    "image": source,
                    "target": target,
                },
                {
                    "name": "push",
                    "dependsOn": ["tag"],
                    "action": "Push",
                    "image": target,
                    "credentials": {"secretRef": {"name": SECRET}},
                },
            ],
        },
    }


def promotion(ctx: Context) -> dict[str, Any]:
    """Create → Succeeded of the Workflow, against docker pull + tag + push (logged in)."""
    bed, kube = ctx.bed, ctx.kube
    kube.ops.secret(SECRET, bed.dockerconfigjson())
    watcher = PhaseWatcher(kube.api, kube.namespace, "workflows")
    operator_times: list[float] = []
    cli_times: list[float] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as config_dir:
        # The CLI's login is set-up, not part of the measured commands.
        ctx.bed.docker(
            "--config",
            config_dir,
            "login",
            "-u",
            bed.auth_user,
            "--password-stdin",
            bed.auth_registry,
            input_bytes=bed.auth_password.encode(),
        )
        for rep in range(ctx.settings.repeat):
            log(f"workflows: repetition {rep + 1}/{ctx.settings.repeat}")
            seconds, failure = _operator_round(ctx, watcher, rep)
            if failure:
                failures.append(failure)
            else:
                operator_times.append(seconds)
            cli_times.append(_cli_round(ctx, config_dir, rep))
    watcher.stop()
    result: dict[str, Any] = {
        "samples": {"operator": operator_times, "cli": cli_times},
        "cli": Summary.of(cli_times).as_dict(),
        "failures": failures,
    }
    if operator_times:
        result["operator"] = Summary.of(operator_times).as_dict()
        result["ratio"] = result["operator"]["median"] / result["cli"]["median"]
    return result


def _fresh_source(ctx: Context, name: str) -> str:
    ref = ctx.ref(name)
    make_image(ctx.bed, ref, SIZES[0])
    ctx.cli("push", ref)
    remove_image(ctx.bed, ref)
    return ref


def _operator_round(ctx: Context, watcher: PhaseWatcher, rep: int) -> tuple[float, str | None]:
    source = _fresh_source(ctx, f"wf-{rep}-op")
    target = ctx.ref(f"wf-{rep}-op", registry=ctx.bed.auth_registry)
    name = f"promote-{rep}"
    body = _workflow(name, source, target)
    start = time.perf_counter()
    ctx.kube.custom.create_namespaced_custom_object(
        "imageops.dev", "v1alpha1", ctx.kube.namespace, "workflows", body
    )
    end, obj = watcher.wait([name], timeout=600)[name]
    remove_image(ctx.bed, source, target)
    status = obj.get("status") or {}
    if status.get("phase") != "Succeeded":
        return 0.0, f"{name}: {status.get('phase')}: {status.get('message')}"
    return end - start, None


def _cli_round(ctx: Context, config_dir: str, rep: int) -> float:
    source = _fresh_source(ctx, f"wf-{rep}-cli")
    target = ctx.ref(f"wf-{rep}-cli", registry=ctx.bed.auth_registry)
    seconds = (
        ctx.cli("pull", source)
        + ctx.cli("tag", source, target)
        + ctx.cli("--config", config_dir, "push", target)
    )
    remove_image(ctx.bed, source, target)
    return seconds
