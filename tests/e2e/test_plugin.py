"""``kubectl imageops`` as a person sees it: in a real terminal (tmux) and piped.

The plugin runs as kubectl runs it (``kubectl imageops ...`` finds ``kubectl-imageops`` on
PATH) against the bed's API server and the real operator. Large pulls of random data go
through FakeSlowLink, so that the bars move for several seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.conftest import missing
from tests.e2e.fixtures import MAIN_NODE
from tests.e2e.harness import OperatorProcess, Ops, wait_until
from tests.faults import FakeSlowLink
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
POOL_LABEL = "e2e.imageops.dev/plugin-pool"
# A bar mid-way: "━" drawn by rich, a rate, and a per cent that is neither 0 nor 100.
_MOVING = re.compile(r"━.*\b([1-9]\d?)% [\d.]+/[\d.]+MB.*\b[\d.]+[kMG]?B/s")
CAPTURES = Path(os.environ.get("IMAGEOPS_CAPTURE_DIR", "/tmp")) / "imageops-plugin-captures"


def _plugin_env() -> dict[str, str]:
    """PATH with the venv's kubectl-imageops first, as `pip install` puts it for a user."""
    bindir = str(Path(sys.executable).parent)
    if not (Path(bindir) / "kubectl-imageops").exists():
        missing(f"kubectl-imageops is not installed in {bindir}: `make venv`")
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}


def kubectl_imageops(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``kubectl imageops ARGS`` through the real kubectl's plugin lookup, stdout piped."""
    if shutil.which("kubectl") is None:
        missing("kubectl is not on PATH: `source .testenv/env.sh`")
    return subprocess.run(
        ["kubectl", "imageops", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_plugin_env(),
        check=False,
    )


@pytest.fixture
def big_image(testbed: Testbed) -> Iterator[str]:
    """~56 MB of random data in 4 layers, in the open registry and not on the engine."""
    ref = testbed.unique(tag="big")
    testbed.make_image(ref, size_bytes=32 * MB, layers=4)
    testbed.push_open(ref)
    testbed.docker("rmi", "--force", ref, check=False)
    yield ref
    testbed.docker("rmi", "--force", ref, check=False)


@pytest.fixture
def slow_link(testbed: Testbed) -> Iterator[FakeSlowLink]:
    """The open registry behind a link of 5 MB/s per connection."""
    with FakeSlowLink(testbed.registry, rate=5 * MB) as link:
        yield link


def _via(link: FakeSlowLink, ref: str) -> str:
    return f"{link.address}/{ref.split('/', 1)[1]}"


class Tmux:
    """A tmux server of its own (-L), one window of fixed size; killed by its socket name."""

    def __init__(self, width: int = 150, height: int = 30) -> None:
        if shutil.which("tmux") is None:
            missing("tmux is not installed (hack/testenv.sh installs it)")
        self.socket = f"imageops-e2e-{uuid.uuid4().hex[:8]}"
        self.size = (str(width), str(height))

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=_plugin_env(),
            check=False,
        )

    def start(self, command: str) -> None:
        """Run ``command`` in a shell in the window; it stays open after the command ends."""
        out = self._tmux(
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            self.size[0],
            "-y",
            self.size[1],
            f"{command}; echo EXIT=$?; sleep 600",
        )
        assert out.returncode == 0, out.stderr

    def screen(self) -> str:
        """The visible screen, as text (capture-pane)."""
        return self._tmux("capture-pane", "-p", "-t", "t").stdout

    def close(self) -> None:
        """Kill this tmux server (only this one: its own socket)."""
        self._tmux("kill-server")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    term = Tmux()
    yield term
    term.close()


def _save(name: str, text: str) -> Path:
    CAPTURES.mkdir(parents=True, exist_ok=True)
    path = CAPTURES / f"{name}.txt"
    path.write_text(text)
    return path


def _watch_screen(term: Tmux, timeout: float) -> tuple[str, str]:
    """(a frame with a moving bar, the final screen once EXIT= shows)."""
    moving = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = term.screen()
        if _MOVING.search(screen):
            moving = screen  # the latest moving frame: the furthest along
        if "EXIT=" in screen:
            return moving, screen
        time.sleep(0.3)
    raise AssertionError(f"the plugin did not finish in {timeout}s:\n{term.screen()}")


def test_pull_wait_in_a_terminal_draws_moving_layer_bars(
    operator: OperatorProcess,
    namespace: str,
    big_image: str,
    slow_link: FakeSlowLink,
    tmux: Tmux,
    ops: Ops,
) -> None:
    ref = _via(slow_link, big_image)
    tmux.start(f"kubectl imageops pull {ref} -n {namespace} --node {MAIN_NODE} --name big --wait")
    moving, final = _watch_screen(tmux, timeout=150)
    print(f"\n--- during the pull ({_save('pull-during', moving)}) ---\n{moving}")
    print(f"--- at the end ({_save('pull-final', final)}) ---\n{final}")
    assert moving, f"never saw a bar between 1% and 99% with a rate:\n{final}"
    # One bar per layer, each named by its 12-hex layer id, with an ETA column.
    assert len(re.findall(r"^[a-f0-9]{12} ", moving, re.M)) >= 2, moving
    assert "EXIT=0" in final
    status = ops.status("big")
    assert status["phase"] == "Succeeded"
    assert f"Succeeded imageoperation/big digest {status['digest']}" in final
    assert status["progress"]["summary"].startswith("100% ")


def test_piped_watch_prints_plain_lines_and_the_printer_column_moves(
    operator: OperatorProcess,
    namespace: str,
    big_image: str,
    slow_link: FakeSlowLink,
    ops: Ops,
) -> None:
    ref = _via(slow_link, big_image)
    created = kubectl_imageops("pull", ref, "-n", namespace, "--node", MAIN_NODE, "--name", "p")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "imageoperation.imageops.dev/p created"
    watcher = subprocess.Popen(
        ["kubectl", "imageops", "watch", "p", "-n", namespace],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_plugin_env(),
    )

    def column() -> str | None:
        out = subprocess.run(
            ["kubectl", "get", "imgop", "p", "-n", namespace],
            text=True,
            capture_output=True,
            check=False,
        ).stdout
        found = re.search(r"\b([1-9]\d?)% [\d.]+/[\d.]+MB", out)
        return out if found else None

    table = wait_until(column, timeout=60, what="a Progress column between 1% and 99%")
    print(f"\nkubectl get imgop during the pull:\n{table}")
    out, err = watcher.communicate(timeout=150)
    print(out)
    assert watcher.returncode == 0, err
    assert "\x1b" not in out, "piped output must have no terminal escapes"
    lines = out.splitlines()
    assert any(re.search(r"Running  [1-9]\d?% .*B/s", line) for line in lines), out
    digest = ops.status("p")["digest"]
    assert lines[-1] == f"Succeeded imageoperation/p digest {digest}"


def test_a_failure_exits_non_zero_with_reason_and_suggestion(
    operator: OperatorProcess,
    namespace: str,
    testbed: Testbed,
) -> None:
    missing_ref = testbed.unique(tag="absent")
    out = kubectl_imageops("pull", missing_ref, "-n", namespace, "--node", MAIN_NODE, "--wait")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "error: NotFound: " in out.stdout
    assert "suggestion: Check the repository name" in out.stdout
    # -o json: one JSON frame per change; the last one is final and says why.
    name = re.search(r"imageoperation.imageops.dev/(\S+) created", out.stdout)
    assert name
    frames = kubectl_imageops("watch", name.group(1), "-n", namespace, "-o", "json")
    assert frames.returncode == 1
    last = json.loads(frames.stdout.splitlines()[-1])
    assert last["finished"] and not last["succeeded"] and last["phase"] == "Failed"
    assert last["errors"][0]["reason"] == "NotFound" and last["errors"][0]["suggestion"]


def test_bad_input_is_refused_before_anything_is_created(namespace: str, ops: Ops) -> None:
    out = kubectl_imageops("tag", "busybox:1", "-n", namespace)
    assert out.returncode == 2 and "error:" in out.stderr
    out = kubectl_imageops("pull", "Bad Ref", "-n", namespace)
    assert out.returncode == 2 and "image" in out.stderr
    out = kubectl_imageops("pull", "busybox:1", "--all-nodes", "-n", namespace)
    assert out.returncode == 2 and "--selector" in out.stderr
    assert (
        ops.custom.list_namespaced_custom_object(
            "imageops.dev", "v1alpha1", namespace, "imageoperations"
        )["items"]
        == []
    )


@pytest.fixture
def pool(kube_api: client.ApiClient, log_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """Three labelled Node objects, each with an agent of its own (on the bed's one engine)."""
    core = client.CoreV1Api(kube_api)
    label = uuid.uuid4().hex[:8]
    nodes = [f"e2e-plug-{label}-{i}" for i in range(3)]
    agents = [OperatorProcess(node, "--role", "agent", log_dir=log_dir) for node in nodes]
    with ExitStack() as stack:
        for node in nodes:
            core.create_node(
                client.V1Node(metadata=client.V1ObjectMeta(name=node, labels={POOL_LABEL: label}))
            )
            stack.callback(core.delete_node, node)
        for agent in agents:
            stack.callback(agent.stop)
            agent.start()
        time.sleep(4)  # the controller reads the agents' Leases every few seconds
        yield label, nodes


def test_warm_a_pool_shows_a_bar_per_node_and_the_fan_out_column(
    operator: OperatorProcess,
    namespace: str,
    big_image: str,
    slow_link: FakeSlowLink,
    tmux: Tmux,
    pool: tuple[str, list[str]],
) -> None:
    label, nodes = pool
    ref = _via(slow_link, big_image)
    tmux.start(
        f"kubectl imageops pull {ref} -n {namespace} -l {POOL_LABEL}={label} "
        f"--all-nodes --parallelism 3 --name warm --wait"
    )
    moving = ""
    deadline = time.monotonic() + 150
    while "EXIT=" not in (screen := tmux.screen()) and time.monotonic() < deadline:
        if all(n in screen for n in nodes) and _MOVING.search(screen):
            moving = screen
        time.sleep(0.3)
    print(f"\n--- fan-out during the pull ({_save('fanout-during', moving)}) ---\n{moving}")
    print(f"--- at the end ({_save('fanout-final', screen)}) ---\n{screen}")
    assert moving, screen
    assert "EXIT=0" in screen and "Succeeded workflow/warm" in screen
    table = subprocess.run(
        ["kubectl", "get", "imgwf", "warm", "-n", namespace],
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    print(table)
    assert re.search(r"NODES", table) and re.search(r"\b3/3\b", table)
    listing = kubectl_imageops("get", "-n", namespace)
    assert re.search(r"imgwf/warm\s+Succeeded\s+nodes 3/3 steps 3/3", listing.stdout), listing
    assert len(re.findall(r"imgop/\S+\s+Succeeded", listing.stdout)) == 3, listing.stdout


def test_kubeconfig_context_and_its_namespace_are_honoured(
    operator: OperatorProcess,
    namespace: str,
    testbed: Testbed,
    ops: Ops,
    tmp_path: Path,
) -> None:
    """--kubeconfig FILE --context CTX, and the context's namespace when -n is not given."""
    import yaml

    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    base = config["contexts"][0]
    config["contexts"].append(
        {"name": "plugin-test", "context": {**base["context"], "namespace": namespace}}
    )
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    seed = os.environ.get("IMAGEOPS_SEED_REF") or missing("IMAGEOPS_SEED_REF is not set")
    out = kubectl_imageops(
        "pull",
        seed,
        "--kubeconfig",
        str(path),
        "--context",
        "plugin-test",
        "--node",
        MAIN_NODE,
        "--name",
        "ctx",
        "--wait",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert ops.wait_phase("ctx")["phase"] == "Succeeded"
    listed = kubectl_imageops(
        "get", "--kubeconfig", str(path), "--context", "plugin-test", "-o", "json"
    )
    assert [o["metadata"]["name"] for o in json.loads(listed.stdout)["items"]] == ["ctx"]
    missing_ctx = kubectl_imageops("get", "--kubeconfig", str(path), "--context", "nope")
    assert missing_ctx.returncode == 2 and "error:" in missing_ctx.stderr


def test_watch_a_session_until_its_operations_end(
    operator: OperatorProcess,
    namespace: str,
    testbed: Testbed,
    ops: Ops,
) -> None:
    ops.custom.create_namespaced_custom_object(
        "imageops.dev",
        "v1alpha1",
        namespace,
        "imagesessions",
        {
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": "ImageSession",
            "metadata": {"name": "rel"},
            "spec": {"nodeName": MAIN_NODE},
        },
    )
    seed = os.environ.get("IMAGEOPS_SEED_REF") or missing("IMAGEOPS_SEED_REF is not set")
    fresh = testbed.unique(tag="s")
    testbed.make_image(fresh, size_bytes=MB)
    testbed.push_open(fresh)
    testbed.docker("rmi", "--force", fresh, check=False)
    for image in (seed, fresh):
        out = kubectl_imageops("pull", image, "-n", namespace, "--session", "rel")
        assert out.returncode == 0, out.stderr
    watched = kubectl_imageops("watch", "imgsess/rel", "-n", namespace, "--timeout", "90")
    print(watched.stdout)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    last = watched.stdout.splitlines()[-2:]
    assert re.fullmatch(r"\w+ imagesession/rel", last[0]), last
    assert last[1] == "  2 succeeded, 0 failed, 0 active"
