"""What only the containerd backend does, against the bed's real containerd 1.6 and 2.x.

The shared contract is in test_backend_contract.py; here: the kubelet's view
(crictl) of pulls and tags, live progress from the content store, pushes of
images whose layers containerd discarded, cross-repository mounts, and a
CRI-only runtime refusing Tag and Push.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from imageops.adapters.containerd import ContainerdBackend
from imageops.models.common import ErrorReason
from imageops.services.backend import RegistryAuth, TransferProgress
from tests.containerd_node import ContainerdNode
from tests.faults import FakeSlowLink
from tests.integration.conftest import Images, MiB, name_of, pull, push, raises, unique

if TYPE_CHECKING:
    from tests.testbed import Testbed

pytestmark = pytest.mark.integration


@pytest.fixture(params=["containerd-1.6", "containerd-2"])
def node(request: pytest.FixtureRequest) -> ContainerdNode:
    """Each containerd node of the bed."""
    return ContainerdNode.from_env(request.param)


@pytest.fixture
def backend(node: ContainerdNode) -> ContainerdBackend:
    """The containerd backend on ``node``."""
    return ContainerdBackend(node.endpoint)


def test_crictl_sees_a_pull_and_a_tag(
    backend: ContainerdBackend, node: ContainerdNode, testbed: Testbed, images: Images
) -> None:
    ref = unique(testbed.registry)
    images.remote(ref)
    images.refs.append(ref)

    result = pull(backend, ref)

    seen = node.image(ref)
    assert seen is not None, "the kubelet's view (CRI) does not list the pulled image"
    assert f"{name_of(ref)}@{result.digest}" in seen["repoDigests"]
    assert seen["id"] == result.image.image_id
    target = unique(testbed.registry, tag="tagged")
    backend.tag(ref, target)
    tagged = node.image(target)
    assert tagged is not None and tagged["id"] == result.image.image_id
    backend.remove(target)
    assert node.image(target) is None
    assert node.image(ref) is not None, "untagging removed the other name"


def test_progress_is_live_during_a_pull(
    backend: ContainerdBackend, testbed: Testbed, images: Images
) -> None:
    name = unique("live").removeprefix("live/")
    images.remote(f"{testbed.registry}/{name}", size=6 * MiB)
    seen: list[TransferProgress] = []
    with FakeSlowLink(testbed.registry, rate=3 * MiB) as link:
        ref = f"{link.address}/{name}"
        images.refs.append(ref)
        pull(backend, ref, on_progress=seen.append)
    middle = [p for p in seen if 0 < p.bytes_done < p.bytes_total]
    assert middle, f"no intermediate progress in {seen}"
    assert middle[0].layers_total == 1 and middle[0].layers_done == 0
    assert seen[-1].layers_done == seen[-1].layers_total == 1


def test_push_of_a_pulled_image_to_another_registry(
    backend: ContainerdBackend,
    node: ContainerdNode,
    testbed: Testbed,
    images: Images,
    auth: RegistryAuth,
) -> None:
    # On the 2.x node (discard_unpacked_layers) the layer is gone after the pull and
    # has to come back from the registry the image was pulled from.
    source = unique(testbed.registry)
    images.remote(source, size=2 * MiB)
    images.refs.append(source)
    pulled = pull(backend, source)
    if node.name == "containerd-2":
        collect_garbage(node)
        layers = set(node.ctr("content", "ls", "-q").split())
        assert len(layers & _blob_digests(testbed, source)) == 2, (
            "expected only manifest and config in the 2.x content store"
        )
    target = unique(testbed.auth_registry, tag="copy")
    images.refs.append(target)
    backend.tag(source, target)

    result = push(backend, target, auth=auth)

    assert result.digest == pulled.digest == testbed.registry_digest(target, auth=True)
    assert result.size_bytes > 2 * MiB


def test_push_within_a_registry_mounts_the_blobs(
    backend: ContainerdBackend, testbed: Testbed, images: Images
) -> None:
    source = unique(testbed.registry)
    images.remote(source, size=2 * MiB)
    images.refs.append(source)
    pulled = pull(backend, source)
    target = unique(testbed.registry, tag="mounted")
    images.refs.append(target)
    backend.tag(source, target)

    result = push(backend, target)

    assert result.digest == pulled.digest == testbed.registry_digest(target)
    # Config and layer were mounted from the source repository: nothing was uploaded.
    assert result.size_bytes == 0


# Only the bed's 2.x node discards unpacked layers (1.6 keeps every blob).
@pytest.mark.parametrize("node", ["containerd-2"], indirect=True)
def test_discarded_layer_without_a_source_fails_clearly(
    backend: ContainerdBackend,
    node: ContainerdNode,
    testbed: Testbed,
    images: Images,
    auth: RegistryAuth,
) -> None:
    name = unique("gone").removeprefix("gone/")
    images.remote(f"{testbed.registry}/{name}", size=MiB)
    with FakeSlowLink(testbed.registry, rate=64 * MiB) as link:
        source = f"{link.address}/{name}"
        images.refs.append(source)
        pull(backend, source)
    collect_garbage(node)
    # The link (the only registry the image is known from) is gone now.
    target = unique(testbed.auth_registry, tag="orphan")
    images.refs.append(target)
    backend.tag(source, target)
    error = raises(ErrorReason.REGISTRY_UNAVAILABLE, lambda: push(backend, target, auth=auth))
    assert "discard_unpacked_layers" in error.message, error.message


def test_cri_only_runtime_pulls_but_refuses_tag_and_push(
    node: ContainerdNode, testbed: Testbed, images: Images
) -> None:
    cri = ContainerdBackend(node.endpoint, containerd_api=False)
    ref = unique(testbed.registry)
    images.remote(ref)
    images.refs.append(ref)
    assert pull(cri, ref).digest == testbed.registry_digest(ref)
    tag_error = raises(ErrorReason.UNSUPPORTED, lambda: cri.tag(ref, unique(testbed.registry)))
    push_error = raises(ErrorReason.UNSUPPORTED, lambda: push(cri, ref))
    assert not tag_error.retryable and not push_error.retryable
    assert "CRI" in tag_error.message


def test_a_cancelled_push_stops(
    backend: ContainerdBackend, testbed: Testbed, images: Images
) -> None:
    from imageops.services.backend import CancelToken

    ref = unique(testbed.registry)
    images.local(ref, size=16 * MiB)
    cancel = CancelToken()
    with FakeSlowLink(testbed.registry, rate=2 * MiB) as link:
        target = f"{link.address}/{ref.split('/', 1)[1]}"
        images.refs.append(target)
        backend.tag(ref, target)
        started = threading.Event()

        def on_progress(p: TransferProgress) -> None:
            if p.bytes_done:
                started.set()

        threading.Thread(
            target=lambda: started.wait(30) and cancel.cancel("deleted"), daemon=True
        ).start()
        raises(
            ErrorReason.CANCELLED,
            lambda: push(backend, target, on_progress=on_progress, cancel=cancel),
        )


def collect_garbage(node: ContainerdNode) -> None:
    """Make containerd drop what it marked for removal now (a synchronous image delete GCs)."""
    scratch = f"imageops.test/gc/{threading.get_ident()}:scratch"
    node.ctr("images", "tag", "--force", node.ctr("images", "ls", "-q").split()[0], scratch)
    node.ctr("images", "rm", "--sync", scratch)


def _blob_digests(testbed: Testbed, ref: str) -> set[str]:
    """Config and layer digests of ``ref`` in the open registry."""
    import json
    import urllib.request

    host, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    request = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        manifest = json.load(response)
    return {manifest["config"]["digest"], *(x["digest"] for x in manifest["layers"])} | {
        testbed.registry_digest(ref) or ""
    }
