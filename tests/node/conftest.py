"""The operator installed as users install it, on the bed's real node pool.

``hack/testenv.sh up`` runs kube-controller-manager, kube-scheduler and kubelets (node
127.0.0.1 on cri-dockerd over the bed's dockerd, node 127.0.0.2 on containerd). These
tests build the operator image on the bed's dockerd (the local base of
tests/e2e/test_image.py: no public registry is reachable), ``helm install`` it once for
the session, and talk to it only as a user does: kubectl, helm, the Kubernetes API.

They run in their own pytest session (hack/run-tests.sh): the e2e suite's operator
processes watch every namespace and would act on these namespaces too.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.chart_helpers import CHART, helm_binary, kubectl
from tests.e2e.conftest import E2E_LABEL, kube  # noqa: F401  (the API client fixture)
from tests.e2e.test_image import IMAGE, build_operator_image, python_base, socket_gid
from tests.testbed import Testbed, free_port, require

REPO = Path(__file__).resolve().parents[2]
RUNTIME_LABEL = "imageops.dev/testenv-runtime"
# One namespace per test, all watched by the release (each test takes its own).
WORK_NAMESPACES = 12


@dataclass
class Release:
    """The session's helm release and what a test needs to reach it."""

    name: str
    namespace: str
    node: str
    work: list[str]
    set_args: list[str]
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def agent_ds(self) -> str:
        """Name of the agent DaemonSet."""
        return f"{self.name}-imageops-agent"

    @property
    def controller_deploy(self) -> str:
        """Name of the controller Deployment."""
        return f"{self.name}-imageops-controller"

    def pods(self, component: str) -> list[client.V1Pod]:
        """The release's running (not deleting) pods of one component."""
        core = client.CoreV1Api(_api())
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}"
        items = core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return [p for p in items if p.metadata and p.metadata.deletion_timestamp is None]

    def ready_pod(self, component: str) -> client.V1Pod | None:
        """The one Ready pod of a component, or None."""
        ready = [p for p in self.pods(component) if pod_ready(p)]
        return ready[0] if len(ready) == 1 else None

    def upgrade(self, *extra: str) -> float:
        """``helm upgrade --wait`` with the install's values plus ``extra``; seconds taken."""
        start = time.monotonic()
        helm(
            "upgrade",
            self.name,
            str(CHART),
            "-n",
            self.namespace,
            "--wait",
            "--timeout",
            "240s",
            *self.set_args,
            *extra,
        )
        return time.monotonic() - start


_API: list[client.ApiClient] = []


def helm(*args: str, check: bool = True, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    """helm with a timeout above its own --timeout (``--wait`` on real pods takes a while)."""
    out = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:3])} failed:\n{out.stdout}\n{out.stderr}")
    return out


def _api() -> client.ApiClient:
    return _API[0]


def pod_name(pod: client.V1Pod) -> str:
    """The pod's name."""
    assert pod.metadata is not None
    return str(pod.metadata.name)


def pod_ready(pod: client.V1Pod) -> bool:
    """Whether the pod's Ready condition is True."""
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    """The bed's Docker engine and registries."""
    return Testbed.from_env()


@pytest.fixture(scope="session")
def node_env() -> dict[str, str]:
    """The node pool's variables from .testenv/env.sh."""
    return require(
        [
            "IMAGEOPS_NODE",
            "IMAGEOPS_NODE_DOCKER_SOCKET",
            "IMAGEOPS_APISERVER_HOST",
            "IMAGEOPS_APISERVER_PORT",
            "DOCKER_HOST",
            "KUBECONFIG",
        ]
    )


@pytest.fixture(scope="session")
def operator_image(node_env: dict[str, str]) -> str:
    """The operator image, built from the Dockerfile on the bed's dockerd (the node's engine)."""
    host = node_env["DOCKER_HOST"]
    build_operator_image(host, python_base(host))
    return IMAGE


@pytest.fixture(scope="session")
def release(
    kube: client.ApiClient,  # noqa: F811
    node_env: dict[str, str],
    operator_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    """``helm install --wait`` of the chart on the real node; uninstalled at the end."""
    _API.append(kube)
    core = client.CoreV1Api(kube)
    tag = uuid.uuid4().hex[:6]
    name, namespace = f"n{tag}", f"e2e-node-{tag}"
    work = [f"e2e-node-{tag}-{i}" for i in range(WORK_NAMESPACES)]
    for ns in (namespace, *work):
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=ns, labels={E2E_LABEL: "true"}))
        )
    repo, _, image_tag = operator_image.rpartition(":")
    sets = {
        "image.repository": repo,
        "image.tag": image_tag,
        "image.pullPolicy": "Never",
        "crds.install": "false",  # the session's CRDs (tests.e2e.conftest.install_crds)
        "hostNetwork": "true",
        "apiServer.host": node_env["IMAGEOPS_APISERVER_HOST"],
        "apiServer.port": node_env["IMAGEOPS_APISERVER_PORT"],
        "agent.metricsPort": str(free_port()),
        "controller.metricsPort": str(free_port()),
        "agent.dockerSocket": node_env["IMAGEOPS_NODE_DOCKER_SOCKET"],
        "agent.dockerGid": str(socket_gid(node_env["DOCKER_HOST"])),
        # Agents only where the node's runtime is the Docker engine they drive.
        # The image is in the bed's dockerd only: both roles run on its node.
        f"agent.nodeSelector.{RUNTIME_LABEL.replace('.', chr(92) + '.')}": "docker",
        f"controller.nodeSelector.{RUNTIME_LABEL.replace('.', chr(92) + '.')}": "docker",
        "agent.backoff.base": "1",
        "agent.backoff.cap": "4",
        "agent.terminationGracePeriodSeconds": "10",
        "agent.podLabels.e2e\\.imageops\\.dev/role": "agent",
        "watchNamespaces": "{" + ",".join(work) + "}",
    }
    set_args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    rel = Release(name, namespace, node_env["IMAGEOPS_NODE"], work, set_args)
    start = time.monotonic()
    try:
        helm("install", name, str(CHART), "-n", namespace, "--wait", "--timeout", "240s", *set_args)
        rel.figures["helm_install_to_ready_s"] = round(time.monotonic() - start, 1)
        print(f"\nnode figures: {json.dumps(rel.figures)}")
        yield rel
    finally:
        _dump_logs(rel, tmp_path_factory.mktemp("node-logs"))
        helm("uninstall", name, "-n", namespace, "--wait", "--timeout", "120s", check=False)
        for ns in (namespace, *work):
            kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _dump_logs(rel: Release, out: Path) -> None:
    """Keep the pods' logs in pytest's temporary directory, for a failed run's post-mortem."""
    for component in ("agent", "controller"):
        for pod in rel.pods(component):
            name = pod_name(pod)
            text = kubectl("logs", "-n", rel.namespace, name, check=False)
            (out / f"{name}.log").write_text(text.stdout + text.stderr)


@pytest.fixture
def work_ns(release: Release) -> str:
    """This test's own namespace (one the release watches)."""
    if not release.work:
        raise AssertionError("no watched namespace left: raise WORK_NAMESPACES")
    return release.work.pop(0)
