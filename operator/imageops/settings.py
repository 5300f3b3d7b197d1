"""Every option of ``imageops run`` in one model; the CLI, the environment and the docs follow.

Each field of RunSettings is one option. Its flag is ``--`` plus the field name
with dashes (or ``Opt.flag``); its environment variable is ``IMAGEOPS_`` plus
the flag in capitals, and a few also read the variable a pod spec or a shell
sets (``NODE_NAME``, ``POD_NAMESPACE``, ``DOCKER_HOST``), after it. A flag wins
over the environment, the environment over the default; an empty variable
counts as unset. cli.py builds its argument parser from the fields, the README's
table of options is ``options_table()`` (``make docs``; a unit test fails on
drift), and AgentConfig, ControllerContext and backoff_delay take their defaults
from DEFAULTS, so that each default is written once: here.

This module is the bottom layer: it imports nothing of imageops.
"""

from __future__ import annotations

import socket
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, model_validator

Role = Literal["agent", "controller"]
Runtime = Literal["auto", "docker", "containerd", "cri"]
DockerBackend = Literal["sdk", "cli"]
ROLES: tuple[Role, ...] = get_args(Role)
RUNTIMES: tuple[str, ...] = get_args(Runtime)
BACKEND_KINDS: tuple[str, ...] = get_args(DockerBackend)
ENV_PREFIX = "IMAGEOPS_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Opt:
    """How one field of RunSettings appears on the command line, in the environment, in docs."""

    help: str
    flag: str | None = None  # default: the field name with dashes
    short: str | None = None
    also_env: tuple[str, ...] = ()  # read after IMAGEOPS_*: what pod specs and shells set
    default_text: str | None = None  # the default as the docs say it, when repr will not do
    group: str | None = None  # options of one group exclude each other
    chart: str | None = None  # the chart value that sets it (docs, and a test of the chart)
    hidden: bool = False  # a knob of the tests: not in --help nor in the docs


class RunSettings(BaseModel):
    """The options of ``imageops run``."""

    roles: Annotated[
        list[Role],
        Opt("agent (one per node) or controller; repeatable", flag="role", default_text="both"),
    ] = Field(default_factory=lambda: list(ROLES), min_length=1)
    node_name: Annotated[
        str,
        Opt(
            "the node whose operations this agent runs",
            also_env=("NODE_NAME",),
            default_text="host name",
        ),
    ] = Field(default_factory=socket.gethostname, min_length=1)
    namespaces: Annotated[
        list[str],
        Opt(
            "namespace to watch; repeatable, or comma-separated",
            flag="namespace",
            short="-n",
            default_text="all",
            group="scope",
            chart="watchNamespaces",
        ),
    ] = Field(default_factory=list)
    all_namespaces: Annotated[
        bool, Opt("watch every namespace", short="-A", group="scope", default_text="off")
    ] = False
    max_concurrent: Annotated[
        int, Opt("Docker operations at once on this node", chart="agent.maxConcurrent")
    ] = Field(5, ge=1)
    metrics_port: Annotated[
        int, Opt("port of `/metrics` (Prometheus), `/readyz` and `/healthz`", chart="metrics.port")
    ] = Field(8080, ge=0, le=65535)
    allowed_registries: Annotated[
        list[str],
        Opt(
            "comma-separated `host[:port]` or `*.domain` operations may use; others fail "
            "with `Forbidden`",
            default_text="any",
            chart="agent.allowedRegistries",
        ),
    ] = Field(default_factory=list)
    docker_backend: Annotated[
        DockerBackend,
        Opt(
            "Docker SDK, or the `docker` command line (never through a shell)",
            chart="agent.dockerBackend",
        ),
    ] = "sdk"
    docker_host: Annotated[
        str | None,
        Opt("the Docker daemon's address", also_env=("DOCKER_HOST",), default_text="the socket"),
    ] = None
    runtime: Annotated[
        Runtime,
        Opt(
            "container runtime: auto (detect the node's socket), docker, containerd, "
            "or cri (any CRI runtime, e.g. CRI-O: Pull only)"
        ),
    ] = "auto"
    runtime_endpoint: Annotated[
        str | None,
        Opt(
            "the runtime's socket, `unix:///PATH`",
            default_text="detected under `--runtime-socket-dir`",
        ),
    ] = None
    runtime_socket_dir: Annotated[
        str, Opt("where `--runtime auto` looks for `containerd.sock`, `crio.sock`, ...")
    ] = "/var/run"
    progress_interval: Annotated[
        float, Opt("seconds between progress status writes", hidden=True)
    ] = Field(2.0, gt=0)
    backoff_base: Annotated[
        float, Opt("first retry delay in seconds (doubled each retry)", chart="agent.backoff.base")
    ] = Field(2.0, ge=0)
    backoff_cap: Annotated[
        float, Opt("longest retry delay in seconds", chart="agent.backoff.cap")
    ] = Field(60.0, ge=0)
    lease_namespace: Annotated[
        str,
        Opt(
            "where agents renew their heartbeat Lease `imageops-agent-<node>`",
            also_env=("POD_NAMESPACE",),
        ),
    ] = "default"
    lease_duration: Annotated[
        int, Opt("heartbeat Lease duration in seconds (renewed every third)")
    ] = Field(30, ge=1)
    node_grace_seconds: Annotated[
        float,
        Opt(
            "how long a node may lack a live agent before its operations fail with "
            "`NodeUnavailable`"
        ),
    ] = Field(60.0, ge=0)
    session_wait_seconds: Annotated[
        float,
        Opt(
            "how long an operation whose `sessionRef` names no ImageSession waits for it "
            "(Pending, `SessionNotFound`) before it fails with `SessionNotFound`"
        ),
    ] = Field(300.0, ge=0)
    watch_down_seconds: Annotated[
        float,
        Opt(
            "`/healthz` fails once a needed watch has been down this long (the kubelet "
            "then restarts the process)"
        ),
    ] = Field(300.0, gt=0)
    state_dir: Annotated[
        str, Opt("the agent's state that survives restarts: who pulled which image")
    ] = "/var/lib/imageops"
    sweep_interval: Annotated[
        float, Opt("seconds between the controller's sweeps", hidden=True)
    ] = Field(2.0, gt=0)
    log_level: Annotated[str, Opt("DEBUG, INFO, WARNING or ERROR", chart="logLevel")] = "INFO"

    @model_validator(mode="after")
    def _one_scope(self) -> RunSettings:
        if self.all_namespaces and self.namespaces:
            raise ValueError("namespaces and all_namespaces exclude each other")
        return self


# Every default, for the code that has one too (AgentConfig, ControllerContext, backoff_delay).
# model_construct: the defaults as they are, without validating a node name.
DEFAULTS = RunSettings.model_construct()


class SettingsError(ValueError):
    """An option's value is invalid; the message names the flag or variable it came from."""


@dataclass(frozen=True)
class Option:
    """One field of RunSettings with what follows from it."""

    name: str
    opt: Opt
    annotation: Any
    default: Any

    @property
    def flag(self) -> str:
        """The long flag, e.g. ``--max-concurrent``."""
        return "--" + (self.opt.flag or self.name.replace("_", "-"))

    @property
    def env(self) -> tuple[str, ...]:
        """The environment variables read, first wins: IMAGEOPS_* then ``Opt.also_env``."""
        return (ENV_PREFIX + self.flag[2:].upper().replace("-", "_"), *self.opt.also_env)

    @property
    def many(self) -> bool:
        """A list: repeatable on the command line, comma-separated in the environment."""
        return get_origin(self.annotation) is list

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The allowed values of a Literal (of a list of Literals), else None."""
        inner = get_args(self.annotation)[0] if self.many else self.annotation
        return get_args(inner) if get_origin(inner) is Literal else None

    @property
    def scalar(self) -> type:
        """The type of one value: int, float, bool or str."""
        inner = get_args(self.annotation)[0] if self.many else self.annotation
        if get_origin(inner) in (Union, types.UnionType):  # str | None
            inner = next(a for a in get_args(inner) if a is not type(None))
        return inner if inner in (int, float, bool) else str

    @property
    def default_text(self) -> str:
        """The default as the docs say it (Markdown): a value in backticks, or words."""
        if self.opt.default_text is not None:
            return self.opt.default_text
        if isinstance(self.default, float):
            return f"`{self.default:g}`"
        return f"`{self.default}`"


def options() -> Iterator[Option]:
    """The options in the order of the model (the order of --help and of the docs)."""
    for name, field in RunSettings.model_fields.items():
        opt = next(m for m in field.metadata if isinstance(m, Opt))
        default = DEFAULTS.model_dump()[name]
        yield Option(name, opt, field.annotation, default)


def from_env(environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """The options the environment sets: field name → (variable, value as read)."""
    found: dict[str, tuple[str, Any]] = {}
    for option in options():
        for var in option.env:
            raw = environ.get(var, "")
            if raw.strip():
                found[option.name] = (var, _parse_env(option, var, raw))
                break
    return found


def _parse_env(option: Option, var: str, raw: str) -> Any:
    if option.many:
        return [v.strip() for v in raw.split(",") if v.strip()]
    if option.scalar is bool:
        word = raw.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise SettingsError(
                f"{var}={raw!r}: expected one of {', '.join(TRUE_WORDS)} or "
                f"{', '.join(FALSE_WORDS)}"
            )
        return word in TRUE_WORDS
    return raw.strip()


def resolve(cli: Mapping[str, Any], environ: Mapping[str, str]) -> RunSettings:
    """The settings: ``cli`` (field name → value given as a flag) over ``environ`` over defaults.

    A flag of an exclusive group (``--namespace``/``--all-namespaces``) overrides
    the whole group's environment, as it would the other flag's default.
    """
    by_name = {option.name: option for option in options()}
    env = from_env(environ)
    given_groups = {by_name[name].opt.group for name in cli} - {None}
    for name in [n for n in env if by_name[n].opt.group in given_groups]:
        del env[name]
    origin = {name: var for name, (var, _) in env.items()}
    origin.update({name: by_name[name].flag for name in cli})
    values = {name: value for name, (_, value) in env.items()} | dict(cli)
    try:
        return RunSettings.model_validate(values)
    except ValidationError as error:
        raise SettingsError(_explain(error, origin)) from None


def _explain(error: ValidationError, origin: Mapping[str, str]) -> str:
    lines = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        lines.append(f"{origin.get(name, name or 'options')}: {item['msg']}")
    return "; ".join(lines)


def options_table() -> str:
    """The Markdown table of every option, its variables, default and chart value (README)."""
    rows = [
        "| option | environment | default | chart value | meaning |",
        "|---|---|---|---|---|",
    ]
    for option in options():
        if option.opt.hidden:
            continue
        flag = f"`{option.flag}`" + (f", `{option.opt.short}`" if option.opt.short else "")
        if option.choices:
            flag += " " + "\\|".join(option.choices)
        env = ", ".join(f"`{var}`" for var in option.env)
        chart = f"`{option.opt.chart}`" if option.opt.chart else ""
        text = option.opt.help.replace("|", "\\|")
        rows.append(f"| {flag} | {env} | {option.default_text} | {chart} | {text} |")
    return "\n".join(rows) + "\n"
