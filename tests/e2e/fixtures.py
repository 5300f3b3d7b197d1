"""Fixtures of the ImageOperation end-to-end tests (imported by conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.harness import OperatorProcess, Ops
from tests.testbed import Testbed

# Unique per test session, so two sessions on one test bed never share an agent.
MAIN_NODE = f"e2e-main-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    """The bed's Docker engine and registries."""
    return Testbed.from_env()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where operator logs go (kept by pytest's tmp dir retention)."""
    return tmp_path_factory.mktemp("operator-logs")


@pytest.fixture(scope="session")
def operator(
    kube_api: client.ApiClient, testbed: Testbed, log_dir: Path
) -> Iterator[OperatorProcess]:
    """The main operator (every role) for node e2e-main, shared by the session."""
    proc = OperatorProcess(MAIN_NODE, log_dir=log_dir).start()
    yield proc
    proc.stop()


@pytest.fixture
def ops(kube_api: client.ApiClient, namespace: str) -> Ops:
    """ImageOperations in this test's own namespace."""
    return Ops(kube_api, namespace)
