"""Wires roles, kopf, the Docker backend, metrics and the Kubernetes client together.

Each role is its own kopf operator (own registry and settings) in one event
loop, because the agent's watch of ImageOperations is filtered by the API
server to its node while the controller must see the unassigned ones.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, cast

import kopf

# kopf does not export Insights; passing our own lets /readyz see what kopf serves.
from kopf._cogs.structs.references import Insights

from imageops.adapters import metrics
from imageops.adapters.kube import AsyncKube, Kube, load_api_client
from imageops.adapters.kubehttp import kopf_login
from imageops.handlers import imageoperation
from imageops.models.base import GROUP
from imageops.models.imageoperation import PLURAL
from imageops.models.imagesession import PLURAL as SESSION_PLURAL
from imageops.models.workflow import PLURAL as WORKFLOW_PLURAL
from imageops.runtime.imports import refused
from imageops.settings import ROLES, RunSettings
from imageops.workers.health import probe_watches, wait_until_served
from imageops.workers.heartbeat import run_heartbeat

if TYPE_CHECKING:
    from imageops.workers.agent import Agent

log = logging.getLogger(__name__)
# What each role's kopf operator watches: /readyz is ok only while all are served.
ROLE_PLURALS = {
    "agent": (PLURAL,),
    "controller": (PLURAL, WORKFLOW_PLURAL, SESSION_PLURAL),
}


class _ForeverBackoffs:
    """kopf's request retry delays, never exhausted: a watch outlives any outage.

    kopf's default gives up after 8 retries (about 54 s), and a watch whose request
    gave up stops serving. kopf iterates this once per request, so each gets a fresh
    sequence (not Sized: kopf then counts attempts without a total).
    """

    def __iter__(self) -> Iterator[float]:
        yield from (1, 1, 2, 3, 5, 8)
        while True:
            yield 10


def _settings(field_selector: str | None = None) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.networking.error_backoffs = _ForeverBackoffs()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    if field_selector:
        settings.watching.field_selectors[GROUP, PLURAL] = field_selector
    return settings


def _registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return cast(kopf.ConnectionInfo | None, kopf_login(**kwargs))

    return registry


def _operator(
    options: RunSettings,
    registry: kopf.OperatorRegistry,
    settings: kopf.OperatorSettings,
    stop: asyncio.Event,
    ready: asyncio.Event,
    insights: Insights,
) -> Any:
    return kopf.operator(
        registry=registry,
        settings=settings,
        insights=insights,
        standalone=True,  # several agents must not pause each other through peering
        clusterwide=not options.namespaces,
        namespaces=options.namespaces,
        stop_flag=stop,
        ready_flag=ready,
    )


async def _beat(heartbeat: metrics.Heartbeat) -> None:
    while True:
        heartbeat.beat()
        await asyncio.sleep(5)


async def _take_signals(readies: list[asyncio.Event], stop: asyncio.Event) -> None:
    """Once every kopf operator has started, route SIGTERM/SIGINT to the shared stop flag.

    Each kopf operator installs its own handlers and the last one wins; a signal
    would then stop one operator and leave kopf waiting on the others' stop-flag
    waiters. With one flag for all, every operator stops at once and cleanly.
    """
    for ready in readies:
        await ready.wait()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run(options: RunSettings) -> None:
    """Run the selected roles until a signal (or a failed operator) stops them."""
    heartbeat = metrics.Heartbeat()
    roles: list[str] = [role for role in ROLES if role in options.roles]
    watched = [(f"{role}/{plural}", plural) for role in roles for plural in ROLE_PLURALS[role]]
    health = metrics.WatchHealth([name for name, _ in watched], options.watch_down_seconds)
    server = metrics.serve(options.metrics_port, heartbeat, health)
    kube = AsyncKube(Kube(load_api_client(), component="imageops", host=options.node_name))
    operators: list[tuple[kopf.OperatorRegistry, kopf.OperatorSettings]] = []
    loops: list[Coroutine[Any, Any, None]] = [_beat(heartbeat)]
    agent: Agent | None = None
    if "agent" in options.roles:
        agent = _agent(options, kube)
        registry = _registry()
        imageoperation.register_agent(registry, agent)
        operators.append((registry, _settings(f"spec.nodeName={options.node_name}")))
        loops.append(
            run_heartbeat(kube, options.lease_namespace, options.node_name, options.lease_duration)
        )
    if "controller" in options.roles:
        registry, controller_loops = _controller(options, kube)
        operators.append((registry, _settings()))
        loops.extend(controller_loops)
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in operators]
    insights = [Insights() for _ in operators]
    background = [asyncio.create_task(loop) for loop in loops]
    namespace = options.namespaces[0] if options.namespaces else None
    kopfs: list[asyncio.Task[Any]] = []
    try:
        # kopf resolves its resources once at start: start it only when all are served.
        await _until_signal(wait_until_served(kube, namespace, watched, health))
        background.append(asyncio.create_task(_take_signals(readies, stop)))
        kopfs = [
            asyncio.create_task(_operator(options, registry, settings, stop, ready, seen))
            for (registry, settings), ready, seen in zip(operators, readies, insights, strict=True)
        ]
        served = _served_by(roles, readies, insights)
        background.append(
            asyncio.create_task(probe_watches(kube, namespace, watched, served, health))
        )
        await asyncio.wait(kopfs, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        if agent is not None:
            await agent.shutdown()
        await asyncio.gather(*kopfs, return_exceptions=True)
        for task in background:
            task.cancel()
        server.shutdown()


async def _until_signal(wait: Coroutine[Any, Any, None]) -> None:
    """Run ``wait``; SIGTERM/SIGINT end it early (kopf's handlers are not installed yet)."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(wait)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
        raise SystemExit(0) from None
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _served_by(
    roles: list[str], readies: list[asyncio.Event], insights: list[Insights]
) -> Callable[[str, str], bool]:
    """Whether the kopf operator of a watch's role is ready and serves its resource."""
    by_role = dict(zip(roles, zip(readies, insights, strict=True), strict=True))

    def served(name: str, plural: str) -> bool:
        ready, seen = by_role[name.split("/", 1)[0]]
        return ready.is_set() and any(r.plural == plural for r in seen.watched_resources)

    return served


def _agent(options: RunSettings, kube: AsyncKube) -> Agent:
    # Imported here: a controller-only process never loads the agent's parts (Docker, grpc).
    from imageops.adapters.backends import detect_runtime, make_runtime_backend
    from imageops.adapters.pull_records import FilePullRecords
    from imageops.workers.agent import Agent, AgentConfig
    from imageops.workers.executor import AttemptExecutor

    choice = detect_runtime(
        options.runtime, options.runtime_endpoint, options.docker_host, options.runtime_socket_dir
    )
    with refused("charset_normalizer", "chardet"), warnings.catch_warnings():  # runtime.imports
        # requests warns that it found no detector: that is the point.
        warnings.filterwarnings("ignore", "Unable to find acceptable character detection")
        backend = make_runtime_backend(choice, options.docker_backend)
    config = AgentConfig(
        node_name=options.node_name,
        max_concurrent=options.max_concurrent,
        allowed_registries=options.allowed_registries,
        progress_interval=options.progress_interval,
        backoff_base=options.backoff_base,
        backoff_cap=options.backoff_cap,
        session_wait_seconds=options.session_wait_seconds,
    )
    records = FilePullRecords(options.state_dir)
    return Agent(config, AttemptExecutor(backend, options.max_concurrent, records), kube)


def _controller(
    options: RunSettings, kube: AsyncKube
) -> tuple[kopf.OperatorRegistry, list[Coroutine[Any, Any, None]]]:
    """The controller's kopf registry and its background loops."""
    # Imported here: an agent-only process never loads the controller's modules.
    from imageops.handlers import imagesession, workflow
    from imageops.workers.assigner import Assigner
    from imageops.workers.context import ControllerContext
    from imageops.workers.nodes import NodeDirectory
    from imageops.workers.opindex import OperationIndex
    from imageops.workers.sessions import SessionTracker
    from imageops.workers.workflows import WorkflowReconciler

    ctx = ControllerContext(
        kube=kube,
        index=OperationIndex(),
        nodes=NodeDirectory(
            kube, options.lease_namespace, lease_duration=float(options.lease_duration)
        ),
        node_grace_seconds=options.node_grace_seconds,
        sweep_interval=options.sweep_interval,
        backoff_cap=options.backoff_cap,
        session_wait_seconds=options.session_wait_seconds,
    )
    registry = _registry()
    imageoperation.register_controller(registry, ctx.index)
    assigner = Assigner(ctx)
    ctx.index.subscribe(assigner.on_operation)
    workflows = WorkflowReconciler(ctx)
    ctx.index.subscribe(workflows.on_operation)
    workflow.register(registry, workflows)
    sessions = SessionTracker(ctx)
    ctx.index.subscribe(sessions.on_operation)
    imagesession.register(registry, sessions)
    loops = [assigner.run(), workflows.run(), sessions.run()]
    return registry, [ctx.nodes.run(), *loops]
