"""A simulated agent for many nodes at once (scale benchmark): ``FakeAgentFleet``.

One asyncio loop plays the agent of every simulated node. It watches the
ImageOperations addressed to its nodes (filtered by the API server: label
``imageops.dev/node in (...)``, one watch per 100 nodes), decides what to do with
each event as the real agent does (services.lifecycle.decide), waits a sampled
latency instead of calling Docker, and writes the status the real agent writes,
built by the same functions (services.lifecycle: started_patch, then
succeeded_patch or failed_patch, an OperationError's ErrorInfo) and sent by the
same client call (adapters.kube.AsyncKube.patch_status). Like the real agent, an
operation that ends within ``start_grace`` writes one status instead of two.

A fake: it never touches an image. Real agents (``imageops run --role agent``)
run beside it for a handful of nodes (bench/scale.py).

Run as a process: ``python -m bench.fleet --namespace NS --nodes-file FILE ...``
(prints "ready" once its watches run; SIGTERM stops it and prints its counters).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from bench.fleet_profile import FleetProfile, Latency, failing_nodes, fake_digest, fake_result
from imageops.adapters.kube import AsyncKube, Kube, ObjectRef
from imageops.adapters.kubehttp import KubeHttp
from imageops.models.base import GROUP, VERSION
from imageops.models.common import Action, ErrorReason, Phase
from imageops.models.imageoperation import PLURAL, ImageOperationSpec, ImageOperationStatus
from imageops.models.labels import NODE_LABEL
from imageops.services import lifecycle
from imageops.services.dag import label_value
from imageops.services.errors import OperationError
from imageops.services.lifecycle import Decision, RunState
from imageops.services.perform import effective_pull_policy

__all__ = [
    "FakeAgentFleet",
    "FleetProfile",
    "FleetThread",
    "Latency",
    "failing_nodes",
    "fake_digest",
    "fake_result",
]

WATCH_CHUNK = 100  # nodes per watch: a label selector `in (...)` of 100 values


@dataclass
class FleetCounters:
    """What the fleet did (its own API writes are not the controller's)."""

    events: int = 0
    foreign: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    status_writes: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


class FakeAgentFleet:
    """The agent of every simulated node, in one asyncio loop (see the module docstring)."""

    def __init__(
        self, api: client.ApiClient, namespace: str, nodes: Sequence[str], profile: FleetProfile
    ) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        # Status writes through the agent's own client (plain JSON, KUBECONFIG), as the agent.
        self.kube = AsyncKube(Kube(KubeHttp(), component="imageops", host="fake-agent-fleet"))
        self.namespace = namespace
        self.nodes = frozenset(nodes)
        self.profile = profile
        self.counters = FleetCounters()
        self.rng = random.Random(profile.seed)
        self.running: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self.finished: dict[str, int] = {}  # uid -> generation this fleet completed
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._stop = threading.Event()
        self._ready: list[threading.Event] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Watch and complete operations until ``stop`` is set."""
        self._loop = asyncio.get_running_loop()
        self._loop.set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="fleet"))
        ordered = sorted(self.nodes)
        chunks = [ordered[i : i + WATCH_CHUNK] for i in range(0, len(ordered), WATCH_CHUNK)]
        threads = []
        for chunk in chunks:
            ready = threading.Event()
            self._ready.append(ready)
            selector = f"{NODE_LABEL} in ({','.join(label_value(n) for n in chunk)})"
            thread = threading.Thread(
                target=self._watch, args=(selector, ready), name="fleet-watch", daemon=True
            )
            thread.start()
            threads.append(thread)
        await stop.wait()
        self._stop.set()
        tasks = [task for _, task in self.running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def ready(self, timeout: float = 60) -> bool:
        """Whether every watch has listed and started (waits up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(self._ready) < math.ceil(len(self.nodes) / WATCH_CHUNK):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return all(r.wait(max(deadline - time.monotonic(), 0)) for r in self._ready)

    def _watch(self, selector: str, ready: threading.Event) -> None:
        """List, then watch from that version; relist on 410 (runs in its own thread)."""
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listing: Any = self.custom.list_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, label_selector=selector
                    )
                    for obj in listing.get("items", []):
                        self._hand_over("ADDED", obj)
                    version = listing["metadata"]["resourceVersion"]
                    ready.set()
                stream = watch.Watch()  # type: ignore[no-untyped-call]
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    label_selector=selector,
                    resource_version=version,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                ):
                    if self._stop.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._hand_over(event["type"], event["object"])
                version = stream.resource_version or version
            except ApiException as exc:
                version = None if exc.status == 410 else version
                time.sleep(0.2)
            except Exception:  # a dropped connection: go on from the last version
                time.sleep(0.2)

    def _hand_over(self, event_type: str, obj: Mapping[str, Any]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.observe, event_type, obj)

    def observe(self, event_type: str, body: Mapping[str, Any]) -> None:
        """One watch event, decided as workers.agent.Agent.observe decides it."""
        self.counters.events += 1
        meta = body["metadata"]
        uid = str(meta["uid"])
        spec = body.get("spec") or {}
        if spec.get("nodeName") not in self.nodes:
            self.counters.foreign += 1
            return
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self._cancel(uid)
            return
        generation = int(meta.get("generation") or 1)
        if self.finished.get(uid) == generation:
            return  # a late event of a write of ours
        status = ImageOperationStatus.model_validate(body.get("status") or {})
        current = self.running.get(uid)
        decision = lifecycle.decide(generation, status, current[0] if current else None)
        if decision is Decision.SKIP:
            return
        if decision is Decision.RESTART:
            self._cancel(uid)
        ref = ObjectRef.from_body(body, PLURAL)
        task = asyncio.get_running_loop().create_task(
            self._run(ref, uid, ImageOperationSpec.model_validate(spec), generation)
        )
        self.running[uid] = (generation, task)

    def _cancel(self, uid: str) -> None:
        current = self.running.pop(uid, None)
        if current:
            current[1].cancel()

    async def _run(
        self, ref: ObjectRef, uid: str, spec: ImageOperationSpec, generation: int
    ) -> None:
        node = str(spec.node_name)
        slot = self._slots.setdefault(node, asyncio.Semaphore(self.profile.max_concurrent))
        try:
            async with slot:
                await self._perform(ref, spec, generation, node)
            self.finished[uid] = generation
        finally:
            current = self.running.get(uid)
            if current and current[1] is asyncio.current_task():
                del self.running[uid]

    async def _perform(
        self, ref: ObjectRef, spec: ImageOperationSpec, generation: int, node: str
    ) -> None:
        """Running (unless it ends within the grace), then the result: as the real agent."""
        self.counters.started += 1
        run = RunState(generation, node, uuid.uuid4().hex[:12], _now(), [], attempts=1)
        run.started = True
        policy = effective_pull_policy(spec) if spec.action == Action.PULL else None
        extra: dict[str, Any] = {"pull_policy": policy, "clear": True}
        message = f"Started {spec.action} of {spec.image} on {node} (job {run.job_id})"
        latency = self.profile.latency.sample(self.rng)
        grace = self.profile.start_grace
        if latency > grace:
            await asyncio.sleep(grace)
            await self._write(
                ref, lifecycle.started_patch(run, Phase.RUNNING, message, _now(), **extra)
            )
            await asyncio.sleep(latency - grace)
            await self._write(ref, self._outcome(ref, spec, run))
        else:
            await asyncio.sleep(latency)
            first = lifecycle.started_patch(run, Phase.RUNNING, message, _now(), **extra)
            await self._write(ref, {**first, **self._outcome(ref, spec, run)})

    def _outcome(self, ref: ObjectRef, spec: ImageOperationSpec, run: RunState) -> dict[str, Any]:
        fails = run.node in self.profile.failing_nodes or (
            self.profile.op_failure_rate > 0 and self.rng.random() < self.profile.op_failure_rate
        )
        if fails:
            self.counters.failed += 1
            error = OperationError(
                ErrorReason.REGISTRY_UNAVAILABLE,
                f"simulated failure of {spec.action} {spec.image} on node {run.node} "
                "(bench FakeAgentFleet): registry answered 503 Service Unavailable",
            )
            return lifecycle.failed_patch(run, error, _now())
        self.counters.succeeded += 1
        return lifecycle.succeeded_patch(run, fake_result(spec), _now())

    async def _write(self, ref: ObjectRef, patch: dict[str, Any]) -> None:
        self.counters.status_writes += 1
        await self.kube.patch_status(ref, patch)


class FleetThread:
    """A FakeAgentFleet in a thread of its own, with its own event loop (tests)."""

    def __init__(self, fleet: FakeAgentFleet) -> None:
        self.fleet = fleet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fake-agent-fleet", daemon=True)

    def _main(self) -> None:
        async def serve() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._started.set()
            await self.fleet.run(self._stop)

        asyncio.run(serve())

    def start(self, timeout: float = 60) -> FleetThread:
        """Start; return once every watch has listed."""
        self._thread.start()
        if not self._started.wait(timeout) or not self.fleet.ready(timeout):
            raise RuntimeError(f"fake agent fleet not watching after {timeout}s")
        return self

    def stop(self) -> None:
        """Cancel what runs and stop the loop."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


def _args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--nodes-file", required=True, help="node names, one per line")
    parser.add_argument("--latency", default="lognormal:0.5,0.5")
    parser.add_argument("--failing-nodes-file", help="nodes whose operations all fail")
    parser.add_argument("--op-failure-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a fleet until SIGTERM; print "ready", then at the end its counters as JSON."""
    from bench.kube import api_client  # the bench's client: a large connection pool

    args = _args(sys.argv[1:] if argv is None else argv)
    nodes = Path(args.nodes_file).read_text().split()
    failing = Path(args.failing_nodes_file).read_text().split() if args.failing_nodes_file else []
    profile = FleetProfile(
        latency=Latency.parse(args.latency),
        failing_nodes=frozenset(failing),
        op_failure_rate=args.op_failure_rate,
        seed=args.seed,
    )
    fleet = FakeAgentFleet(api_client(args.kubeconfig, pool=64), args.namespace, nodes, profile)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(fleet.run(stop))
        await asyncio.to_thread(fleet.ready)
        print("ready", flush=True)
        await task

    asyncio.run(serve())
    print(json.dumps(fleet.counters.__dict__), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
