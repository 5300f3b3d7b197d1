"""The ImageBackend contract, held by every backend against the real runtimes and registries.

The Docker backends (SDK, CLI) run against the bed's dockerd; the containerd
backend against the bed's containerd 1.6 and 2.x nodes (the 2.x one discards
layer blobs after unpacking, so its pushes fetch them back from the source).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest

from imageops.adapters.backends import BACKEND_KINDS, make_backend
from imageops.adapters.containerd import ContainerdBackend
from imageops.adapters.docker_cli import DockerCliBackend
from imageops.adapters.docker_sdk import DockerSdkBackend
from imageops.adapters.registry_http import RegistryClient
from imageops.models.common import ErrorReason
from imageops.services.backend import (
    CancelToken,
    ImageBackend,
    RegistryAuth,
    TransferProgress,
)
from imageops.services.errors import OperationError
from imageops.services.reference import parse_reference
from tests.containerd_node import ContainerdNode
from tests.faults import FakeSlowLink, FakeStalledRegistry
from tests.integration.conftest import (
    FakeDaemonLink,
    Images,
    MiB,
    free_port,
    name_of,
    pull,
    push,
    raises,
    unique,
)

if TYPE_CHECKING:
    # Imported for annotations only: pytest would try to collect a Test* class.
    from tests.testbed import Testbed

pytestmark = pytest.mark.integration


CONTAINERD_NODES = ("containerd-1.6", "containerd-2")
ALL_BACKENDS = (*BACKEND_KINDS, *CONTAINERD_NODES)


@pytest.fixture(params=ALL_BACKENDS)
def node(request: pytest.FixtureRequest) -> ContainerdNode | None:
    """The containerd node of this run (None for the Docker backends)."""
    if request.param in CONTAINERD_NODES:
        return ContainerdNode.from_env(request.param)
    return None


@pytest.fixture
def backend(
    request: pytest.FixtureRequest, node: ContainerdNode | None, testbed: Testbed
) -> ImageBackend:
    """Each backend in turn: on the bed's dockerd, or on one of its containerd nodes."""
    if node is not None:
        return ContainerdBackend(node.endpoint)
    return make_backend(request.node.callspec.params["node"], testbed.docker_host)


def full(ref: str) -> str:
    """``ref`` as containerd names it (docker.io/ added to a name without a registry)."""
    parsed = parse_reference(ref)
    return f"{parsed.registry}/{parsed.repository}:{parsed.tag}"


def same_names(info_tags: tuple[str, ...], backend: ImageBackend) -> set[str]:
    """The tags as given by the test (containerd reports them in full)."""
    if backend.name != "containerd":
        return set(info_tags)
    return {t.removeprefix("docker.io/") for t in info_tags}


def test_ping(backend: ImageBackend) -> None:
    backend.ping()


def test_daemon_unavailable(testbed: Testbed, tmp_path: Any) -> None:
    for kind in BACKEND_KINDS:
        dead = make_backend(kind, f"unix://{tmp_path}/no-daemon.sock")
        error = raises(ErrorReason.DAEMON_UNAVAILABLE, dead.ping)
        assert error.retryable
        raises(ErrorReason.DAEMON_UNAVAILABLE, partial(pull, dead, unique(testbed.registry)))
    dead_runtime = ContainerdBackend(f"unix://{tmp_path}/no-containerd.sock", timeout=5.0)
    assert raises(ErrorReason.DAEMON_UNAVAILABLE, dead_runtime.ping).retryable
    raises(ErrorReason.DAEMON_UNAVAILABLE, partial(pull, dead_runtime, unique(testbed.registry)))


def test_pull_from_open_registry(backend: ImageBackend, testbed: Testbed, images: Images) -> None:
    ref = unique(testbed.registry)
    image_id = images.remote(ref, size=2 * MiB)
    images.refs.append(ref)
    seen: list[TransferProgress] = []

    result = pull(backend, ref, on_progress=seen.append)

    assert result.digest == testbed.registry_digest(ref)
    assert result.image.image_id == image_id
    assert f"{name_of(ref)}@{result.digest}" in result.image.repo_digests
    assert ref in result.image.repo_tags
    assert not result.cache_hit
    assert seen, "no progress reported"
    assert seen[-1].layers_total == 1 and seen[-1].layers_done == 1
    again = pull(backend, ref)
    assert again.cache_hit and again.digest == result.digest


def test_progress_totals_are_sensible(
    backend: ImageBackend, testbed: Testbed, images: Images
) -> None:
    ref = unique(testbed.registry)
    images.remote(ref, size=8 * MiB)
    images.refs.append(ref)
    seen: list[TransferProgress] = []

    pull(backend, ref, on_progress=seen.append)

    for p in seen:
        assert 0 <= p.layers_done <= p.layers_total
        assert 0 <= p.bytes_done <= p.bytes_total
    last = seen[-1]
    assert last.layers_total == last.layers_done == 1
    if backend.name == "sdk":
        # The compressed layer: a little more than the random bytes it holds.
        assert 8 * MiB <= last.bytes_total < 9 * MiB
        assert last.bytes_done == last.bytes_total
        assert any(0 < p.bytes_done < p.bytes_total for p in seen), "no intermediate bytes"
    elif backend.name == "containerd":
        # Final totals from the manifest; intermediate ones from the content store's
        # ingests (test_containerd_progress_is_live shows them on a slow link).
        assert 8 * MiB <= last.bytes_total < 9 * MiB
        assert last.bytes_done == last.bytes_total
    else:
        # The command line prints no byte counts when stdout is not a terminal.
        assert last.bytes_total == 0


def test_pull_by_digest(backend: ImageBackend, testbed: Testbed, images: Images) -> None:
    ref = unique(testbed.registry)
    images.remote(ref)
    digest = testbed.registry_digest(ref)
    by_digest = f"{name_of(ref)}@{digest}"
    images.refs.append(by_digest)

    result = pull(backend, by_digest)

    assert result.digest == digest
    assert by_digest in result.image.repo_digests
    info = backend.inspect(by_digest)
    assert info is not None and info.image_id == result.image.image_id


def test_pull_with_platform(backend: ImageBackend, testbed: Testbed, images: Images) -> None:
    ref = unique(testbed.registry)
    images.remote(ref)
    images.refs.append(ref)
    result = pull(backend, ref, platform="linux/amd64")
    assert result.digest == testbed.registry_digest(ref)


def test_platform_selects_from_a_manifest_list(
    backend: ImageBackend, testbed: Testbed, images: Images, docker_api: Any
) -> None:
    repository = name_of(unique(testbed.registry))
    digests = images.remote_index(repository, ("linux/amd64", "linux/arm64"))
    ref = f"{repository}:multi"
    images.refs.append(ref)
    assert backend.registry_digest(ref, auth=None) == digests["index"]

    if backend.name == "containerd":
        # CRI has no platform field: it pulls the node's own; another is refused up front.
        raises(ErrorReason.UNSUPPORTED, lambda: pull(backend, ref, platform="linux/arm64"))
        result = pull(backend, ref, platform="linux/amd64")
        assert result.digest == digests["index"]
        assert backend.inspect(ref) is not None
        return
    for platform, arch in (("linux/arm64", "arm64"), ("linux/amd64", "amd64")):
        result = pull(backend, ref, platform=platform)
        images.refs.append(result.image.image_id)  # the next pull takes the tag away
        # The tag's digest is the list's, whichever platform was picked from it.
        assert result.digest == digests["index"]
        assert docker_api.inspect_image(ref)["Architecture"] == arch


def test_pull_from_auth_registry(
    backend: ImageBackend, testbed: Testbed, images: Images, auth: RegistryAuth
) -> None:
    ref = unique(testbed.auth_registry)
    images.remote(ref, auth=auth)
    images.refs.append(ref)
    raises(ErrorReason.AUTH_FAILED, lambda: pull(backend, ref))
    result = pull(backend, ref, auth=auth)
    assert result.digest == testbed.registry_digest(ref, auth=True)


def test_pull_not_found(backend: ImageBackend, testbed: Testbed, images: Images) -> None:
    error = raises(ErrorReason.NOT_FOUND, lambda: pull(backend, unique(testbed.registry)))
    assert not error.retryable
    ref = unique(testbed.registry)
    images.remote(ref)
    missing = f"{name_of(ref)}@sha256:{'0' * 64}"
    raises(ErrorReason.NOT_FOUND, lambda: pull(backend, missing))


@pytest.mark.parametrize(
    "ref", ["{registry}/Upper/Case:v1", "{registry}/bad name:v1", "{registry}/x:bad@tag"]
)
def test_invalid_reference(backend: ImageBackend, testbed: Testbed, ref: str) -> None:
    error = raises(
        ErrorReason.INVALID_REFERENCE, lambda: pull(backend, ref.format(registry=testbed.registry))
    )
    assert not error.retryable


def test_registry_unavailable(backend: ImageBackend, images: Images) -> None:
    dead = f"127.0.0.1:{free_port()}"
    error = raises(ErrorReason.REGISTRY_UNAVAILABLE, lambda: pull(backend, unique(dead)))
    assert error.retryable
    ref = unique(dead)
    images.local(ref)
    raises(ErrorReason.REGISTRY_UNAVAILABLE, lambda: push(backend, ref))
    raises(ErrorReason.REGISTRY_UNAVAILABLE, lambda: backend.registry_digest(ref, auth=None))


def test_push_without_credentials_is_auth_failed(
    backend: ImageBackend, testbed: Testbed, images: Images
) -> None:
    # dockerd answers 200 and reports this inside the stream: docker-py raises nothing.
    ref = unique(testbed.auth_registry)
    images.local(ref)
    error = raises(ErrorReason.AUTH_FAILED, lambda: push(backend, ref))
    assert not error.retryable


def test_push_with_wrong_password_is_auth_failed(
    backend: ImageBackend, testbed: Testbed, images: Images, auth: RegistryAuth
) -> None:
    ref = unique(testbed.auth_registry)
    images.local(ref)
    wrong = RegistryAuth(auth.username, "not-the-password", auth.registry)
    raises(ErrorReason.AUTH_FAILED, lambda: push(backend, ref, auth=wrong))


def test_push_with_credentials(
    backend: ImageBackend, testbed: Testbed, images: Images, auth: RegistryAuth
) -> None:
    ref = unique(testbed.auth_registry)
    images.local(ref, size=MiB)
    seen: list[TransferProgress] = []

    result = push(backend, ref, auth=auth, on_progress=seen.append)

    assert result.digest == testbed.registry_digest(ref, auth=True)
    assert result.size_bytes > 0
    assert seen and seen[-1].layers_total == seen[-1].layers_done == 1
    assert backend.registry_digest(ref, auth=auth) == result.digest
    raises(ErrorReason.AUTH_FAILED, lambda: backend.registry_digest(ref, auth=None))


def test_push_missing_image_is_not_found(backend: ImageBackend, testbed: Testbed) -> None:
    raises(ErrorReason.NOT_FOUND, lambda: push(backend, unique(testbed.registry)))


def test_registry_digest_open_registry(
    backend: ImageBackend, testbed: Testbed, images: Images
) -> None:
    ref = unique(testbed.registry)
    images.remote(ref)
    assert backend.registry_digest(ref, auth=None) == testbed.registry_digest(ref)
    raises(
        ErrorReason.NOT_FOUND, lambda: backend.registry_digest(unique(testbed.registry), auth=None)
    )


def test_tag_and_inspect(backend: ImageBackend, testbed: Testbed, images: Images) -> None:
    source = unique("local")
    image_id = images.local(source)
    target = unique(testbed.registry, tag="copy")
    images.refs.append(target)

    backend.tag(source, target)

    info = backend.inspect(target)
    assert info is not None
    assert info.image_id == image_id
    assert {source, target} <= same_names(info.repo_tags, backend)
    assert info.size_bytes > 0
    assert backend.inspect(unique("local")) is None
    raises(ErrorReason.NOT_FOUND, lambda: backend.tag(unique("local"), unique("local")))


def test_tag_moves_an_existing_target(backend: ImageBackend, images: Images) -> None:
    first, second, target = unique("local"), unique("local"), unique("local", tag="moving")
    first_id, second_id = images.local(first), images.local(second)
    images.refs.append(target)

    backend.tag(first, target)
    backend.tag(second, target)

    moved = backend.inspect(target)
    assert moved is not None and moved.image_id == second_id
    kept = backend.inspect(first)
    assert kept is not None and kept.image_id == first_id


def test_remove_untags(backend: ImageBackend, images: Images) -> None:
    source, alias = unique("local"), unique("local", tag="alias")
    image_id = images.local(source)
    backend.tag(source, alias)

    backend.remove(alias)

    assert backend.inspect(alias) is None
    still = backend.inspect(source)
    assert still is not None and still.image_id == image_id
    backend.remove(alias)  # missing is not an error


def test_cancelled_before_start(backend: ImageBackend, testbed: Testbed) -> None:
    cancel = CancelToken()
    cancel.cancel()
    raises(ErrorReason.CANCELLED, lambda: pull(backend, unique(testbed.registry), cancel=cancel))


def cancel_when(
    event: threading.Event, cancel: CancelToken, reason: str, delay: float
) -> dict[str, float]:
    """Cancel from another thread ``delay`` s after ``event``; records when."""
    when: dict[str, float] = {}

    def run() -> None:
        if event.wait(60):
            time.sleep(delay)
            when["cancelled"] = time.monotonic()
            cancel.cancel(reason)

    threading.Thread(target=run, daemon=True).start()
    return when


def test_cancel_pull_mid_stream(backend: ImageBackend, testbed: Testbed, images: Images) -> None:
    name = unique("contract-big")
    images.remote(f"{testbed.registry}/{name}", size=24 * MiB)
    cancel, started = CancelToken(), threading.Event()

    def on_progress(p: TransferProgress) -> None:
        if p.layers_total:
            started.set()

    with FakeSlowLink(testbed.registry, rate=2 * MiB) as link:
        ref = f"{link.address}/{name}"
        images.refs.append(ref)
        when = cancel_when(started, cancel, "deleted", delay=1.0)
        raises(
            ErrorReason.CANCELLED,
            lambda: pull(backend, ref, on_progress=on_progress, cancel=cancel),
        )
        stopped_after = time.monotonic() - when["cancelled"]
        # dockerd must abandon the download too, not only stop telling us about it.
        time.sleep(0.5)
        before = link.bytes_down
        time.sleep(1.0)
        after = link.bytes_down
    assert stopped_after < 2.0
    assert after - before < 256 * 1024, "dockerd kept downloading after the cancel"
    assert 0 < before < 24 * MiB
    assert backend.inspect(ref) is None, "the cancelled pull completed"


def test_timeout_of_a_stalled_pull(backend: ImageBackend) -> None:
    # dockerd waits for the registry before it sends response headers: nothing arrives.
    cancel, begun = CancelToken(), threading.Event()
    with FakeStalledRegistry() as registry:
        when = cancel_when(begun, cancel, "timeout", delay=1.0)
        begun.set()
        raises(ErrorReason.TIMEOUT, lambda: pull(backend, unique(registry.address), cancel=cancel))
        assert time.monotonic() - when["cancelled"] < 2.0


def test_cancel_a_stalled_push(backend: ImageBackend, images: Images) -> None:
    # Here dockerd has sent the first item ("The push refers to ...") before it stalls.
    cancel, begun = CancelToken(), threading.Event()
    with FakeStalledRegistry() as registry:
        ref = unique(registry.address)
        images.local(ref)
        when = cancel_when(begun, cancel, "deleted", delay=1.0)
        begun.set()
        raises(ErrorReason.CANCELLED, lambda: push(backend, ref, cancel=cancel))
        assert time.monotonic() - when["cancelled"] < 2.0


def pull_while(
    backend: ImageBackend, testbed: Testbed, images: Images, fault: Callable[[], None]
) -> OperationError:
    """Start a slow pull, run ``fault`` once it is under way; the error it ends with."""
    name = unique("contract-big")
    images.remote(f"{testbed.registry}/{name}", size=24 * MiB)
    started = threading.Event()

    def on_progress(p: TransferProgress) -> None:
        if p.layers_total:
            started.set()

    def inject() -> None:
        if started.wait(60):
            time.sleep(0.5)
            fault()

    with FakeSlowLink(testbed.registry, rate=2 * MiB) as link:
        threading.Thread(target=inject, daemon=True).start()
        with pytest.raises(OperationError) as caught:
            pull(backend, f"{link.address}/{name}", on_progress=on_progress)
    return caught.value


def linked_backend(
    kind: str, testbed: Testbed, tmp_path: Any
) -> tuple[ImageBackend, FakeDaemonLink]:
    """A backend of ``kind`` whose socket goes through a FakeDaemonLink to the real daemon."""
    if kind in CONTAINERD_NODES:
        link = FakeDaemonLink(ContainerdNode.from_env(kind).endpoint, str(tmp_path))
        return ContainerdBackend(link.docker_host), link
    link = FakeDaemonLink(testbed.docker_host, str(tmp_path))
    return make_backend(kind, link.docker_host), link


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_daemon_gone_mid_pull(kind: str, testbed: Testbed, images: Images, tmp_path: Any) -> None:
    backend, link = linked_backend(kind, testbed, tmp_path)
    error = pull_while(backend, testbed, images, link.close)
    assert error.reason is ErrorReason.DAEMON_UNAVAILABLE, error.message
    assert error.retryable


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_stream_broken_mid_pull(kind: str, testbed: Testbed, images: Images, tmp_path: Any) -> None:
    backend, link = linked_backend(kind, testbed, tmp_path)
    try:
        error = pull_while(backend, testbed, images, link.cut)
    finally:
        link.close()
    # The SDK sees urllib3's IncompleteRead, the command line "unexpected EOF".
    assert error.reason in (ErrorReason.NETWORK, ErrorReason.REGISTRY_UNAVAILABLE), error.message
    assert error.retryable


def short_timeout_backends(docker_host: str) -> list[ImageBackend]:
    """Both backends with 2 s bounds on their short calls."""
    return [
        DockerSdkBackend(docker_host, timeout=2.0),
        DockerCliBackend(docker_host, timeout=2.0, registry=RegistryClient(timeout=2.0)),
    ]


def test_registry_digest_of_a_hung_registry(testbed: Testbed) -> None:
    with FakeStalledRegistry() as registry:
        for backend in short_timeout_backends(testbed.docker_host):
            began = time.monotonic()
            call = partial(backend.registry_digest, unique(registry.address), auth=None)
            error = raises(ErrorReason.REGISTRY_UNAVAILABLE, call)
            assert error.retryable
            assert time.monotonic() - began < 5.0, backend.name
