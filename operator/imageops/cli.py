"""The ``imageops`` command: run the operator, or generate the CRDs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from imageops import __version__
from imageops.runtime.operator import run
from imageops.settings import Option, RunSettings, SettingsError, options, resolve


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand; ``run``'s options come from RunSettings."""
    parser = argparse.ArgumentParser(prog="imageops", description=__doc__)
    parser.add_argument("--version", action="version", version=f"imageops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    runp = sub.add_parser(
        "run",
        help="run the operator (every role when --role is not given)",
        description="Run the operator. Every option can also be set by its environment "
        "variable; a flag wins over the environment.",
    )
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for option in options():
        target: argparse._ActionsContainer = runp
        if option.opt.group:
            target = groups.get(option.opt.group) or runp.add_mutually_exclusive_group()
            groups[option.opt.group] = target
        target.add_argument(*_flags(option), **_argument(option))
    crds = sub.add_parser("crds", help="write the CRDs generated from the models")
    crds.add_argument("--output", "-o", default="crds", help="directory (default: crds)")
    return parser


def _flags(option: Option) -> list[str]:
    return [option.flag, option.opt.short] if option.opt.short else [option.flag]


def _argument(option: Option) -> dict[str, Any]:
    """add_argument's keywords: no argparse default, so that only given flags are seen."""
    env = " or ".join(f"${var}" for var in option.env)
    text = f"{option.opt.help} (default: {option.default_text}; env {env})"
    # Backticks are the docs' Markdown; argparse %-formats help strings.
    text = text.replace("`", "").replace("%", "%%")
    kwargs: dict[str, Any] = {
        "dest": option.name,
        "default": argparse.SUPPRESS,
        "help": argparse.SUPPRESS if option.opt.hidden else text,
    }
    if option.scalar is bool:
        return kwargs | {"action": "store_true"}
    kwargs |= {"type": option.scalar, "choices": option.choices}
    if not option.choices:
        kwargs["metavar"] = option.flag[2:].upper().replace("-", "_")
    return kwargs | {"action": "append"} if option.many else kwargs


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> RunSettings:
    """RunSettings from the parsed ``run`` flags over ``environ``."""
    given = {o.name: getattr(args, o.name) for o in options() if hasattr(args, o.name)}
    for option in options():
        if option.many and option.name in given and not option.choices:
            # Lists are comma-separated in the environment; the same is accepted as flags.
            given[option.name] = [v.strip() for i in given[option.name] for v in i.split(",")]
            given[option.name] = [v for v in given[option.name] if v]
    return resolve(given, environ)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if args.command == "crds":
        from imageops.models.crd import write_crds  # here: `imageops run` never needs it

        for path in write_crds(args.output):
            print(path)
        return 0
    try:
        settings = settings_from(args, os.environ)
    except SettingsError as error:
        print(f"imageops run: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every handled event at INFO: thousands of lines under load, nothing to act on.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLogger().level))
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
