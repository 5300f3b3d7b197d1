"""A real Prometheus (Debian's package) on a loopback port, scraping the bed's operators.

Started by the tests that need it, with its own data directory, and stopped after them.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.chart_helpers import CHART, helm
from tests.e2e.conftest import missing
from tests.e2e.harness import wait_until
from tests.testbed import free_port

Obj = dict[str, Any]
DASHBOARD = CHART / "files/dashboards/imageops.json"


def binary(name: str) -> str:
    """prometheus or promtool (package prometheus, installed by hack/testenv.sh)."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        missing(f"{name} is not installed (Debian package prometheus; hack/testenv.sh up)")
    return path


def chart_rules(*values: str) -> Obj:
    """The rule groups of the chart's PrometheusRule (spec), rendered by helm."""
    sets = [a for v in ("metrics.prometheusRule.enabled=true", *values) for a in ("--set", v)]
    text = helm(
        "template", "r", str(CHART), *sets, "--show-only", "templates/prometheusrule.yaml"
    ).stdout
    return dict(yaml.safe_load(text)["spec"])


def live_rules(rules: Obj) -> Obj:
    """The same rules with ``for: 0s``: the live test cannot wait the real 5-10 minutes.

    Only the wait changes; every expression, label and annotation is the chart's.
    """
    groups = []
    for group in rules["groups"]:
        fast = [{**rule, "for": "0s"} for rule in group["rules"]]
        groups.append({**group, "interval": "1s", "rules": fast})
    return {"groups": groups}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of the dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


class Prometheus:
    """``prometheus`` scraping ``targets`` every second, evaluating ``rules`` every second."""

    def __init__(self, workdir: Path, targets: list[str], rules: Obj | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        config: Obj = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "imageops", "static_configs": [{"targets": targets}]}],
        }
        if rules is not None:
            (workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
            config["rule_files"] = [str(workdir / "rules.yaml")]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        """Start and wait until ready and every target has been scraped once."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=60, what="prometheus ready")
        wait_until(
            lambda: self.query("up") and all(v == 1 for _, v in self.values("up")),
            timeout=30,
            what="every target up",
        )
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (then SIGKILL): only the process this object started."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[Obj]:
        """An instant query's result vector (the HTTP API; a bad expression fails)."""
        return list(self._get("/api/v1/query", query=expr)["result"])

    def values(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of each sample of an instant query."""
        return [(r["metric"], float(r["value"][1])) for r in self.query(expr)]

    def alerts(self) -> list[Obj]:
        """Active alerts (pending and firing)."""
        return list(self._get("/api/v1/alerts")["alerts"])

    def firing(self, name: str) -> list[Obj]:
        """The firing alerts called ``name``."""
        return [
            a for a in self.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"
        ]


def finite(values: list[tuple[dict[str, str], float]]) -> list[tuple[dict[str, str], float]]:
    """Samples that are numbers (not NaN, not infinite)."""
    return [(m, v) for m, v in values if math.isfinite(v)]


def settle(seconds: float = 3.0) -> None:
    """Let a few scrapes and rule evaluations happen (both every second)."""
    time.sleep(seconds)
