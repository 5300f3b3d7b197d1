"""Wires roles, kopf, the Docker backend, metrics and the Kubernetes client together.

Each role is its own kopf operator (own registry and settings) in one event
loop, because the agent's watch of ImageOperations is filtered by the API
server to its node while the controller must see the unassigned ones.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import kopf

from imageops.adapters import metrics
from imageops.adapters.backends import detect_runtime, make_runtime_backend
from imageops.adapters.kube import AsyncKube, Kube, load_api_client
from imageops.handlers import imageoperation, imagesession, workflow
from imageops.models.base import GROUP
from imageops.models.imageoperation import PLURAL
from imageops.workers.agent import Agent, AgentConfig
from imageops.workers.assigner import Assigner
from imageops.workers.context import ControllerContext
from imageops.workers.executor import AttemptExecutor
from imageops.workers.heartbeat import run_heartbeat
from imageops.workers.nodes import NodeDirectory
from imageops.workers.opindex import OperationIndex
from imageops.workers.sessions import SessionTracker
from imageops.workers.workflows import WorkflowReconciler

log = logging.getLogger(__name__)
ROLES = ("agent", "controller")


@dataclass
class RunOptions:
    """Options of ``imageops run``."""

    roles: tuple[str, ...]
    node_name: str
    namespaces: list[str] = field(default_factory=list)
    max_concurrent: int = 5
    metrics_port: int = 8080
    allowed_registries: list[str] = field(default_factory=list)
    docker_backend: str = "sdk"
    docker_host: str | None = None
    runtime: str = "auto"
    runtime_endpoint: str | None = None
    runtime_socket_dir: str = "/var/run"
    progress_interval: float = 2.0
    lease_namespace: str = "default"
    lease_duration: int = 30
    node_grace_seconds: float = 60.0
    sweep_interval: float = 2.0
    backoff_base: float = 2.0
    backoff_cap: float = 60.0


def _settings(field_selector: str | None = None) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
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
        return kopf.login_via_client(**kwargs)

    return registry


def _operator(
    options: RunOptions,
    registry: kopf.OperatorRegistry,
    settings: kopf.OperatorSettings,
    stop: asyncio.Event,
    ready: asyncio.Event,
) -> Any:
    return kopf.operator(
        registry=registry,
        settings=settings,
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


async def run(options: RunOptions) -> None:
    """Run the selected roles until a signal (or a failed operator) stops them."""
    heartbeat = metrics.Heartbeat()
    server = metrics.serve(options.metrics_port, heartbeat)
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
    background = [asyncio.create_task(loop) for loop in loops]
    background.append(asyncio.create_task(_take_signals(readies, stop)))
    kopfs = [
        asyncio.create_task(_operator(options, registry, settings, stop, ready))
        for (registry, settings), ready in zip(operators, readies, strict=True)
    ]
    try:
        await asyncio.wait(kopfs, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        if agent is not None:
            await agent.shutdown()
        await asyncio.gather(*kopfs, return_exceptions=True)
        for task in background:
            task.cancel()
        server.shutdown()


def _agent(options: RunOptions, kube: AsyncKube) -> Agent:
    choice = detect_runtime(
        options.runtime, options.runtime_endpoint, options.docker_host, options.runtime_socket_dir
    )
    backend = make_runtime_backend(choice, options.docker_backend)
    config = AgentConfig(
        node_name=options.node_name,
        max_concurrent=options.max_concurrent,
        allowed_registries=options.allowed_registries,
        progress_interval=options.progress_interval,
        backoff_base=options.backoff_base,
        backoff_cap=options.backoff_cap,
    )
    return Agent(config, AttemptExecutor(backend, options.max_concurrent), kube)


def _controller(
    options: RunOptions, kube: AsyncKube
) -> tuple[kopf.OperatorRegistry, list[Coroutine[Any, Any, None]]]:
    """The controller's kopf registry and its background loops."""
    ctx = ControllerContext(
        kube=kube,
        index=OperationIndex(),
        nodes=NodeDirectory(kube, options.lease_namespace),
        node_grace_seconds=options.node_grace_seconds,
        sweep_interval=options.sweep_interval,
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
    loops = [assigner.run_sweeper(), workflows.run_sweeper(), sessions.run_sweeper()]
    return registry, [ctx.nodes.run(), *loops]
