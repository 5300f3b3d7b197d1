"""Chart values for nodes without kube-proxy and digest-first installs, rendered by helm.

The pods they shape run for real in tests/node (the bed's kubelet); here each value's
rendering and the schema's refusals are checked one by one.
"""

from __future__ import annotations

import pytest

from tests.e2e.chart_helpers import CHART, Obj, helm, render

pytestmark = pytest.mark.e2e
DIGEST = "sha256:" + "ab" * 32


def _workloads(*values: str) -> dict[str, Obj]:
    docs = render("r", "ns", *values)
    return {d["kind"]: d for d in docs if d["kind"] in ("DaemonSet", "Deployment")}


def _container(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def _env(workload: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in _container(workload)["env"]}


def test_defaults_keep_the_pod_network_and_the_service_address() -> None:
    for workload in _workloads().values():
        spec = workload["spec"]["template"]["spec"]
        assert "hostNetwork" not in spec and "dnsPolicy" not in spec
        assert not {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"} & set(_env(workload))
        assert _container(workload)["image"] == "imageops:0.1.0"


def test_host_network_api_server_override_and_ports_per_role() -> None:
    got = _workloads(
        "hostNetwork=true",
        "apiServer.host=10.1.2.3",
        "apiServer.port=6443",
        "agent.metricsPort=9101",
        "controller.metricsPort=9102",
    )
    ports = {"DaemonSet": "9101", "Deployment": "9102"}
    for kind, workload in got.items():
        spec = workload["spec"]["template"]["spec"]
        assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
        env = _env(workload)
        assert env["KUBERNETES_SERVICE_HOST"]["value"] == "10.1.2.3"
        assert env["KUBERNETES_SERVICE_PORT"]["value"] == "6443"
        container = _container(workload)
        args = container["args"]
        assert args[args.index("--metrics-port") + 1] == ports[kind]
        assert container["ports"][0]["containerPort"] == int(ports[kind])
        assert container["readinessProbe"]["httpGet"]["port"] == "metrics"


def test_dns_policy_extra_env_pod_labels_and_digest() -> None:
    got = _workloads(
        "dnsPolicy=Default",
        f"image.digest={DIGEST}",
        "image.tag=ignored",
        "agent.extraEnv[0].name=HTTPS_PROXY",
        "agent.extraEnv[0].value=http://proxy:3128",
        "controller.extraEnv[0].name=TZ",
        "controller.extraEnv[0].value=UTC",
        "agent.podLabels.team=images",
        "controller.podLabels.tier=control",
    )
    ds, deploy = got["DaemonSet"], got["Deployment"]
    for workload in (ds, deploy):
        assert workload["spec"]["template"]["spec"]["dnsPolicy"] == "Default"
        assert _container(workload)["image"] == f"imageops@{DIGEST}"
    assert _env(ds)["HTTPS_PROXY"]["value"] == "http://proxy:3128"
    assert _env(deploy)["TZ"]["value"] == "UTC"
    assert ds["spec"]["template"]["metadata"]["labels"]["team"] == "images"
    assert deploy["spec"]["template"]["metadata"]["labels"]["tier"] == "control"
    # Extra pod labels never reach the selectors (a DaemonSet's selector is immutable).
    assert "team" not in ds["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("image.digest=latest", "/image/digest"),
        ("dnsPolicy=Sometimes", "/dnsPolicy"),
        ("apiServer.port=70000", "/apiServer/port"),
        ("agent.metricsPort=0", "/agent/metricsPort"),
        ("hostNetwork=yes", "/hostNetwork"),
    ],
)
def test_schema_rejects(value: str, error: str) -> None:
    out = helm(
        "template",
        "r",
        str(CHART),
        "--set-string" if "yes" in value else "--set",
        value,
        check=False,
    )
    assert out.returncode != 0 and error in out.stderr, out.stderr
