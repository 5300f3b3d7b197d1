"""The operator image: built from the Dockerfile by the bed's Docker engine, then run.

No public registry is reachable on the test bed, so ``python:3.11-slim`` cannot be
pulled: the base is made here from the Python 3.11 this machine runs (its prefix, the
shared libraries ``ldd`` names, static busybox as /bin/sh) with ``docker import``, and
cached in the bed's dockerd under a tag derived from the content (rebuilt only when an
input file changes). PyPI is reachable: the builder stage runs ``pip wheel .`` with
``--network host``. This machine reaches PyPI through a TLS-inspecting proxy whose CA
is in the host's bundle, so the base carries that bundle and points pip and OpenSSL at
it, as a company base image does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.chart_helpers import CHART, helm
from tests.e2e.harness import Ops, free_port, wait_until
from tests.testbed import Testbed, require

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
IMAGE = "imageops-test/imageops:e2e"
BASE_REPO = "imageops-test/python-base"
# Bump when the recipe of the base changes (what goes in, where).
BASE_RECIPE = "1"
MULTIARCH = "usr/lib/x86_64-linux-gnu"
# Not needed by the operator, large, or linked against X11.
SKIP_DIRS = {
    "site-packages",
    "test",
    "tests",
    "idle_test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "__pycache__",
    "lib2to3",
}
SKIP_FILE = re.compile(r"(^_tkinter\..*\.so$|\.pyc$|^libpython.*\.a$)")
# The libraries manylinux wheels (pydantic-core, aiohttp, PyYAML...) may link (PEP 600).
EXTRA_LIBS = (
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libm.so.6",
    "libc.so.6",
)
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
Member = tuple[str, Path | None, str | None, int]  # arcname, source file, link target, mode


def _docker(
    host: str, *args: str, timeout: float = 900, input_bytes: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        ["docker", "-H", host, *args],
        input=input_bytes,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    result = subprocess.CompletedProcess(
        out.args,
        out.returncode,
        out.stdout.decode(errors="replace"),
        out.stderr.decode(errors="replace"),
    )
    if result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:3])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


# ---- the Python base image ---------------------------------------------------------


def _prefix() -> Path:
    """The prefix of a CPython 3.11 with a shared libpython (this interpreter's)."""
    prefix = Path(sys.base_prefix)
    shared = prefix / "lib/libpython3.11.so.1.0"
    if sys.version_info[:2] != (3, 11) or not shared.is_file():
        pytest.fail(
            f"the image base is made from a CPython 3.11 built with --enable-shared; "
            f"this is {sys.version} at {prefix}"
        )
    return prefix


def _stdlib_members(prefix: Path) -> Iterator[Member]:
    stdlib = prefix / "lib/python3.11"
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        rel = Path(root).relative_to(prefix)
        yield f"usr/local/{rel}", None, None, 0o755
        for name in sorted(files):
            path = Path(root) / name
            if SKIP_FILE.search(name):
                continue
            if path.is_symlink():
                yield f"usr/local/{rel}/{name}", None, os.readlink(path), 0o777
            else:
                yield f"usr/local/{rel}/{name}", path, None, path.stat().st_mode & 0o755


def _shared_libs(prefix: Path) -> list[Path]:
    """Every shared library the interpreter and its extension modules load, by ldd."""
    modules = sorted((prefix / "lib/python3.11/lib-dynload").glob("*.so"))
    modules = [m for m in modules if not m.name.startswith("_tkinter")]
    binaries = [prefix / "bin/python3.11", *modules]
    found: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(
            ["ldd", str(binary)], capture_output=True, text=True, check=False
        ).stdout
        for match in re.finditer(r"=> (/\S+)", out):
            if not match.group(1).startswith(str(prefix)):  # libpython: added on its own
                found.add(Path(match.group(1)))
    for lib in EXTRA_LIBS:
        found.add(Path("/lib/x86_64-linux-gnu") / lib)
    found.add(Path("/lib64/ld-linux-x86-64.so.2"))
    return sorted(found)


def _busybox() -> Path:
    path = shutil.which("busybox")
    if path is None:
        pytest.fail("busybox is missing: hack/testenv.sh installs busybox-static")
    return Path(path)


def _base_members(prefix: Path) -> list[Member]:
    members: list[Member] = []
    for d in (
        "usr",
        "usr/bin",
        "usr/lib",
        MULTIARCH,
        "usr/lib64",
        "usr/local",
        "usr/local/bin",
        "usr/local/lib",
        "etc",
        "home",
        "root",
        "var",
    ):
        members.append((d, None, None, 0o755))
    members.append(("tmp", None, None, 0o1777))
    for link, target in (
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/bin"),
        ("usr/sbin", "bin"),
    ):
        members.append((link, None, target, 0o777))
    bb = _busybox()
    members.append(("usr/bin/busybox", bb, None, 0o755))
    applets = subprocess.run([str(bb), "--list"], capture_output=True, text=True, check=True).stdout
    members += [(f"usr/bin/{a}", None, "busybox", 0o777) for a in applets.split() if a != "busybox"]
    for lib in _shared_libs(prefix):
        real = lib.resolve()
        name = "ld-linux-x86-64.so.2" if lib.name.startswith("ld-linux") else lib.name
        members.append((f"{MULTIARCH}/{name}", real, None, 0o755))
    members.append(
        (
            "usr/lib64/ld-linux-x86-64.so.2",
            None,
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            0o777,
        )
    )
    # libpython is found in the default search path (the interpreter's RUNPATH names
    # the host's prefix, which the image does not have).
    members.append(
        (
            f"{MULTIARCH}/libpython3.11.so.1.0",
            (prefix / "lib/libpython3.11.so.1.0").resolve(),
            None,
            0o755,
        )
    )
    members.append(("usr/local/bin/python3.11", prefix / "bin/python3.11", None, 0o755))
    members += [
        ("usr/local/bin/python3", None, "python3.11", 0o777),
        ("usr/local/bin/python", None, "python3.11", 0o777),
    ]
    members += list(_stdlib_members(prefix))
    members.append(("usr/local/lib/python3.11/site-packages", None, None, 0o755))
    if CA_BUNDLE.is_file():
        members += [
            ("etc/ssl", None, None, 0o755),
            ("etc/ssl/certs", None, None, 0o755),
            (str(CA_BUNDLE).lstrip("/"), CA_BUNDLE.resolve(), None, 0o644),
        ]
    return members


def _base_key(members: list[Member]) -> str:
    """Hash of everything the tarball will hold (file contents included; ~0.3 s)."""
    digest = hashlib.sha256(f"recipe={BASE_RECIPE}\n".encode())
    for arcname, source, link, mode in members:
        content = ""
        if source is not None:
            with source.open("rb") as f:
                content = hashlib.file_digest(f, "sha256").hexdigest()
        digest.update(f"{arcname}|{content}|{link}|{mode:o}\n".encode())
    return digest.hexdigest()[:16]


def _base_tar(members: list[Member], prefix: Path) -> bytes:
    """A deterministic rootfs tarball (fixed owners and mtimes, given order)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for arcname, source, link, mode in members:
            info = tarfile.TarInfo(arcname)
            info.mode, info.mtime, info.uid, info.gid = mode, 0, 0, 0
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif source is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                data = source.read_bytes()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        _add_text(tar, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        _add_text(tar, "etc/group", "root:x:0:\n")
        # pip in the base, as python:3.11-slim has it: the wheel CPython bundles for
        # ensurepip is pure Python, so unpacking it into site-packages installs it.
        bundled = sorted((prefix / "lib/python3.11/ensurepip/_bundled").glob("pip-*.whl"))[-1]
        with zipfile.ZipFile(bundled) as wheel:
            for name in sorted(wheel.namelist()):
                _add_text(tar, f"usr/local/lib/python3.11/site-packages/{name}", wheel.read(name))
    return buf.getvalue()


def _add_text(tar: tarfile.TarFile, name: str, data: str | bytes) -> None:
    raw = data.encode() if isinstance(data, str) else data
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(raw), 0o644, 0
    tar.addfile(info, io.BytesIO(raw))


def python_base(docker_host: str) -> str:
    """A local Python 3.11 base image in the bed's dockerd, made once per content."""
    prefix = _prefix()
    members = _base_members(prefix)
    ref = f"{BASE_REPO}:{_base_key(members)}"
    present = subprocess.run(
        ["docker", "-H", docker_host, "image", "inspect", ref], capture_output=True, check=False
    )
    if present.returncode != 0:
        changes = ['CMD ["python3"]', "ENV PATH=/usr/local/bin:/usr/bin:/bin"]
        if CA_BUNDLE.is_file():
            changes += [f"ENV SSL_CERT_FILE={CA_BUNDLE}", f"ENV PIP_CERT={CA_BUNDLE}"]
        _docker(
            docker_host,
            "import",
            *(a for c in changes for a in ("--change", c)),
            "-",
            ref,
            input_bytes=_base_tar(members, prefix),
        )
    return ref


# ---- the image -------------------------------------------------------------------


def socket_gid(docker_host: str) -> int:
    """The group of the bed's Docker socket (what a node's socket gid is to the chart)."""
    return os.stat(docker_host.removeprefix("unix://")).st_gid


def build_operator_image(host: str, base: str, *build_args: str) -> None:
    """Build the Dockerfile as IMAGE on ``host``'s dockerd from the local Python ``base``."""
    _docker(
        host,
        "build",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={base}",
        *build_args,
        "-t",
        IMAGE,
        str(REPO),
        timeout=1500,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Build the Dockerfile on the local base; returns the ref, build seconds and size."""
    host = require(["DOCKER_HOST"])["DOCKER_HOST"]
    start = time.monotonic()
    base = python_base(host)
    base_seconds = time.monotonic() - start
    previous = _image_id(host, IMAGE)
    start = time.monotonic()
    build_operator_image(host, base, "--build-arg", f"DOCKER_GID={socket_gid(host)}")
    seconds = time.monotonic() - start
    if previous and previous != _image_id(host, IMAGE):
        # The last run's image (and the layers only it used): the bed's disk is finite.
        subprocess.run(["docker", "-H", host, "rmi", previous], capture_output=True, check=False)
    size = int(_docker(host, "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    base_size = int(_docker(host, "image", "inspect", "--format", "{{.Size}}", base).stdout)
    figures = {
        "ref": IMAGE,
        "base": base,
        "base_seconds": round(base_seconds, 1),
        "build_seconds": round(seconds, 1),
        "size_mb": round(size / 1e6, 1),
        "base_size_mb": round(base_size / 1e6, 1),
    }
    # Visible with -s, and kept next to the other pytest output for the record.
    print(f"\nimage figures: {json.dumps(figures)}")
    (tmp_path_factory.getbasetemp() / "image-figures.json").write_text(json.dumps(figures))
    return {**figures, "host": host}


def _image_id(host: str, ref: str) -> str | None:
    out = subprocess.run(
        ["docker", "-H", host, "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def _run(built: dict[str, object], *args: str) -> str:
    return _docker(str(built["host"]), "run", "--rm", *args, timeout=120).stdout


def test_version(built: dict[str, object]) -> None:
    from imageops import __version__

    assert _run(built, str(built["ref"]), "--version").strip() == f"imageops {__version__}"


def test_non_root_with_the_socket_group_and_no_build_tools(built: dict[str, object]) -> None:
    ref, host = str(built["ref"]), str(built["host"])
    probe = (
        "import json, os, shutil, importlib.util as u; print(json.dumps({'uid': os.getuid(), "
        "'gid': os.getgid(), 'groups': os.getgroups(), 'pip': u.find_spec('pip') is not None, "
        "'tools': [t for t in ('gcc', 'cc', 'make', 'pip') if shutil.which(t)]}))"
    )
    got = json.loads(_run(built, "--entrypoint", "python", ref, "-c", probe))
    assert (got["uid"], got["gid"]) == (10001, 10001), got
    assert socket_gid(host) in got["groups"], got
    assert (got["pip"], got["tools"]) == (False, []), got
    config = json.loads(_docker(host, "image", "inspect", ref).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["imageops"] and config["Cmd"] == ["run"]
    assert config["User"] == "10001" and "8080/tcp" in config["ExposedPorts"]


def test_agent_in_the_image_serves_healthz_and_runs_an_operation(
    built: dict[str, object], ops: Ops, testbed: Testbed, tmp_path: Path
) -> None:
    """The agent as the DaemonSet runs it: read-only root, no capabilities, socket mounted."""
    env = require(["KUBECONFIG"])
    host = str(built["host"])
    # The container user is 10001; the bed's kubeconfig is root-only.
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copyfile(env["KUBECONFIG"], kubeconfig)
    kubeconfig.chmod(0o644)
    node, port = f"img-{uuid.uuid4().hex[:8]}", free_port()
    name = f"imageops-e2e-{node}"
    _docker(
        host,
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        f"{kubeconfig}:/etc/imageops/kubeconfig:ro",
        "-e",
        "KUBECONFIG=/etc/imageops/kubeconfig",
        "-v",
        f"{host.removeprefix('unix://')}:/var/run/docker.sock",
        "-e",
        "DOCKER_HOST=unix:///var/run/docker.sock",
        # As the chart's downward API sets it: the heartbeat Lease's namespace.
        "-e",
        f"POD_NAMESPACE={ops.namespace}",
        str(built["ref"]),
        "run",
        "--role",
        "agent",
        "--node-name",
        node,
        "--metrics-port",
        str(port),
        "--namespace",
        ops.namespace,
    )
    try:
        wait_until(lambda: _healthz(port, host, name), 60, "/healthz of the containerized agent")
        source = testbed.make_image(testbed.unique())
        target = testbed.unique()
        ops.create(
            "in-image", {"action": "Tag", "image": source, "target": target, "nodeName": node}
        )
        status = ops.wait_phase("in-image", timeout=60)
        assert status["phase"] == "Succeeded", status
        assert testbed.image_id(target) == testbed.image_id(source)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'imageops_operations_total{action="Tag",result="succeeded"} 1.0' in text
        # The chart's `helm test` pod, run from this image against this agent.
        hook = _docker(
            host,
            "run",
            "--rm",
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--entrypoint",
            "python",
            str(built["ref"]),
            "-c",
            _helm_test_script(port),
        ).stdout
        assert "imageops metrics service: healthy" in hook
    finally:
        logs = subprocess.run(
            ["docker", "-H", host, "logs", name], capture_output=True, text=True, check=False
        )
        (tmp_path / "agent.log").write_text(logs.stdout + logs.stderr)
        subprocess.run(["docker", "-H", host, "rm", "-f", name], capture_output=True, check=False)


def _helm_test_script(port: int) -> str:
    """The chart's test pod script, aimed at 127.0.0.1 instead of the Service."""
    text = helm(
        "template",
        "r",
        str(CHART),
        "--set",
        "fullnameOverride=hook",
        "--set",
        f"metrics.service.port={port}",
        "--show-only",
        "templates/tests/test-healthz.yaml",
    ).stdout
    container = yaml.safe_load(text)["spec"]["containers"][0]
    assert container["command"] == ["python", "-c"]
    script = str(container["args"][0])
    assert f"http://hook-metrics:{port}" in script
    return script.replace("http://hook-metrics:", "http://127.0.0.1:")


def _healthz(port: int, host: str, name: str) -> bool:
    state = _docker(host, "inspect", "--format", "{{.State.Running}}", name).stdout.strip()
    if state != "true":
        logs = subprocess.run(
            ["docker", "-H", host, "logs", name], capture_output=True, text=True, check=False
        )
        raise AssertionError(f"agent container exited:\n{logs.stdout}{logs.stderr}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
