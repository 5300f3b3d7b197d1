"""The real node (hack/lib/testenv-node.sh): helm install → Ready, Pod start with the image
pre-pulled by imageops against the kubelet pulling it, and resident memory of the node's
components and of the operator's pods."""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.chart_helpers import CHART, kubectl
from tests.e2e.test_image import IMAGE, _docker, build_operator_image, python_base, socket_gid
from tests.node.conftest import RUNTIME_LABEL, helm
from tests.node.pods import apply, pull_operation, runnable_image, start_pod, wait_phase
from tests.testbed import free_port, require

from bench.common import Summary, log
from bench.context import Context

MB = 1_000_000
NODE_COMPONENTS = (
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet-docker",
    "cri-dockerd",
    "kubelet-containerd",
    "containerd",
)


def p6_node(ctx: Context) -> dict[str, Any]:
    """helm install → Ready (BENCH_SCALE_REPEAT runs), Pod start pre-pulled vs kubelet pull
    of a 50 MB, 10-layer image (BENCH_REPEAT runs), RSS of the node and the operator."""
    env = require(
        [
            "IMAGEOPS_NODE",
            "IMAGEOPS_NODE_DOCKER_SOCKET",
            "IMAGEOPS_APISERVER_HOST",
            "IMAGEOPS_APISERVER_PORT",
            "DOCKER_HOST",
            "IMAGEOPS_TESTENV_DIR",
        ]
    )
    host, node = env["DOCKER_HOST"], env["IMAGEOPS_NODE"]
    started = time.monotonic()
    build_operator_image(host, python_base(host))
    log(f"node: operator image built in {time.monotonic() - started:.0f}s")
    rel, work = f"bn{ctx.run_id}", f"bench-node-{ctx.run_id}"
    for ns in (rel, work):
        kubectl("create", "namespace", ns)
    sets = _values(env, work, host)
    try:
        installs = []
        for i in range(ctx.settings.scale_repeat):
            begin = time.monotonic()
            helm("install", rel, str(CHART), "-n", rel, "--wait", "--timeout", "240s", *sets)
            installs.append(time.monotonic() - begin)
            log(f"node: helm install -> both pods Ready in {installs[-1]:.1f}s")
            if i < ctx.settings.scale_repeat - 1:
                helm("uninstall", rel, "-n", rel, "--wait", "--timeout", "120s")
        starts = _pod_starts(ctx, work, node)
        rss = {**_component_rss(Path(env["IMAGEOPS_TESTENV_DIR"])), **_pod_rss(host, rel)}
    finally:
        helm("uninstall", rel, "-n", rel, "--wait", "--timeout", "120s", check=False)
        for ns in (rel, work):
            kubectl("delete", "namespace", ns, "--wait=false", check=False)
    return {"helm_install_ready": Summary.of(installs).as_dict(), **starts, "rss_mb": rss}


def _values(env: dict[str, str], work: str, host: str) -> list[str]:
    repo, _, tag = IMAGE.rpartition(":")
    label = RUNTIME_LABEL.replace(".", "\\.")
    sets = {
        "image.repository": repo,
        "image.tag": tag,
        "image.pullPolicy": "Never",
        "crds.install": "false",
        "hostNetwork": "true",
        "apiServer.host": env["IMAGEOPS_APISERVER_HOST"],
        "apiServer.port": env["IMAGEOPS_APISERVER_PORT"],
        "agent.metricsPort": str(free_port()),
        "controller.metricsPort": str(free_port()),
        "agent.dockerSocket": env["IMAGEOPS_NODE_DOCKER_SOCKET"],
        "agent.dockerGid": str(socket_gid(host)),
        f"agent.nodeSelector.{label}": "docker",
        f"controller.nodeSelector.{label}": "docker",
        "watchNamespaces": "{" + work + "}",
    }
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def _pod_starts(ctx: Context, work: str, node: str) -> dict[str, Any]:
    """Per run: two fresh 50 MB / 10-layer images; one pre-pulled by an ImageOperation, then
    a Pod with imagePullPolicy: Never; the other a Pod whose kubelet pulls it."""
    never, pulled, prepull = [], [], []
    for i in range(ctx.settings.repeat):
        refs = []
        for kind in ("prepulled", "kubelet"):
            ref = ctx.ref(f"pod-{kind}", f"r{i}-{uuid.uuid4().hex[:4]}")
            runnable_image(ctx.bed, ref, 50 * MB, 10)
            ctx.bed.push_open(ref)
            ctx.bed.docker("rmi", ref)
            refs.append(ref)
        begin = time.monotonic()
        apply(pull_operation(f"prepull-{i}", work, refs[0], node))
        status = wait_phase("imageoperation", f"prepull-{i}", work, 300)
        if status["phase"] != "Succeeded":
            raise RuntimeError(f"pre-pull failed: {status}")
        prepull.append(time.monotonic() - begin)
        never.append(start_pod(work, node, refs[0], "Never", 300)[0])
        pulled.append(start_pod(work, node, refs[1], "IfNotPresent", 300)[0])
        log(f"node: pod start pre-pulled {never[-1]:.2f}s, kubelet pull {pulled[-1]:.2f}s")
        kubectl(
            "delete",
            "pods",
            "--all",
            "-n",
            work,
            "--grace-period=0",
            "--force",
            "--wait=true",
            check=False,
        )
        ctx.bed.rmi(*refs)
    return {
        "pod_start_prepulled": Summary.of(never).as_dict(),
        "pod_start_kubelet_pull": Summary.of(pulled).as_dict(),
        "prepull_operation": Summary.of(prepull).as_dict(),
        "pod_start_speedup": round(statistics.median(pulled) / statistics.median(never), 2),
    }


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _component_rss(bed_dir: Path) -> dict[str, float | None]:
    """VmRSS of each bed daemon, by its pid file."""
    out: dict[str, float | None] = {}
    for name in NODE_COMPONENTS:
        pid_file = bed_dir / "pids" / f"{name}.pid"
        if pid_file.is_file():
            out[name] = _rss_mb(int(pid_file.read_text().strip()))
    return out


def _pod_rss(host: str, namespace: str) -> dict[str, float | None]:
    """VmRSS of the operator pods' main processes (their containers in the node's dockerd)."""
    out: dict[str, float | None] = {}
    ids = _docker(
        host,
        "ps",
        "-q",
        "--filter",
        f"label=io.kubernetes.pod.namespace={namespace}",
        "--filter",
        "label=io.kubernetes.docker.type=container",
    ).stdout.split()
    for cid in ids:
        fmt = '{{.State.Pid}} {{index .Config.Labels "io.kubernetes.container.name"}}'
        pid, name = _docker(host, "inspect", "--format", fmt, cid).stdout.split()
        out[f"pod {name}"] = _rss_mb(int(pid))
    return out
