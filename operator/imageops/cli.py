"""The ``imageops`` command: run the operator, or generate the CRDs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence

from imageops import __version__
from imageops.adapters.backends import RUNTIMES
from imageops.runtime.operator import ROLES, RunOptions, run


def _csv(values: Sequence[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="imageops", description=__doc__)
    parser.add_argument("--version", action="version", version=f"imageops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    runp = sub.add_parser("run", help="run the operator (every role when --role is not given)")
    runp.add_argument(
        "--role",
        action="append",
        choices=ROLES,
        help="agent (one per node) or controller; repeatable; default: both",
    )
    runp.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="node whose ImageOperations the agent runs (default: $NODE_NAME or host name)",
    )
    scope = runp.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="namespace to watch; repeatable (default: all namespaces)",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    runp.add_argument(
        "--max-concurrent",
        type=int,
        default=5,
        help="Docker operations at once on this node (default 5)",
    )
    runp.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        help="port of /metrics and /healthz (default 8080)",
    )
    runp.add_argument(
        "--allowed-registries",
        action="append",
        default=[],
        help="comma-separated registries operations may use (default: any)",
    )
    runp.add_argument(
        "--docker-backend",
        choices=("sdk", "cli"),
        default="sdk",
        help="Docker SDK (default) or the docker command line",
    )
    runp.add_argument(
        "--docker-host",
        default=os.environ.get("DOCKER_HOST"),
        help="Docker daemon address (default: $DOCKER_HOST or the default socket)",
    )
    runp.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=os.environ.get("IMAGEOPS_RUNTIME") or "auto",
        help="container runtime: auto (default: detect the node's socket), docker, "
        "containerd, or cri (any CRI runtime, e.g. CRI-O: Pull only)",
    )
    runp.add_argument(
        "--runtime-endpoint",
        default=os.environ.get("IMAGEOPS_RUNTIME_ENDPOINT") or None,
        help="the runtime's socket, unix:///PATH (default: detected under --runtime-socket-dir)",
    )
    runp.add_argument(
        "--runtime-socket-dir",
        default=os.environ.get("IMAGEOPS_RUNTIME_SOCKET_DIR") or "/var/run",
        help="where --runtime auto looks for containerd.sock, crio.sock, ... (default /var/run)",
    )
    runp.add_argument("--progress-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    runp.add_argument(
        "--backoff-base",
        type=float,
        default=2.0,
        help="first retry delay in seconds (doubles each retry)",
    )
    runp.add_argument("--backoff-cap", type=float, default=60.0, help="longest retry delay")
    runp.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE") or "default",
        help="namespace of the agents' heartbeat Leases (default: $POD_NAMESPACE or default)",
    )
    runp.add_argument(
        "--lease-duration",
        type=int,
        default=30,
        help="agent heartbeat Lease duration in seconds (renewed every third)",
    )
    runp.add_argument(
        "--node-grace-seconds",
        type=float,
        default=60.0,
        help="how long a node may be without a live agent before its operations "
        "fail with NodeUnavailable",
    )
    runp.add_argument(
        "--session-wait-seconds",
        type=float,
        default=300.0,
        help="how long an operation whose sessionRef names no ImageSession waits for it "
        "(Pending, SessionNotFound) before it fails with SessionNotFound (default 300)",
    )
    runp.add_argument(
        "--watch-down-seconds",
        type=float,
        default=300.0,
        help="/healthz fails once a needed watch has been down this long, so that the "
        "kubelet restarts the process (default 300)",
    )
    runp.add_argument(
        "--state-dir",
        default=os.environ.get("IMAGEOPS_STATE_DIR") or "/var/lib/imageops",
        help="where the agent keeps what survives restarts: who pulled which image "
        "(default: $IMAGEOPS_STATE_DIR or /var/lib/imageops)",
    )
    runp.add_argument("--sweep-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    runp.add_argument("--log-level", default="INFO")

    crds = sub.add_parser("crds", help="write the CRDs generated from the models")
    crds.add_argument("--output", "-o", default="crds", help="directory (default: crds)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if args.command == "crds":
        from imageops.models.crd import write_crds  # here: `imageops run` never needs it

        for path in write_crds(args.output):
            print(path)
        return 0
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kopf logs every handled event at INFO: thousands of lines under load, nothing to act on.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.max_concurrent < 1:
        print("--max-concurrent must be at least 1", file=sys.stderr)
        return 2
    options = RunOptions(
        roles=tuple(args.role or ROLES),
        node_name=args.node_name,
        namespaces=[] if args.all_namespaces else args.namespace,
        max_concurrent=args.max_concurrent,
        metrics_port=args.metrics_port,
        allowed_registries=_csv(args.allowed_registries),
        docker_backend=args.docker_backend,
        docker_host=args.docker_host,
        runtime=args.runtime,
        runtime_endpoint=args.runtime_endpoint,
        runtime_socket_dir=args.runtime_socket_dir,
        progress_interval=args.progress_interval,
        backoff_base=args.backoff_base,
        backoff_cap=args.backoff_cap,
        lease_namespace=args.lease_namespace,
        lease_duration=args.lease_duration,
        node_grace_seconds=args.node_grace_seconds,
        sweep_interval=args.sweep_interval,
        session_wait_seconds=args.session_wait_seconds,
        watch_down_seconds=args.watch_down_seconds,
        state_dir=args.state_dir,
    )
    asyncio.run(run(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
