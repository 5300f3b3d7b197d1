"""The committed gRPC stubs are exactly what hack/gen_grpc.py makes from the pinned protos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_committed_stubs_match_the_pinned_protos() -> None:
    # Needs Go (go mod download verifies the modules against go.sum), like the bed.
    done = subprocess.run(
        [sys.executable, str(REPO / "hack" / "gen_grpc.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_stubs_import_and_name_the_services() -> None:
    from imageops.adapters.grpcgen.containerd.services.images.v1 import images_pb2_grpc
    from imageops.adapters.grpcgen.cri.v1 import api_pb2, api_pb2_grpc

    assert hasattr(api_pb2_grpc, "ImageServiceStub")
    assert hasattr(images_pb2_grpc, "ImagesStub")
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
