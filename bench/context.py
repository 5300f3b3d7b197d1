"""What every benchmark needs: the bed, the API namespace, settings, and CLI timing."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.harness import Obj
from tests.testbed import Testbed

from bench.common import Settings
from bench.images import RegistryLog
from bench.kube import BenchKube
from bench.procs import BenchOperator

MAIN_NODE = "bench-main"


@dataclass
class Context:
    """Shared state of one benchmark run."""

    bed: Testbed
    kube: BenchKube
    settings: Settings
    run_id: str
    registry_log: RegistryLog
    auth_registry_log: RegistryLog
    operator: BenchOperator | None = None
    results: dict[str, Any] = field(default_factory=dict)

    def ref(self, name: str, tag: str = "1", registry: str | None = None) -> str:
        """A reference unique to this run in the open registry (or ``registry``)."""
        return f"{registry or self.bed.registry}/bench/{self.run_id}/{name}:{tag}"

    def repo_of(self, ref: str) -> str:
        """host/repo:tag → repo."""
        return ref.split("/", 1)[1].rsplit(":", 1)[0]

    def spec(self, action: str, image: str, **fields: Any) -> Obj:
        """An ImageOperation spec for the main benchmark node."""
        return {"action": action, "image": image, "nodeName": MAIN_NODE, **fields}

    def cli(self, *args: str) -> float:
        """Wall time of one docker CLI command against the bed's daemon (must succeed)."""
        start = time.perf_counter()
        out = self.bed.docker(*args, check=False)
        elapsed = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {out.stderr.decode()[-500:]}")
        return elapsed

    def warm_up(self, nodes: list[str]) -> None:
        """One Tag per node, waited for: once it succeeded, that node's agent is watching.

        /healthz answers before kopf has listed and opened its watch, so without this the
        first measured operations would include the operator's start-up.
        """
        seed = os.environ["IMAGEOPS_SEED_IMAGE"]
        tag = uuid.uuid4().hex[:6]
        items = [
            (
                f"warm-{node}-{tag}",
                {"action": "Tag", "image": seed, "target": self.ref("warm", f"{node}-{tag}")}
                | {"nodeName": node},
            )
            for node in nodes
        ]
        self.create_many(items)
        self.kube.watcher.wait([name for name, _ in items], timeout=300)
        self.bed.docker("rmi", *(spec["target"] for _, spec in items), check=False)

    def create_many(self, items: list[tuple[str, Obj]], workers: int = 16) -> dict[str, float]:
        """Create ImageOperations concurrently; name → perf_counter time of its create call."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            starts = list(pool.map(lambda item: self.kube.create(*item), items))
        return {name: start for (name, _), start in zip(items, starts, strict=True)}


def run_cli_concurrently(bed: Testbed, commands: list[list[str]]) -> float:
    """Start every docker command at once; wall time until the last one exits."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["docker", "-H", bed.docker_host, *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for cmd in commands
    ]
    failed = [p for p in procs if p.wait(timeout=600) != 0]
    elapsed = time.perf_counter() - start
    if failed:
        err = failed[0].stderr.read().decode() if failed[0].stderr else ""
        raise RuntimeError(f"{len(failed)} docker commands failed: {err[-300:]}")
    return elapsed
