"""The chart's RBAC, installed for real, proven by impersonation and by running the roles.

Each test installs the chart's ServiceAccounts, (Cluster)Roles and bindings under a
release name unique to the run, asks the API server ``kubectl auth can-i ... --as
system:serviceaccount:NS:SA`` for every permission a role needs (yes) and a list it
must not have (no), and removes the cluster-scoped objects afterwards. The last tests
run ``imageops run`` with the ServiceAccounts' own tokens: least privilege must also be
enough.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.e2e.chart_helpers import (
    dump,
    kubectl,
    make_namespace,
    release_name,
    render,
)
from tests.e2e.harness import OperatorProcess, Ops, wait_until
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e


RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
IMGOP, WF, SESS = (
    "imageoperations.imageops.dev",
    "workflows.imageops.dev",
    "imagesessions.imageops.dev",
)
CRD, LEASE = "customresourcedefinitions.apiextensions.k8s.io", "leases.coordination.k8s.io"
# (verbs, resource, subresource, where): where is "watched", "other", "release" or "cluster".
Check = tuple[str, str, str, str]

AGENT_MAY: list[Check] = [
    ("get,list,watch", IMGOP, "", "watched"),
    ("get,patch,update", IMGOP, "status", "watched"),
    ("get", SESS, "", "watched"),
    ("get", "secrets", "", "watched"),
    ("create,patch", "events", "", "watched"),
    ("get,create,update", LEASE, "", "release"),
    ("get,list,watch", CRD, "", "cluster"),
]
AGENT_MAY_NOT: list[Check] = [
    ("list,watch", "secrets", "", "watched"),
    ("create,patch,update,delete", IMGOP, "", "watched"),
    ("get,patch", WF, "", "watched"),
    ("list,watch,create,patch,delete", SESS, "", "watched"),
    ("get,create", "configmaps", "", "watched"),
    ("list,delete", LEASE, "", "release"),
    ("create,patch,update,delete", "nodes", "", "cluster"),
    ("create", "pods", "exec", "watched"),
    ("create", "pods", "", "watched"),
    ("create,patch,delete", CRD, "", "cluster"),
]
CONTROLLER_MAY: list[Check] = [
    ("get,list,watch,create,patch,update,delete", IMGOP, "", "watched"),
    ("get,patch,update", IMGOP, "status", "watched"),
    ("get,list,watch,patch,update,delete", WF, "", "watched"),
    ("get,list,watch,create,patch,update,delete", SESS, "", "watched"),
    ("get,patch,update", WF, "status", "watched"),
    ("get,patch,update", SESS, "status", "watched"),
    ("get,create,update", "configmaps", "", "watched"),
    ("create,patch", "events", "", "watched"),
    ("get,list,watch", LEASE, "", "release"),
    ("get,list,watch", "nodes", "", "cluster"),
    ("get,list,watch", CRD, "", "cluster"),
]
CONTROLLER_MAY_NOT: list[Check] = [
    ("get,list,watch", "secrets", "", "watched"),
    ("get", "secrets", "", "release"),
    ("deletecollection", IMGOP, "", "watched"),
    ("create,deletecollection", WF, "", "watched"),
    ("delete", "configmaps", "", "watched"),
    ("create,update,delete", LEASE, "", "release"),
    ("create,patch,update,delete", "nodes", "", "cluster"),
    ("create", "pods", "exec", "watched"),
    ("create", "pods", "", "watched"),
    ("create,patch,delete", CRD, "", "cluster"),
]
# Only with watchNamespaces: nothing at all outside the watched namespaces.
OUTSIDE: list[Check] = [
    ("get", "secrets", "", "other"),
    ("get,list,watch", IMGOP, "", "other"),
    ("create", "events", "", "other"),
]
# Only with watchNamespaces: kopf's namespace observer (see _helpers.tpl); never more.
NAMESPACES: list[Check] = [("list,watch", "namespaces", "", "cluster")]
NAMESPACES_NEVER: list[Check] = [("get,create,patch,delete", "namespaces", "", "cluster")]


@dataclass
class Install:
    """The chart's RBAC objects, applied for real."""

    release: str
    namespace: str  # the release namespace
    watched: str
    other: str
    watch: bool  # watchNamespaces=[watched], else cluster-wide

    def account(self, role: str) -> str:
        """The impersonation user of a role's ServiceAccount."""
        return f"system:serviceaccount:{self.namespace}:{self.release}-imageops-{role}"

    def can(self, role: str, verb: str, resource: str, subresource: str, where: str) -> bool:
        """``kubectl auth can-i`` as the role's ServiceAccount."""
        args = ["auth", "can-i", verb, resource, f"--as={self.account(role)}"]
        if subresource:
            args.append(f"--subresource={subresource}")
        if where != "cluster":
            ns = {"watched": self.watched, "other": self.other, "release": self.namespace}[where]
            args += ["-n", ns]
        out = kubectl(*args, check=False)
        assert out.stdout.strip() in ("yes", "no"), out.stdout + out.stderr
        return out.stdout.strip() == "yes"

    def verdicts(self, role: str, checks: list[Check]) -> dict[str, bool]:
        """Every (verb, resource) of the checks → allowed?, asked in parallel."""
        cases = [(v, r, s, w) for verbs, r, s, w in checks for v in verbs.split(",")]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda c: self.can(role, *c), cases))
        return {
            f"{v} {r}{'/' + s if s else ''} in {w}": a
            for (v, r, s, w), a in zip(cases, answers, strict=True)
        }


def _install(
    namespace: str, watched: str, other: str, watch: bool
) -> Generator[Install, None, None]:
    release = release_name()
    values = [f"watchNamespaces={{{watched}}}"] if watch else []
    objects = [o for o in render(release, namespace, *values) if o["kind"] in RBAC_KINDS]
    text = dump(objects)
    kubectl("apply", "-f", "-", stdin=text)
    try:
        yield Install(release, namespace, watched, other, watch)
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=text, check=False)


@pytest.fixture(params=[False, True], ids=["cluster-wide", "watchNamespaces"])
def installed(
    request: pytest.FixtureRequest, namespace: str, other_namespace: str, kube: client.ApiClient
) -> Iterator[Install]:
    """The chart's RBAC in both modes: release namespace, a watched and an unwatched one."""
    core = client.CoreV1Api(kube)
    watched = make_namespace(core)
    try:
        yield from _install(namespace, watched, other_namespace, request.param)
    finally:
        core.delete_namespace(watched)


def _expect(install: Install, role: str, checks: list[Check], allowed: bool) -> None:
    got = install.verdicts(role, checks)
    wrong = [k for k, v in got.items() if v != allowed]
    assert not wrong, f"{role} {'lacks' if allowed else 'has'}: {wrong}"


def test_agent_rbac(installed: Install) -> None:
    _expect(installed, "agent", AGENT_MAY, allowed=True)
    _expect(installed, "agent", AGENT_MAY_NOT + NAMESPACES_NEVER, allowed=False)
    _expect(installed, "agent", OUTSIDE, allowed=not installed.watch)
    _expect(installed, "agent", NAMESPACES, allowed=installed.watch)


def test_controller_rbac(installed: Install) -> None:
    _expect(installed, "controller", CONTROLLER_MAY, allowed=True)
    _expect(installed, "controller", CONTROLLER_MAY_NOT + NAMESPACES_NEVER, allowed=False)
    outside = [c for c in OUTSIDE if c[1] != "secrets"]
    _expect(installed, "controller", outside, allowed=not installed.watch)
    # No Secrets anywhere, in either mode.
    _expect(installed, "controller", [("get", "secrets", "", "other")], allowed=False)
    _expect(installed, "controller", NAMESPACES, allowed=installed.watch)


# ---- the roles run under exactly these permissions ------------------------------------------


def _kubeconfig(install: Install, role: str, path: Path) -> Path:
    """A kubeconfig holding a token of the role's ServiceAccount (TokenRequest API)."""
    sa = install.account(role).rsplit(":", 1)[1]
    token = kubectl("create", "token", sa, "-n", install.namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    config["users"] = [{"name": sa, "user": {"token": token}}]
    config["contexts"][0]["context"] = {"cluster": config["clusters"][0]["name"], "user": sa}
    config["current-context"] = config["contexts"][0]["name"] = "sa"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _forbidden(log: str) -> list[str]:
    # kopf and the Kubernetes client both name a 403 "Forbidden" (a bare "403" would also
    # match log timestamps such as 03:18:22,403).
    return [line for line in log.splitlines() if "forbidden" in line.lower()]


def _start(
    role: str,
    install: Install,
    node: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    watch: bool,
) -> OperatorProcess:
    config = _kubeconfig(install, role, tmp_path / f"{role}.kubeconfig")
    proc = OperatorProcess(node, log_dir=tmp_path)
    scope = ["--namespace", install.watched] if watch else ["--all-namespaces"]
    proc.args = [
        "--role",
        role,
        "--node-name",
        node,
        "--metrics-port",
        str(proc.metrics_port),
        *scope,
        "--backoff-base",
        "1",
        "--backoff-cap",
        "2",
        "--state-dir",
        str(tmp_path / f"state-{node}"),
    ]
    # Only the operator process gets the ServiceAccount's kubeconfig (read at start).
    with monkeypatch.context() as env:
        env.setenv("KUBECONFIG", str(config))
        # The chart sets it from the downward API: where the heartbeat Leases live.
        env.setenv("POD_NAMESPACE", install.namespace)
        return proc.start()


@pytest.mark.parametrize("watch", [False, True], ids=["cluster-wide", "watchNamespaces"])
def test_roles_work_with_only_the_chart_rbac(
    namespace: str,
    other_namespace: str,
    kube: client.ApiClient,
    testbed: Testbed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    watch: bool,
) -> None:
    """A push with credentials (Secret get, status, Events) by the agent's identity."""
    install_gen = _install(namespace, namespace, other_namespace, watch)
    install = next(install_gen)
    node = f"rbac-{install.release}"
    agent: OperatorProcess | None = None
    controller: OperatorProcess | None = None
    try:
        agent = _start("agent", install, node, tmp_path, monkeypatch, watch)
        controller = _start("controller", install, node, tmp_path, monkeypatch, watch)
        ops = Ops(kube, namespace)
        ops.secret("regcred", testbed.dockerconfigjson())
        source = testbed.make_image(testbed.unique())
        target = testbed.unique(testbed.auth_registry)
        ops.create(
            "push",
            {
                "action": "Push",
                "image": source,
                "target": target,
                "nodeName": node,
                "credentials": {"secretRef": {"name": "regcred"}},
            },
        )
        status = ops.wait_phase("push", timeout=60)
        assert status["phase"] == "Succeeded", (status, agent.log())
        assert status["digest"] == testbed.registry_digest(target, auth=True)
        wait_until(
            lambda: {"Started", "Succeeded"} <= {e["reason"] for e in ops.events("push")},
            10,
            "the agent's Events",
        )
        for running in (agent, controller):
            assert not _forbidden(running.log()), running.log()
    finally:
        for proc in (agent, controller):
            if proc is not None:
                proc.stop()
        install_gen.close()
