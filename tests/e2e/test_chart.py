"""The Helm chart (charts/imageops) against the real API server of the test bed.

``helm`` is built from the Go module proxy by hack/build-tools.sh (hack/tools/helm) and
is on PATH after ``source .testenv/env.sh``; next to it lies prometheus-operator's
ServiceMonitor CRD, so the optional ServiceMonitor is validated by the real schema too.
RBAC is proven by impersonation (tests/e2e/test_chart_rbac.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.e2e.chart_helpers import (
    CHART,
    REPO,
    Obj,
    dump,
    helm,
    helm_binary,
    kubectl,
    release_name,
    render,
)
from tests.e2e.conftest import missing
from tests.e2e.harness import wait_until

pytestmark = pytest.mark.e2e


# ---- lint, CRDs, values -----------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "watchNamespaces={apps,builds}",
            "agent.dockerGid=999",
            "metrics.serviceMonitor.enabled=true",
            "agent.allowedRegistries={registry.example.com:5000,*.example.org}",
            "crds.install=false",
        ],
    ],
)
def test_helm_lint(values: list[str]) -> None:
    sets = [a for v in values for a in ("--set", v)]
    out = helm("lint", "--strict", str(CHART), *sets)
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_chart_crds_are_the_repository_crds() -> None:
    """files/crds is crds/ byte for byte, and the rendered CRDs are those files."""
    repo = {p.name: p.read_bytes() for p in sorted((REPO / "crds").glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "files/crds").glob("*.yaml"))}
    assert chart == repo, "charts/imageops/files/crds differs from crds/: run `make chart-crds`"
    text = helm(
        "template",
        "r",
        str(CHART),
        "--set",
        "crds.keep=false",
        "--show-only",
        "templates/crds.yaml",
    ).stdout
    docs = [re.sub(r"\A# Source: [^\n]*\n", "", d) for d in text.split("---\n") if d.strip()]
    assert sorted(d.strip() for d in docs) == sorted(t.decode().strip() for t in repo.values())
    kept = [d for d in render("r", "default") if d["kind"] == "CustomResourceDefinition"]
    originals = {d["metadata"]["name"]: d for d in map(yaml.safe_load, repo.values())}
    for crd in kept:
        annotations = crd["metadata"].pop("annotations")
        assert annotations == {"helm.sh/resource-policy": "keep"}
        assert crd == originals[crd["metadata"]["name"]]
    assert len(kept) == len(originals)
    assert not [
        d
        for d in render("r", "default", "crds.install=false")
        if d["kind"] == "CustomResourceDefinition"
    ]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("agent.maxConcurrent=abc", "/agent/maxConcurrent': got string, want integer"),
        ("agent.maxConcurrent=0", "/agent/maxConcurrent': minimum"),
        ("agent.dockerGid=docker", "/agent/dockerGid"),
        ("agent.dockerGid=-1", "/agent/dockerGid': minimum"),
        ("agent.dockerBackend=shell", "/agent/dockerBackend"),
        ("agent.dockerSocket=var/run/docker.sock", "/agent/dockerSocket"),
        ("agent.allowedRegistries[0]=https://registry.example.com", "/agent/allowedRegistries/0"),
        ("agent.backoff.base=0", "/agent/backoff/base"),
        ("watchNamespaces=apps", "/watchNamespaces': got string, want array"),
        ("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0"),
        ("crds.install=yes-please", "/crds/install': got string, want boolean"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("logLevel=LOUD", "/logLevel"),
        ("metrics.port=70000", "/metrics/port': maximum"),
        ("metrics.serviceMonitor.interval=often", "/metrics/serviceMonitor/interval"),
        ("replicas=2", "additional properties 'replicas' not allowed"),
        ("agent.maxConcurency=3", "additional properties 'maxConcurency' not allowed"),
    ],
)
def test_values_schema_rejects(value: str, error: str) -> None:
    out = helm("template", "r", str(CHART), "--set", value, check=False)
    assert out.returncode != 0, f"{value} was accepted"
    assert error in out.stderr, out.stderr


def _keys(values: Obj, prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, dict):
            yield from _keys(value, f"{path}.")


def test_every_values_key_has_a_comment_and_a_row_in_the_docs() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z][\w./-]*:", line):
            before = next((x for x in reversed(lines[:i]) if x.strip()), "")
            if not before.lstrip().startswith("#"):
                uncommented.append(line.strip())
    assert not uncommented, f"values.yaml keys without a comment: {uncommented}"
    docs = (REPO / "docs/install.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    absent = [k for k in _keys(values) if f"`{k}`" not in docs and not _inside_free_map(k)]
    assert not absent, f"docs/install.md misses these values: {absent}"


def _inside_free_map(key: str) -> bool:
    # Keys inside Kubernetes objects passed through as they are (securityContext,
    # resources, nodeSelector...) are documented by their parent's row.
    parents = (
        "podSecurityContext.",
        "securityContext.",
        "controller.resources.",
        "agent.resources.",
        "agent.nodeSelector.",
        "agent.updateStrategy.",
    )
    return key.startswith(parents)


# ---- the API server accepts every rendered object ------------------------------------------


def _install_servicemonitor_crd() -> None:
    crd = Path(helm_binary()).resolve().parent / "monitoring.coreos.com_servicemonitors.yaml"
    if not crd.is_file():
        missing(f"{crd} is missing: re-run hack/build-tools.sh (make testenv-up)")
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=imageops-e2e",
        "-f",
        str(crd),
    )
    # Right after the apply the CRD may have no status yet, and kubectl wait then fails
    # at once ("<nil> is of the type <nil>") instead of waiting: retry until it waits.
    wait_until(
        lambda: (
            kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd/servicemonitors.monitoring.coreos.com",
                check=False,
            ).returncode
            == 0
        ),
        60,
        "the ServiceMonitor CRD",
    )


def _default_service_account(namespace: str) -> None:
    # kube-controller-manager makes "default" in every namespace, but maybe not yet, and
    # the ServiceAccount admission plugin rejects the helm test pod without it.
    kubectl("create", "serviceaccount", "default", "-n", namespace, check=False)


@pytest.mark.parametrize("watch", [False, True], ids=["cluster-wide", "watchNamespaces"])
def test_rendered_chart_is_accepted_by_the_api_server(
    kube: client.ApiClient, namespace: str, other_namespace: str, watch: bool
) -> None:
    _install_servicemonitor_crd()
    _default_service_account(namespace)
    values = [
        "metrics.serviceMonitor.enabled=true",
        "agent.dockerGid=999",
        "agent.allowedRegistries={registry.example.com:5000}",
        "agent.tolerations[0].operator=Exists",
        "agent.priorityClassName=system-node-critical",
    ]
    if watch:
        values.append(f"watchNamespaces={{{namespace},{other_namespace}}}")
    objects = render(release_name(), namespace, *values)
    out = kubectl(
        "apply",
        "--dry-run=server",
        "--server-side",
        "--force-conflicts",
        "--field-manager=imageops-e2e",
        "-f",
        "-",
        stdin=dump(objects),
    )
    accepted = [line for line in out.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(objects), out.stdout + out.stderr
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == sorted(
        {
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "DaemonSet",
            "Deployment",
            "Pod",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        }
    )
    roles = [o for o in objects if o["kind"] == "Role"]
    # watchNamespaces: per role one Role per watched namespace, plus the heartbeat Role.
    assert len(roles) == (6 if watch else 2)


def test_workloads_follow_the_values(namespace: str) -> None:
    objects = render(
        "r",
        namespace,
        "agent.dockerGid=0",
        "agent.maxConcurrent=3",
        "agent.dockerSocket=/run/docker.sock",
        "watchNamespaces={apps}",
        "agent.allowedRegistries={a.example.com,b.example.com:5000}",
    )
    by_kind = {o["kind"]: o for o in objects if o["kind"] in ("Deployment", "DaemonSet")}
    deploy, ds = by_kind["Deployment"], by_kind["DaemonSet"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    controller = deploy["spec"]["template"]["spec"]["containers"][0]
    assert controller["args"][:3] == ["run", "--role", "controller"]
    assert controller["args"][-2:] == ["--namespace", "apps"]
    pod = ds["spec"]["template"]["spec"]
    agent = pod["containers"][0]
    args = agent["args"]
    assert args[:3] == ["run", "--role", "agent"] and args[-2:] == ["--namespace", "apps"]
    assert args[args.index("--max-concurrent") + 1] == "3"
    assert args[args.index("--allowed-registries") + 1] == "a.example.com,b.example.com:5000"
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["DOCKER_HOST"]["value"] == "unix:///var/run/docker.sock"
    assert pod["securityContext"]["supplementalGroups"] == [0]
    socket = next(v for v in pod["volumes"] if v["name"] == "docker-socket")
    assert socket["hostPath"] == {"path": "/run/docker.sock", "type": "Socket"}
    for container in (controller, agent):
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["runAsNonRoot"] is True
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert "emptyDir" in state and "--state-dir" in agent["args"]
    no_gid = render("r", namespace)
    ds = next(o for o in no_gid if o["kind"] == "DaemonSet")
    assert "supplementalGroups" not in ds["spec"]["template"]["spec"]["securityContext"]


def test_install_upgrade_uninstall(namespace: str) -> None:
    """A real ``helm install``, ``upgrade`` and ``uninstall`` (the default image is not on
    the bed's nodes, so its pods never run: tests/node runs them; the objects and Helm's
    bookkeeping are real)."""
    release = release_name()
    # The session's CRDs are not Helm's: a release must not adopt them (crds.install=false).
    out = helm("install", release, str(CHART), "-n", namespace, "--set", "crds.install=false")
    notes = out.stdout[out.stdout.index("NOTES:") :]
    fullname = f"{release}-imageops"
    assert f"kubectl -n {namespace} rollout status deployment/{fullname}-controller" in notes
    assert f"kubectl -n {namespace} rollout status daemonset/{fullname}-agent" in notes
    assert f"helm test {release} -n {namespace}" in notes and "agent.dockerGid is not set" in notes
    try:
        helm(
            "upgrade",
            release,
            str(CHART),
            "-n",
            namespace,
            "--reuse-values",
            "--set",
            "agent.maxConcurrent=7",
            "--set",
            "agent.dockerGid=999",
        )
        ds = yaml.safe_load(
            kubectl("get", "daemonset", f"{fullname}-agent", "-n", namespace, "-o", "yaml").stdout
        )
        pod = ds["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        assert args[args.index("--max-concurrent") + 1] == "7"
        assert pod["securityContext"]["supplementalGroups"] == [999]
        revision = helm("status", release, "-n", namespace, "-o", "json").stdout
        assert '"version":2' in revision.replace(" ", "")
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "60s")
    left = kubectl(
        "get",
        "clusterrole",
        f"{fullname}-agent",
        f"{fullname}-controller",
        "--ignore-not-found",
        "-o",
        "name",
    ).stdout
    assert left.strip() == ""


def test_kind_up_script_is_clean() -> None:
    script = REPO / "hack/kind-up.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, capture_output=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        missing("shellcheck is missing (hack/testenv.sh installs it)")
    out = subprocess.run(
        [shellcheck, "-x", str(script)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout
