"""The API side of the benchmarks: a client, a namespace, and a watch that timestamps results.

Completion is observed through a watch (not polling), so a measured latency is the time
from the create call to the moment the API server told us the phase became terminal.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any, cast

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from tests.e2e.harness import GROUP, PLURAL, VERSION, Obj, Ops

TERMINAL = ("Succeeded", "Failed")


def api_client(kubeconfig: str, pool: int = 64) -> client.ApiClient:
    """An API client with a connection pool large enough for concurrent creates."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.connection_pool_maxsize = pool
    return client.ApiClient(cfg)


def finished(obj: Obj) -> bool:
    """Whether the object's status is terminal for its current generation."""
    status = obj.get("status") or {}
    generation = obj.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    return status.get("phase") in TERMINAL and observed in (None, generation)


class PhaseWatcher:
    """Watches one namespace's objects of a plural; records when each first became terminal."""

    def __init__(self, api: client.ApiClient, namespace: str, plural: str = PLURAL) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.plural = plural
        self.done: dict[str, tuple[float, Obj]] = {}
        self.phase_seen: dict[str, dict[str, float]] = {}
        self.events_by_node: Counter[str] = Counter()
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{plural}", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"watch of {plural} in {namespace} did not start")

    def _list(self) -> str:
        listing = cast(
            Obj,
            self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural),
        )
        for obj in listing.get("items", []):
            self._seen(obj)
        return str(listing["metadata"]["resourceVersion"])

    def _run(self) -> None:
        version = self._list()
        self._ready.set()
        while not self._stop.is_set():
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    self.plural,
                    resource_version=version,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                ):
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        obj = event["object"]
                        node = (obj.get("spec") or {}).get("nodeName") or ""
                        with self._cond:
                            self.events_by_node[node] += 1
                        self._seen(obj)
                version = stream.resource_version or version
            except ApiException as exc:
                if exc.status != 410:
                    time.sleep(0.5)
                version = self._list()
            except Exception:  # the connection dropped: continue from the last version
                time.sleep(0.2)

    def _seen(self, obj: Obj) -> None:
        now = time.perf_counter()
        name = obj["metadata"]["name"]
        phase = (obj.get("status") or {}).get("phase") or "New"
        with self._cond:
            self.phase_seen.setdefault(name, {}).setdefault(phase, now)
        if not finished(obj):
            return
        with self._cond:
            if name not in self.done:
                self.done[name] = (now, obj)
                self._cond.notify_all()

    def wait(self, names: Iterable[str], timeout: float) -> dict[str, tuple[float, Obj]]:
        """Wait until every name finished; returns name → (perf_counter time, object)."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not wanted <= self.done.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(wanted - self.done.keys())
                    raise TimeoutError(
                        f"{len(missing)} of {len(wanted)} not finished after {timeout:.0f}s: "
                        f"{missing[:5]}"
                    )
                self._cond.wait(min(left, 1.0))
            return {n: self.done[n] for n in wanted}

    def node_counts(self) -> Counter[str]:
        """Events seen so far per spec.nodeName."""
        with self._cond:
            return Counter(self.events_by_node)

    def stop(self) -> None:
        """Stop after the current watch request ends (the thread is a daemon)."""
        self._stop.set()


class BenchKube:
    """A benchmark namespace with its ImageOperations."""

    def __init__(self, kubeconfig: str, namespace: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.api = api_client(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.namespace = namespace or f"bench-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(ApiException):
            self.core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
            )
        self.ops = Ops(self.api, self.namespace)
        self.started: dict[str, float] = {}
        self.watcher = PhaseWatcher(self.api, self.namespace)

    def create(self, name: str, spec: Obj) -> float:
        """Create an ImageOperation; returns the perf_counter time just before the call."""
        start = time.perf_counter()
        self.ops.create(name, spec, labels={"bench.imageops.dev/run": self.namespace})
        self.started[name] = start
        return start

    def run_one(self, name: str, spec: Obj, timeout: float = 300) -> tuple[float, Obj]:
        """Create, wait for the terminal phase; (seconds, object). Raises on Failed."""
        start = self.create(name, spec)
        end, obj = self.watcher.wait([name], timeout)[name]
        if obj["status"]["phase"] != "Succeeded":
            raise RuntimeError(f"{name} failed: {obj['status'].get('lastError')}")
        return end - start, obj

    def phase_offsets(self, name: str) -> dict[str, float]:
        """Seconds from the create call to the first watch event showing each phase."""
        start = self.started[name]
        seen = self.watcher.phase_seen.get(name, {})
        return {phase: at - start for phase, at in seen.items()}

    def get_seconds(self, name: str) -> float:
        """One GET of the object through the Python client (a warm connection)."""
        start = time.perf_counter()
        self.ops.get(name)
        return time.perf_counter() - start

    @property
    def _ns_json(self) -> list[str]:
        return ["-n", self.namespace, "-o", "json"]

    def kubectl_get_seconds(self, name: str) -> float:
        """One `kubectl get` of the object, process start included."""
        binary = shutil.which("kubectl") or "kubectl"
        start = time.perf_counter()
        subprocess.run(
            [binary, "--kubeconfig", self.kubeconfig, "get", "imgop", name, *self._ns_json],
            capture_output=True,
            check=True,
            timeout=60,
        )
        return time.perf_counter() - start

    def delete_operations(self, timeout: float = 120) -> None:
        """Delete every ImageOperation of the namespace and wait until they are gone.

        A fresh operator lists everything on start: leftovers of earlier benchmarks would
        add to its memory and start-up work.
        """
        self.custom.delete_collection_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listing = cast(
                Obj,
                self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, limit=1
                ),
            )
            if not listing.get("items"):
                return
            time.sleep(0.5)
        raise TimeoutError(f"ImageOperations in {self.namespace} not gone after {timeout}s")

    def clean(self) -> None:
        """Delete this run's ImageOperations, Workflows, Events and Leases, then the namespace.

        The bed runs no controller-manager, so the namespace itself stays Terminating.
        """
        self.watcher.stop()
        for plural in (PLURAL, "workflows"):
            with contextlib.suppress(ApiException):
                self.custom.delete_collection_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plural
                )
        with contextlib.suppress(ApiException):
            self.core.delete_collection_namespaced_event(self.namespace)
        with contextlib.suppress(ApiException):
            client.CoordinationV1Api(self.api).delete_collection_namespaced_lease(self.namespace)
        with contextlib.suppress(ApiException):
            self.core.delete_collection_namespaced_secret(self.namespace)
        with contextlib.suppress(ApiException):
            self.core.delete_namespace(self.namespace)


def crd_exists(api: client.ApiClient, name: str) -> bool:
    """Whether the API server has the CRD ``name``."""
    try:
        client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def names(prefix: str, count: int) -> list[str]:
    """``count`` object names with a common prefix."""
    return [f"{prefix}-{i:04d}" for i in range(count)]


def failures(done: dict[str, tuple[float, Obj]]) -> dict[str, Any]:
    """Failed objects: how many per lastError.reason, with one message of each."""
    reasons: dict[str, Any] = {}
    for _, obj in done.values():
        status = obj.get("status") or {}
        if status.get("phase") == "Succeeded":
            continue
        error = status.get("lastError") or {}
        entry = reasons.setdefault(error.get("reason", "?"), {"count": 0})
        entry["count"] += 1
        entry.setdefault("message", error.get("message", ""))
    return reasons
