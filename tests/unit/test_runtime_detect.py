"""--runtime auto finds the node's socket in OpenKruise's order."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageops.adapters.backends import RuntimeChoice, detect_runtime


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (
            ["containerd/containerd.sock", "docker.sock"],
            ("containerd", "containerd/containerd.sock"),
        ),
        (["containerd.sock", "containerd/containerd.sock"], ("containerd", "containerd.sock")),
        (["crio.sock", "docker.sock"], ("cri", "crio.sock")),
        (["cri-dockerd.sock", "docker.sock"], ("docker", "docker.sock")),
        (["cri-dockerd.sock"], ("cri", "cri-dockerd.sock")),
        (["docker.sock"], ("docker", "docker.sock")),
    ],
)
def test_auto_detects_in_order(
    tmp_path: Path, present: list[str], expected: tuple[str, str]
) -> None:
    touch(tmp_path, *present)
    choice = detect_runtime("auto", None, None, str(tmp_path))
    assert choice == RuntimeChoice(expected[0], f"unix://{tmp_path / expected[1]}")


def test_auto_without_sockets_is_docker_default(tmp_path: Path) -> None:
    assert detect_runtime("auto", None, None, str(tmp_path)) == RuntimeChoice("docker", None)


def test_explicit_endpoint_and_docker_host_win(tmp_path: Path) -> None:
    touch(tmp_path, "containerd/containerd.sock")
    assert detect_runtime("auto", None, "unix:///d.sock", str(tmp_path)) == RuntimeChoice(
        "docker", "unix:///d.sock"
    )
    assert (
        detect_runtime("auto", "/run/k3s/containerd/containerd.sock", None, str(tmp_path)).runtime
        == "containerd"
    )
    assert (
        detect_runtime("auto", "unix:///var/run/crio/crio.sock", None, str(tmp_path)).runtime
        == "cri"
    )
    assert detect_runtime("cri", "unix:///x/containerd.sock", None, str(tmp_path)) == RuntimeChoice(
        "cri", "unix:///x/containerd.sock"
    )


def test_unknown_runtime_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown runtime"):
        detect_runtime("podman", None, None)
