"""Generic fixtures of the end-to-end tests: the real API server and a namespace per test.

The API server comes from the test bed (``source .testenv/env.sh`` exports KUBECONFIG).
Without it a test is skipped, or fails under CI (see ``tests.testbed.require``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from imageops.models.base import GROUP, VERSION
from imageops.models.crd import RESOURCES, build_crd
from tests.e2e.fixtures import log_dir, operator, ops, testbed  # noqa: F401  (ImageOperation e2e)
from tests.testbed import require

E2E_LABEL = "e2e.imageops.dev/test"
FIELD_MANAGER = "imageops-e2e"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def missing(why: str) -> NoReturn:
    """Fail (under CI or ``make test``) or skip because a part of the test bed is missing."""
    if os.environ.get("CI") == "true" or os.environ.get("IMAGEOPS_REQUIRE_TESTENV"):
        pytest.fail(why)
    pytest.skip(why)


def install_crds(api: client.ApiClient, timeout: float = 30) -> None:
    """Server-side apply the CRDs generated from the working tree's models; wait until served."""
    ext = client.ApiextensionsV1Api(api)
    names = []
    for kind in RESOURCES:
        crd = build_crd(kind)
        names.append(crd["metadata"]["name"])
        ext.patch_custom_resource_definition(
            crd["metadata"]["name"],
            crd,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    for name in names:
        watch_established(ext, name, timeout)
    wait_for_garbage_collector(api)


def wait_for_garbage_collector(api: client.ApiClient, timeout: float = 90) -> None:
    """Wait until kube-controller-manager's garbage collector handles our kinds.

    It discovers new CRDs on a 30 s resync; until then, deleting a Workflow
    leaves its children (owner references) for up to that long. A probe owner
    and dependent in ``default`` show when it is ready (at once on a bed that
    already had the CRDs).
    """
    custom = client.CustomObjectsApi(api)
    name = f"gc-probe-{uuid.uuid4().hex[:8]}"
    owner = custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        "imagesessions",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageSession", "metadata": {"name": name}},
    )
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageSession",
        "name": name,
        "uid": owner["metadata"]["uid"],
    }
    dependent = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageOperation",
        "metadata": {"name": name, "ownerReferences": [ref]},
        # A node no agent serves: nothing runs it.
        "spec": {"action": "Pull", "image": "gc-probe.invalid/probe:1", "nodeName": name},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", "imageoperations", dependent)
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "imagesessions", name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            custom.get_namespaced_custom_object(GROUP, VERSION, "default", "imageoperations", name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    missing(f"the garbage collector did not delete {name} in {timeout:.0f}s")


def watch_established(ext: client.ApiextensionsV1Api, name: str, timeout: float) -> None:
    """Wait until the CRD ``name`` has condition Established=True."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = ext.read_custom_resource_definition(name).status
        conditions = (status.conditions if status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise AssertionError(f"CRD {name} not Established after {timeout}s")


@pytest.fixture(scope="session")
def kube() -> client.ApiClient:
    """An API client for the test bed's kube-apiserver, with this tree's CRDs installed."""
    path = require(["KUBECONFIG"])["KUBECONFIG"]
    if not Path(path).is_file():
        missing(f"KUBECONFIG={path} does not exist: run `make testenv-up`")
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=path
    )
    install_crds(api)
    return api


@pytest.fixture(scope="session")
def kube_api(kube: client.ApiClient) -> client.ApiClient:
    """The same client as ``kube`` (the name the ImageOperation e2e fixtures use)."""
    return kube


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards.

    The bed's kube-controller-manager finishes the deletion (namespace controller);
    tests that persist objects should still delete them themselves.
    """
    yield from temporary_namespace(kube, "e2e")


def temporary_namespace(kube: client.ApiClient, prefix: str) -> Iterator[str]:
    """Create ``<prefix>-<random>``, yield its name, delete it (gone already is fine)."""
    core = client.CoreV1Api(kube)
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    meta = client.V1ObjectMeta(name=name, labels={E2E_LABEL: "true"})
    core.create_namespace(client.V1Namespace(metadata=meta))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="session")
def kubectl(kube: client.ApiClient) -> Kubectl:
    """Run the bed's kubectl (on PATH after sourcing env.sh); returns the completed process."""
    binary = shutil.which("kubectl")
    if binary is None:
        missing("kubectl is not on PATH: `source .testenv/env.sh`")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *args], capture_output=True, text=True, check=check, timeout=60
        )

    return run


@pytest.fixture
def other_namespace(kube: client.ApiClient) -> Iterator[str]:
    """A second namespace for one test (e.g. one a chart does not watch)."""
    from tests.e2e.chart_helpers import extra_namespace

    with extra_namespace(kube) as name:
        yield name
