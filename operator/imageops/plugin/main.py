"""``kubectl imageops``: pull, push and tag on nodes, watch them live, list and explain.

Installed as the executable ``kubectl-imageops``, which kubectl runs for
``kubectl imageops ...``. It creates the same custom resources a user could write.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

import yaml

from imageops.adapters.kubeapi import Connection, PluginClient, PluginError
from imageops.plugin.explain import explain
from imageops.plugin.objects import InvalidRequest, Request, build, parse_selector
from imageops.plugin.table import get_table
from imageops.plugin.watch import watch


def _globals() -> argparse.ArgumentParser:
    """kubectl's own options, accepted before or after the subcommand's arguments."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    common.add_argument("--context", help="kubeconfig context to use")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
    common.add_argument("-o", "--output", choices=("json", "yaml"), help="json or yaml")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand."""
    common = _globals()
    parser = argparse.ArgumentParser(
        prog="kubectl imageops",
        description="Pull, push and tag images on nodes, watch them live, list and explain.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for action in ("pull", "push", "tag"):
        p = sub.add_parser(action, parents=[common], help=f"{action} an image on a node")
        p.add_argument("image", help="image reference (the source for tag and push)")
        if action != "pull":
            p.add_argument("target", nargs="?" if action == "push" else None, help="new reference")
        p.add_argument("--node", help="node to run on")
        p.add_argument("--selector", "-l", help="KEY=VALUE[,...]: a node with these labels")
        p.add_argument("--all-nodes", action="store_true", help="every node matching --selector")
        p.add_argument("--parallelism", type=int, help="with --all-nodes: nodes at once")
        p.add_argument("--session", help="ImageSession the work belongs to")
        p.add_argument("--credentials", help="kubernetes.io/dockerconfigjson Secret name")
        p.add_argument("--dry-run", action="store_true", help="ask the registry, change nothing")
        p.add_argument("--force", action="store_true", help="tag/push: move an existing target")
        p.add_argument("--platform", help="pull: os/arch[/variant]")
        p.add_argument("--name", help="object name (default: generated)")
        p.add_argument("--wait", action="store_true", help="watch until it ends; exit 0 or 1")
    w = sub.add_parser("watch", parents=[common], help="follow an operation, workflow or session")
    w.add_argument("name", help="NAME, or imgop/NAME, imgwf/NAME, imgsess/NAME")
    w.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    g = sub.add_parser("get", parents=[common], help="operations, workflows and sessions")
    g.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    e = sub.add_parser("explain", parents=[common], help="what an error reason means")
    e.add_argument("reason", nargs="?", help="a reason such as RateLimited (none: list them)")
    return parser


def _print(obj: object, output: str | None, out: TextIO) -> None:
    if output == "yaml":
        out.write(yaml.safe_dump(obj, sort_keys=False))
    else:
        out.write(json.dumps(obj, indent=2) + "\n")


def _create(args: argparse.Namespace, out: TextIO) -> int:
    request = Request(
        action=args.command.capitalize(),
        image=args.image,
        target=getattr(args, "target", None),
        node=args.node,
        selector=parse_selector(args.selector),
        all_nodes=args.all_nodes,
        session=args.session,
        credentials=args.credentials,
        dry_run=args.dry_run,
        force=args.force,
        platform=args.platform,
        name=args.name,
        parallelism=args.parallelism,
    )
    plural, body = build(request)
    kube = PluginClient(_connection(args))
    created = kube.create(plural, body)
    name = created["metadata"]["name"]
    if args.output and not args.wait:
        _print(created, args.output, out)
    else:
        print(f"{created['kind'].lower()}.imageops.dev/{name} created", file=out, flush=True)
    if args.wait:
        return watch(kube, f"{plural}/{name}", out, args.output)
    return 0


def _connection(args: argparse.Namespace) -> Connection:
    return Connection(args.kubeconfig, args.context, args.namespace)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Dispatch one parsed command; the exit code."""
    if args.command in ("pull", "push", "tag"):
        return _create(args, out)
    if args.command == "explain":
        return explain(args.reason, out, args.output)
    kube = PluginClient(_connection(args))
    if args.command == "watch":
        return watch(kube, args.name, out, args.output, timeout=args.timeout)
    return get_table(kube, args.all_namespaces, out, args.output)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kubectl-imageops``: 0 success, 1 failed work, 2 bad input or errors."""
    args = build_parser().parse_args(argv)
    try:
        return run(args, sys.stdout)
    except (InvalidRequest, PluginError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
