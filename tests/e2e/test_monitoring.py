"""The chart's dashboard and alerts against a real Prometheus scraping the real operator.

- every query of the Grafana dashboard returns data after a mixed run of operations;
- each alert's logic passes ``promtool test rules`` (tests/e2e/monitoring/alerts_test.yaml),
  and the rules pass ``promtool check rules``;
- each alert fires live: Prometheus evaluates the chart's own rules, with only ``for:``
  cut to 0s (the real waits are 5-10 minutes), against the operator's real metrics after
  the test caused the condition;
- the PrometheusRule, ServiceMonitor and dashboard ConfigMap are accepted by the API server
  with prometheus-operator's real CRDs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.e2e.chart_helpers import CHART, helm_binary, kubectl, render
from tests.e2e.fixtures import MAIN_NODE
from tests.e2e.harness import OperatorProcess, Ops, wait_until
from tests.e2e.prometheus import (
    Prometheus,
    binary,
    chart_rules,
    dashboard_queries,
    finite,
    live_rules,
    settle,
)
from tests.faults import FakeRateLimitedRegistry
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent / "monitoring"
ALERTS = (
    "ImageopsOperationsFailing",
    "ImageopsAgentMissing",
    "ImageopsOperationsStuck",
    "ImageopsRegistryRateLimited",
)
MB = 1024 * 1024
ZERO_AFTER_RUN = {"In flight", "Stuck operations", "Shared pulls"}


# ---- promtool ------------------------------------------------------------------------------


def test_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    rules = chart_rules()
    assert [r["alert"] for g in rules["groups"] for r in g["rules"]] == list(ALERTS)
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    shutil.copy(HERE / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    checked = subprocess.run(
        [binary("promtool"), "check", "rules", "alerts.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0 and "SUCCESS: 4 rules found" in checked.stdout, checked
    tested = subprocess.run(
        [binary("promtool"), "test", "rules", "alerts_test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has a promtool test and a runbook section its runbook_url points at.
    tests = (HERE / "alerts_test.yaml").read_text()
    runbook = (CHART.parents[1] / "docs/runbook.md").read_text()
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        assert f"alertname: {rule['alert']}" in tests
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == rule["alert"].lower() and f"## {rule['alert']}\n" in runbook


# ---- the chart's objects -----------------------------------------------------------------


def test_dashboard_and_rules_are_off_by_default_and_labelled_for_the_sidecar() -> None:
    kinds = {d["kind"] for d in render("r", "default")}
    assert "PrometheusRule" not in kinds and "ConfigMap" not in kinds
    objects = render(
        "r",
        "default",
        "metrics.dashboard.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.labels.release=kps",
    )
    cm = next(d for d in objects if d["kind"] == "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["imageops.json"])
    assert dash == json.loads((CHART / "files/dashboards/imageops.json").read_text())
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
    rule = next(d for d in objects if d["kind"] == "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"


def _install_prometheus_operator_crds() -> None:
    here = Path(helm_binary()).resolve().parent
    for plural in ("servicemonitors", "prometheusrules"):
        crd = here / f"monitoring.coreos.com_{plural}.yaml"
        assert crd.is_file(), f"{crd} is missing: re-run hack/build-tools.sh"
        kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=imageops-e2e",
            "-f",
            str(crd),
        )
        kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            f"crd/{plural}.monitoring.coreos.com",
        )


def test_prometheus_rule_servicemonitor_and_dashboard_are_accepted(namespace: str) -> None:
    _install_prometheus_operator_crds()
    objects = [
        d
        for d in render(
            "r",
            namespace,
            "metrics.dashboard.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "metrics.serviceMonitor.enabled=true",
        )
        if d["kind"] in ("PrometheusRule", "ServiceMonitor", "ConfigMap")
    ]
    assert sorted(d["kind"] for d in objects) == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=imageops-e2e",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump_all(objects),
    )
    stored = json.loads(
        kubectl("get", "prometheusrule", "r-imageops", "-n", namespace, "-o", "json").stdout
    )
    rendered = next(d for d in objects if d["kind"] == "PrometheusRule")
    # Nothing pruned: the CRD's schema knows every field the chart writes.
    assert stored["spec"] == rendered["spec"]


# ---- a real Prometheus -------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(
    operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory, kube_api: client.ApiClient
) -> Iterator[Prometheus]:
    """Prometheus scraping the main operator (every role), with the chart's rules (for: 0s)."""
    helm_binary()
    workdir = tmp_path_factory.mktemp("prometheus")
    server = Prometheus(
        workdir, [f"127.0.0.1:{operator.metrics_port}"], rules=live_rules(chart_rules())
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rate_limited() -> Iterator[FakeRateLimitedRegistry]:
    with FakeRateLimitedRegistry() as fake:
        yield fake


def _fresh_image(testbed: Testbed) -> str:
    ref = testbed.unique(tag="mon")
    testbed.make_image(ref, size_bytes=2 * MB, layers=2)
    testbed.push_open(ref)
    testbed.docker("rmi", "--force", ref, check=False)
    return ref


def _mixed_round(ops: Ops, testbed: Testbed, fake: FakeRateLimitedRegistry, tag: str) -> None:
    """Pull (transfer, then cache hit), tag, push, and failures of three reasons."""
    fresh = _fresh_image(testbed)
    node = {"nodeName": MAIN_NODE}
    failing = {
        f"absent-{tag}": {"action": "Pull", "image": testbed.unique(tag="absent")},
        f"down-{tag}": {"action": "Pull", "image": "127.0.0.1:1/down/x:1", "backoffLimit": 1},
        # Two refusals a second apart, so that increase() sees one even on a fresh series.
        f"throttled-{tag}": {
            "action": "Pull",
            "image": f"{fake.address}/lib/x:1",
            "backoffLimit": 1,
        },
    }
    for name, spec in {f"pull-{tag}": {"action": "Pull", "image": fresh}, **failing}.items():
        ops.create(name, {**spec, **node})
    assert ops.wait_phase(f"pull-{tag}")["phase"] == "Succeeded"
    follow = {
        f"again-{tag}": {"action": "Pull", "image": fresh, "pullPolicy": "IfNotPresent"},
        f"tag-{tag}": {"action": "Tag", "image": fresh, "target": testbed.unique(tag="t")},
        f"push-{tag}": {"action": "Push", "image": fresh, "target": testbed.unique(tag="p")},
    }
    for name, spec in follow.items():
        ops.create(name, {**spec, **node})
    for name in follow:
        assert ops.wait_phase(name)["phase"] == "Succeeded", ops.status(name)
    assert ops.status(f"again-{tag}")["cacheHit"] is True
    for name in failing:
        assert ops.wait_phase(name)["phase"] == "Failed"
    assert ops.status(f"throttled-{tag}")["lastError"]["reason"] == "RateLimited"


def test_every_dashboard_query_returns_data_after_a_mixed_run(
    prometheus: Prometheus,
    ops: Ops,
    testbed: Testbed,
    rate_limited: FakeRateLimitedRegistry,
) -> None:
    # A first round creates every labelled series; the second moves each of them while
    # Prometheus watches, so rates and quantiles have increases to work on.
    _mixed_round(ops, testbed, rate_limited, "a")
    settle()
    _mixed_round(ops, testbed, rate_limited, "b")
    settle()
    empty = []
    for title, expr in dashboard_queries():
        # Grafana fills in $__rate_interval; 5m covers the whole run here.
        values = finite(prometheus.values(expr.replace("$__rate_interval", "5m")))
        print(f"{title}: {expr}\n    -> {sorted(values, key=lambda s: -s[1])[:3]}")
        # Work in flight, stuck work and joined pulls are rightly 0 once the run is over.
        if not values or (title not in ZERO_AFTER_RUN and max(v for _, v in values) <= 0):
            empty.append(title)
    assert not empty, f"dashboard panels without data: {empty}"
    by_result = dict(
        (m["result"], v)
        for m, v in prometheus.values("sum by (result) (increase(imageops_operations_total[5m]))")
    )
    assert by_result["succeeded"] > 0 and by_result["failed"] > 0
    reasons = {m["reason"] for m, _ in prometheus.values("sum by (reason) (imageops_errors_total)")}
    assert {"NotFound", "RegistryUnavailable", "RateLimited"} <= reasons


def _fake_agent_lease(kube_api: client.ApiClient, node: str) -> str:
    """FakeAgentLease: a heartbeat for a node whose agent lost its work (a fault no real
    agent produces on demand): the controller sees the node live, nobody runs the work."""
    coordination = client.CoordinationV1Api(kube_api)
    namespace = os.environ.get("POD_NAMESPACE") or "default"
    coordination.create_namespaced_lease(
        namespace,
        client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=f"imageops-agent-{node}", labels={"imageops.dev/agent-node": node}
            ),
            spec=client.V1LeaseSpec(
                holder_identity=node, lease_duration_seconds=3600, renew_time=datetime.now(UTC)
            ),
        ),
    )
    return namespace


def test_each_alert_fires_live(
    prometheus: Prometheus,
    ops: Ops,
    testbed: Testbed,
    rate_limited: FakeRateLimitedRegistry,
    kube_api: client.ApiClient,
    namespace: str,
) -> None:
    core = client.CoreV1Api(kube_api)
    coordination = client.CoordinationV1Api(kube_api)
    suffix = uuid.uuid4().hex[:6]
    lonely, ghost = f"e2e-mon-noagent-{suffix}", f"e2e-mon-ghost-{suffix}"
    # Agent missing: a Node without any agent.
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=lonely)))
    lease_ns = _fake_agent_lease(kube_api, ghost)
    try:
        # Failing and rate-limited: a round of work with failures of three reasons.
        _mixed_round(ops, testbed, rate_limited, "live")
        # Stuck: Running since an hour ago on a "live" node that never ends it (1 s timeout).
        ops.create(
            "stuck",
            {
                "action": "Pull",
                "image": "127.0.0.1:1/x:1",
                "nodeName": ghost,
                "timeoutSeconds": 1,
                "backoffLimit": 0,
            },
        )
        started = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        ops.custom.patch_namespaced_custom_object_status(
            "imageops.dev",
            "v1alpha1",
            namespace,
            "imageoperations",
            "stuck",
            {
                "status": {
                    "phase": "Running",
                    "startTime": started,
                    "attempts": 1,
                    "observedGeneration": 1,
                    "node": ghost,
                }
            },
        )
        expected = {
            "ImageopsOperationsFailing": ("reason", {"NotFound", "RateLimited"}),
            "ImageopsAgentMissing": ("node", {lonely}),
            "ImageopsOperationsStuck": ("operation_namespace", {namespace}),
            "ImageopsRegistryRateLimited": ("registry", {rate_limited.address}),
        }
        fired = {}
        for alert, (label, values) in expected.items():

            def seen(alert: str = alert, label: str = label, values: set[str] = values) -> bool:
                fired[alert] = prometheus.firing(alert)
                return values <= {a["labels"].get(label) for a in fired[alert]}

            wait_until(seen, timeout=60, what=f"{alert} firing for {values}")
            print(f"{alert} firing: {[a['labels'] for a in fired[alert]]}")
        assert MAIN_NODE not in {a["labels"]["node"] for a in fired["ImageopsAgentMissing"]}
        limited = {a["labels"]["registry"] for a in fired["ImageopsRegistryRateLimited"]}
        assert testbed.registry not in limited
        assert ops.status("stuck")["phase"] == "Running"
    finally:
        core.delete_node(lonely)
        coordination.delete_namespaced_lease(f"imageops-agent-{ghost}", lease_ns)
