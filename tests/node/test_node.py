"""The chart's pods on a real node: probes, downward API, pre-pulled images that Pods use,
restarts of both roles mid-work, owner-reference garbage collection, least privilege,
kubectl logs/exec, helm upgrade and uninstall."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from functools import partial

import pytest

from imageops import __version__
from tests.e2e.chart_helpers import CHART, kubectl
from tests.e2e.harness import wait_until
from tests.faults import FakeSlowLink
from tests.node.conftest import RUNTIME_LABEL, Release, helm, pod_name, pod_ready
from tests.node.pods import (
    apply,
    delete_pods,
    get,
    listed,
    pull_operation,
    runnable_image,
    start_pod,
    wait_phase,
)
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e
MiB = 1024 * 1024
PRESENT = "already present on machine"


def _pushed(testbed: Testbed, size: int = 4096, layers: int = 1) -> str:
    """A fresh runnable image (the seed's busybox plus random layers) in the open registry
    only, not in the node's engine."""
    ref = testbed.unique()
    runnable_image(testbed, ref, size, layers)
    testbed.push_open(ref)
    # With its layers (and the build's intermediate images): a pull must transfer them.
    testbed.docker("rmi", ref)
    assert testbed.image_id(ref) is None
    return ref


@pytest.fixture
def slow_image(testbed: Testbed) -> Iterator[tuple[FakeSlowLink, str]]:
    """A 12 MiB image (3 layers) behind a link of 256 KiB/s per connection: a pull
    through it lasts ~16 s."""
    ref = _pushed(testbed, size=12 * MiB, layers=3)
    with FakeSlowLink(testbed.registry, rate=MiB // 4) as link:
        yield link, ref.replace(testbed.registry, link.address, 1)


def _pulls_done(release: Release) -> float:
    """imageops_operations_total for succeeded Pulls, from the agent pod's /metrics."""
    port = release.set_args[
        release.set_args.index(
            next(a for a in release.set_args if a.startswith("agent.metricsPort="))
        )
    ].split("=")[1]
    with urllib.request.urlopen(f"http://{release.node}:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    key = 'imageops_operations_total{action="Pull",result="succeeded"}'
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(key)]
    return values[0] if values else 0.0


def _agent(release: Release) -> str:
    pod = wait_until(lambda: release.ready_pod("agent"), 120, "one Ready agent pod")
    return pod_name(pod)


def test_pods_ready_through_probes_node_name_from_downward_api(release: Release) -> None:
    agent = wait_until(lambda: release.ready_pod("agent"), 60, "agent Ready")
    controller = wait_until(lambda: release.ready_pod("controller"), 60, "controller Ready")
    assert agent.spec.node_name == release.node and agent.spec.host_network
    for pod in (agent, controller):
        container = pod.spec.containers[0]
        assert container.readiness_probe.http_get.path == "/readyz"
        assert container.liveness_probe.http_get.path == "/healthz"
        assert pod.status.container_statuses[0].ready
    env = {e.name: e for e in agent.spec.containers[0].env}
    assert env["NODE_NAME"].value_from.field_ref.field_path == "spec.nodeName"
    seen = kubectl(
        "exec",
        "-n",
        release.namespace,
        pod_name(agent),
        "--",
        "python",
        "-c",
        "import os; print(os.environ['NODE_NAME'])",
    ).stdout.strip()
    assert seen == release.node
    # The agent's heartbeat Lease carries the node name it read.
    wait_until(
        lambda: get("lease", f"imageops-agent-{release.node}", release.namespace),
        30,
        "the agent pod's heartbeat Lease for its node",
    )
    assert release.figures["helm_install_to_ready_s"] > 0


def test_pull_by_the_agent_pod_then_a_never_pull_pod_starts(
    release: Release, work_ns: str, testbed: Testbed
) -> None:
    ref = _pushed(testbed)
    before = _pulls_done(release)
    apply(pull_operation("pull", work_ns, ref, release.node))
    status = wait_phase("imageoperation", "pull", work_ns)
    assert status["phase"] == "Succeeded", status
    assert status.get("node") == release.node
    assert testbed.image_id(ref), "the image is not in the node's engine"
    # The agent pod's own /metrics (host network) counted it.
    assert _pulls_done(release) == before + 1
    seconds, events = start_pod(work_ns, release.node, ref)
    assert any(PRESENT in e for e in events), events
    assert seconds < 60
    delete_pods(work_ns)


def test_warmup_workflow_then_pods_start_on_every_matching_node(
    release: Release, work_ns: str, testbed: Testbed
) -> None:
    ref = _pushed(testbed)
    apply(
        {
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "warm", "namespace": work_ns},
            "spec": {
                "allNodes": True,
                "nodeSelector": {RUNTIME_LABEL: "docker"},
                "steps": [{"name": "pull", "action": "Pull", "image": ref}],
            },
        }
    )
    status = wait_phase("workflow", "warm", work_ns)
    assert status["phase"] == "Succeeded", status
    nodes = [n["metadata"]["name"] for n in listed("nodes", "default", f"{RUNTIME_LABEL}=docker")]
    assert nodes == [release.node]
    for node in nodes:
        _, events = start_pod(work_ns, node, ref)
        assert any(PRESENT in e for e in events), events
    delete_pods(work_ns)


def test_agent_pod_deleted_mid_pull_daemonset_recreates_it_and_the_pull_succeeds(
    release: Release, work_ns: str, testbed: Testbed, slow_image: tuple[FakeSlowLink, str]
) -> None:
    link, ref = slow_image
    before = _agent(release)
    apply(pull_operation("slow", work_ns, ref, release.node))
    wait_phase("imageoperation", "slow", work_ns, 60, ("Running",))
    wait_until(lambda: link.bytes_down > 256 * 1024, 30, "the pull to be transferring")
    kubectl("delete", "pod", "-n", release.namespace, before, "--wait=false")
    after = wait_until(
        lambda: (p := release.ready_pod("agent")) and pod_name(p) != before and pod_name(p),
        120,
        "a new agent pod Ready",
    )
    status = wait_phase("imageoperation", "slow", work_ns, 240)
    assert status["phase"] == "Succeeded", status
    assert after != before and testbed.image_id(ref)


def test_controller_pod_deleted_mid_workflow_each_step_runs_once(
    release: Release, work_ns: str, testbed: Testbed, slow_image: tuple[FakeSlowLink, str]
) -> None:
    _, ref = slow_image
    target = testbed.unique()
    apply(
        {
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "promote", "namespace": work_ns},
            "spec": {
                "nodeName": release.node,
                "steps": [
                    {"name": "pull", "action": "Pull", "image": ref},
                    {
                        "name": "tag",
                        "action": "Tag",
                        "imageFrom": {"step": "pull"},
                        "dependsOn": ["pull"],
                        "target": target,
                    },
                ],
            },
        }
    )
    children = "imageops.dev/workflow=promote"
    wait_until(
        lambda: [
            o
            for o in listed("imageoperation", work_ns, children)
            if (o.get("status") or {}).get("phase") == "Running"
        ],
        60,
        "pull running",
    )
    old = pod_name(wait_until(lambda: release.ready_pod("controller"), 30, "controller"))
    kubectl("delete", "pod", "-n", release.namespace, old, "--wait=false")
    status = wait_phase("workflow", "promote", work_ns, 300)
    assert status["phase"] == "Succeeded", status
    ops = listed("imageoperation", work_ns, children)
    steps = sorted(c["metadata"]["labels"]["imageops.dev/step"] for c in ops)
    assert steps == ["pull", "tag"], steps
    assert all(o["status"]["phase"] == "Succeeded" for o in ops), [o["status"] for o in ops]
    new = pod_name(wait_until(lambda: release.ready_pod("controller"), 60, "controller"))
    assert new != old
    assert testbed.image_id(target) is not None
    assert testbed.image_id(target) == testbed.image_id(ref)


def test_deleting_a_workflow_deletes_its_children_by_the_garbage_collector(
    release: Release, work_ns: str, testbed: Testbed
) -> None:
    ref = _pushed(testbed)
    apply(
        {
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "gc", "namespace": work_ns},
            "spec": {
                "nodeName": release.node,
                "steps": [{"name": "pull", "action": "Pull", "image": ref}],
            },
        }
    )
    assert wait_phase("workflow", "gc", work_ns)["phase"] == "Succeeded"
    assert len(listed("imageoperation", work_ns, "imageops.dev/workflow=gc")) == 1
    # No controller runs while the Workflow goes: only kube-controller-manager's garbage
    # collector can delete the child (it follows the child's ownerReferences).
    deploy = f"deployment/{release.controller_deploy}"
    kubectl("scale", "-n", release.namespace, deploy, "--replicas=0")
    try:
        wait_until(lambda: not release.pods("controller"), 60, "no controller pod")
        kubectl("delete", "workflow", "gc", "-n", work_ns, "--wait=false")
        wait_until(
            lambda: not listed("imageoperation", work_ns, "imageops.dev/workflow=gc"),
            60,
            "the garbage collector to delete the child operation",
        )
    finally:
        kubectl("scale", "-n", release.namespace, deploy, "--replicas=1")
        wait_until(lambda: release.ready_pod("controller"), 120, "controller back")


def test_kubectl_logs_and_exec_on_the_agent_pod(release: Release) -> None:
    agent = _agent(release)
    logs = kubectl("logs", "-n", release.namespace, agent).stdout
    assert logs.strip(), "kubectl logs returned nothing"
    out = kubectl("exec", "-n", release.namespace, agent, "--", "imageops", "--version").stdout
    assert out.strip() == f"imageops {__version__}"


def test_helm_upgrade_rolls_the_agent_without_losing_a_running_operation(
    release: Release, work_ns: str, testbed: Testbed, slow_image: tuple[FakeSlowLink, str]
) -> None:
    link, ref = slow_image
    before = _agent(release)
    apply(pull_operation("during-upgrade", work_ns, ref, release.node))
    wait_phase("imageoperation", "during-upgrade", work_ns, 60, ("Running",))
    wait_until(lambda: link.bytes_down > 256 * 1024, 30, "the pull to be transferring")
    release.upgrade("--set", f"agent.podAnnotations.rollout=r{uuid.uuid4().hex[:6]}")
    assert _agent(release) != before, "helm upgrade did not roll the agent"
    status = wait_phase("imageoperation", "during-upgrade", work_ns, 240)
    assert status["phase"] == "Succeeded", status
    assert testbed.image_id(ref)


def test_pods_use_only_the_chart_service_accounts_and_nothing_is_forbidden(
    release: Release,
) -> None:
    expected = {
        "agent": f"{release.name}-imageops-agent",
        "controller": f"{release.name}-imageops-controller",
    }
    for component, account in expected.items():
        pod = wait_until(partial(release.ready_pod, component), 60, component)
        assert pod.spec.service_account_name == account
        logs = kubectl("logs", "-n", release.namespace, pod_name(pod)).stdout
        assert logs.strip()
        forbidden = [line for line in logs.splitlines() if "Forbidden" in line or " 403" in line]
        assert not forbidden, f"{component} was refused requests:\n" + "\n".join(forbidden[:5])


def test_helm_uninstall_keeps_the_crds_with_crds_keep(release: Release, work_ns: str) -> None:
    """A release owning the CRDs (adopted from the session) is uninstalled; they stay."""
    name = f"k{uuid.uuid4().hex[:6]}"
    crds = [f"{p}.imageops.dev" for p in ("imageoperations", "workflows", "imagesessions")]
    for crd in crds:
        kubectl(
            "annotate",
            "--overwrite",
            "crd",
            crd,
            f"meta.helm.sh/release-name={name}",
            f"meta.helm.sh/release-namespace={work_ns}",
        )
        kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")
    helm(
        "install",
        name,
        str(CHART),
        "-n",
        work_ns,
        "--set",
        "crds.install=true",
        "--set",
        "crds.keep=true",
        "--set",
        "agent.enabled=false",
        "--set",
        "controller.enabled=false",
        "--set",
        "metrics.service.enabled=false",
        "--set",
        "tests.enabled=false",
    )
    apply({**pull_operation("kept", work_ns, "127.0.0.1:1/none:1", "nowhere")})
    helm("uninstall", name, "-n", work_ns, "--wait")
    for crd in crds:
        assert get("crd", crd, "default") is not None, f"{crd} was deleted"
    assert get("imageoperation", "kept", work_ns) is not None
    # The session's release and its pods are untouched by this second release.
    agent = release.ready_pod("agent")
    assert agent is not None and pod_ready(agent)
