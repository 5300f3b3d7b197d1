"""Helpers of the chart tests (test_chart.py, test_chart_rbac.py): helm, kubectl, namespaces."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.e2e.conftest import E2E_LABEL, missing

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/imageops"
Obj = dict[str, Any]


def helm_binary() -> str:
    """The bed's helm (fails under CI, skips otherwise, when it is missing)."""
    binary = shutil.which("helm")
    if binary is None:
        missing("helm is not on PATH: `make testenv-up` builds it; `source .testenv/env.sh`")
    return binary


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; on failure with check, the assertion shows its output."""
    out = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def render(release: str, namespace: str, *values: str) -> list[Obj]:
    """``helm template`` with ``--set`` values; the objects, in order."""
    sets = [a for v in values for a in ("--set", v)]
    text = helm("template", release, str(CHART), "--namespace", namespace, *sets).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the bed's kubectl."""
    binary = shutil.which("kubectl")
    if binary is None:
        missing("kubectl is not on PATH: `source .testenv/env.sh`")
    out = subprocess.run(
        [binary, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def dump(objects: list[Obj]) -> str:
    """Objects as one multi-document YAML stream."""
    return yaml.safe_dump_all(objects, sort_keys=False)


def make_namespace(core: client.CoreV1Api) -> str:
    """A fresh labelled namespace (the caller deletes it)."""
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={E2E_LABEL: "true"}))
    )
    return name


@contextmanager
def extra_namespace(kube: client.ApiClient) -> Iterator[str]:
    """A second namespace for one test (a watched or an unwatched one), deleted after."""
    core = client.CoreV1Api(kube)
    name = make_namespace(core)
    try:
        yield name
    finally:
        core.delete_namespace(name)


def release_name() -> str:
    """A release name unique to this run: cluster-scoped RBAC objects never collide."""
    return f"t{uuid.uuid4().hex[:8]}"
