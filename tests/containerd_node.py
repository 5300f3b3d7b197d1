"""The test bed's containerd nodes (hack/lib/testenv-containerd.sh), driven with their own tools.

Tests set up and check containerd images with ``ctr`` and ``crictl`` (the
tools a person would use), never through the backend under test.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from tests.testbed import require

VERSIONS = {
    "containerd-1.6": "IMAGEOPS_CONTAINERD_ADDRESS",
    "containerd-2": "IMAGEOPS_CONTAINERD2_ADDRESS",
}


@dataclass(frozen=True)
class ContainerdNode:
    """One containerd of the bed: its socket and the kubelet's namespace."""

    name: str
    address: str
    namespace: str = "k8s.io"

    @classmethod
    def from_env(cls, name: str) -> ContainerdNode:
        """The node ``name`` (containerd-1.6 or containerd-2); fails/skips when the bed lacks it."""
        variable = VERSIONS[name]
        return cls(name, require([variable])[variable])

    @property
    def endpoint(self) -> str:
        """The CRI endpoint, unix://path."""
        return f"unix://{self.address}"

    def ctr(self, *args: str, input_bytes: bytes | None = None, check: bool = True) -> str:
        """Run Debian's ctr against this node in the k8s.io namespace."""
        done = subprocess.run(
            ["ctr", "--address", self.address, "-n", self.namespace, *args],
            input=input_bytes,
            capture_output=True,
            check=False,
            timeout=300,
        )
        if check and done.returncode:
            raise RuntimeError(f"ctr {' '.join(args)}: {done.stderr.decode()}")
        return done.stdout.decode()

    def crictl(self, *args: str, check: bool = True) -> str:
        """Run crictl against this node."""
        done = subprocess.run(
            [
                "crictl",
                "--runtime-endpoint",
                self.endpoint,
                "--image-endpoint",
                self.endpoint,
                *args,
            ],
            capture_output=True,
            check=False,
            timeout=300,
        )
        if check and done.returncode:
            raise RuntimeError(f"crictl {' '.join(args)}: {done.stderr.decode()}")
        return done.stdout.decode()

    def import_from_docker(self, docker_api: Any, ref: str) -> None:
        """Copy the local Docker image ``ref`` into this node (docker save | ctr import)."""
        archive = b"".join(docker_api.get_image(ref))
        self.ctr("images", "import", "--all-platforms", "-", input_bytes=archive)

    def image(self, ref: str) -> dict[str, Any] | None:
        """crictl inspecti's status of ``ref`` (what the kubelet sees), or None."""
        out = self.crictl("inspecti", "-o", "json", ref, check=False)
        if not out.strip():
            return None
        status: dict[str, Any] = json.loads(out).get("status") or {}
        return status or None

    def remove_image(self, ref: str) -> None:
        """Remove the image ``ref`` with every name it has (best effort)."""
        self.crictl("rmi", ref, check=False)


def node_names() -> list[str]:
    """The containerd nodes the bed has (both in a complete bed)."""
    return [n for n, v in VERSIONS.items() if os.environ.get(v)] or list(VERSIONS)
