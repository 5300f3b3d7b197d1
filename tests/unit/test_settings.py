"""The settings of ``imageops run``: one model, its flags, its variables, its docs and the chart."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from imageops.adapters.metrics import WatchHealth
from imageops.cli import build_parser, main, settings_from
from imageops.services.backoff import backoff_delay
from imageops.settings import DEFAULTS, RunSettings, SettingsError, options, options_table
from imageops.workers.agent import AgentConfig
from imageops.workers.context import ControllerContext
from imageops.workers.nodes import NodeDirectory

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/imageops"

# The interface: every flag and environment variable `imageops run` has had.
FLAGS = [
    "--role",
    "--node-name",
    "--namespace",
    "-n",
    "--all-namespaces",
    "-A",
    "--max-concurrent",
    "--metrics-port",
    "--allowed-registries",
    "--docker-backend",
    "--docker-host",
    "--runtime",
    "--runtime-endpoint",
    "--runtime-socket-dir",
    "--progress-interval",
    "--backoff-base",
    "--backoff-cap",
    "--lease-namespace",
    "--lease-duration",
    "--node-grace-seconds",
    "--session-wait-seconds",
    "--watch-down-seconds",
    "--state-dir",
    "--sweep-interval",
    "--log-level",
]
LEGACY_ENV = {
    "NODE_NAME": ("node_name", "n1"),
    "POD_NAMESPACE": ("lease_namespace", "ops"),
    "DOCKER_HOST": ("docker_host", "tcp://d:2375"),
    "IMAGEOPS_RUNTIME": ("runtime", "containerd"),
    "IMAGEOPS_RUNTIME_ENDPOINT": ("runtime_endpoint", "unix:///x.sock"),
    "IMAGEOPS_RUNTIME_SOCKET_DIR": ("runtime_socket_dir", "/run"),
    "IMAGEOPS_STATE_DIR": ("state_dir", "/tmp/state"),
}


def run_settings(argv: list[str], env: dict[str, str] | None = None) -> RunSettings:
    return settings_from(build_parser().parse_args(["run", *argv]), env or {})


def test_every_flag_of_the_interface_is_there() -> None:
    runp = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    known = {s for action in runp._actions for s in action.option_strings}
    assert set(FLAGS) <= known, set(FLAGS) - known


@pytest.mark.parametrize("var", sorted(LEGACY_ENV))
def test_the_variables_read_before_still_are(var: str) -> None:
    name, value = LEGACY_ENV[var]
    assert getattr(run_settings([], {var: value}), name) == value


def test_a_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    assert run_settings([]).max_concurrent == DEFAULTS.max_concurrent == 5
    env = {"IMAGEOPS_MAX_CONCURRENT": "7", "IMAGEOPS_BACKOFF_CAP": "9.5"}
    assert run_settings([], env).max_concurrent == 7
    settings = run_settings(["--max-concurrent", "3"], env)
    assert (settings.max_concurrent, settings.backoff_cap) == (3, 9.5)


def test_the_imageops_variable_wins_over_the_pod_one_and_empty_is_unset() -> None:
    env = {"IMAGEOPS_NODE_NAME": "mine", "NODE_NAME": "pod"}
    assert run_settings([], env).node_name == "mine"
    assert run_settings([], {"IMAGEOPS_NODE_NAME": "", "NODE_NAME": "pod"}).node_name == "pod"
    assert run_settings(["--node-name", "flag"], env).node_name == "flag"


def test_lists_repeat_as_flags_and_are_comma_separated_in_the_environment() -> None:
    env = {"IMAGEOPS_ALLOWED_REGISTRIES": "a.io, *.b.io", "IMAGEOPS_ROLE": "agent"}
    settings = run_settings([], env)
    assert settings.allowed_registries == ["a.io", "*.b.io"]
    assert settings.roles == ["agent"]
    settings = run_settings(["--allowed-registries", "c.io,d.io", "--allowed-registries", "e"])
    assert settings.allowed_registries == ["c.io", "d.io", "e"]
    assert run_settings([]).roles == ["agent", "controller"]


def test_namespace_and_all_namespaces_exclude_each_other_per_source() -> None:
    assert run_settings([], {"IMAGEOPS_NAMESPACE": "a,b"}).namespaces == ["a", "b"]
    # A flag of the pair overrides the pair's environment.
    settings = run_settings(["-A"], {"IMAGEOPS_NAMESPACE": "a"})
    assert (settings.namespaces, settings.all_namespaces) == ([], True)
    settings = run_settings(["-n", "x"], {"IMAGEOPS_ALL_NAMESPACES": "true"})
    assert (settings.namespaces, settings.all_namespaces) == (["x"], False)
    with pytest.raises(SettingsError, match="exclude each other"):
        run_settings([], {"IMAGEOPS_NAMESPACE": "a", "IMAGEOPS_ALL_NAMESPACES": "1"})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "-n", "a", "-A"])


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--max-concurrent", "0"], {}, "--max-concurrent"),
        ([], {"IMAGEOPS_MAX_CONCURRENT": "0"}, "IMAGEOPS_MAX_CONCURRENT"),
        ([], {"IMAGEOPS_BACKOFF_BASE": "soon"}, "IMAGEOPS_BACKOFF_BASE"),
        ([], {"IMAGEOPS_RUNTIME": "podman"}, "IMAGEOPS_RUNTIME"),
        ([], {"IMAGEOPS_ALL_NAMESPACES": "maybe"}, "IMAGEOPS_ALL_NAMESPACES"),
    ],
)
def test_an_invalid_value_names_its_flag_or_variable(
    argv: list[str], env: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(named)):
        run_settings(argv, env)


def test_main_refuses_an_invalid_value_with_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGEOPS_MAX_CONCURRENT", "0")
    assert main(["run"]) == 2
    assert "IMAGEOPS_MAX_CONCURRENT" in capsys.readouterr().err


def test_the_code_takes_its_defaults_from_the_settings() -> None:
    agent, controller = (
        {f.name: f.default for f in dataclasses.fields(c) if f.default is not dataclasses.MISSING}
        for c in (AgentConfig, ControllerContext)
    )
    backoff = inspect.signature(backoff_delay).parameters
    for name, value in DEFAULTS.model_dump().items():
        for defaults in (agent, controller):
            if name in defaults:
                assert defaults[name] == value, name
    assert {"max_concurrent", "backoff_base", "backoff_cap"} <= agent.keys()
    assert {"node_grace_seconds", "backoff_cap", "session_wait_seconds"} <= controller.keys()
    assert backoff["base"].default == DEFAULTS.backoff_base
    assert backoff["cap"].default == DEFAULTS.backoff_cap
    nodes = inspect.signature(NodeDirectory).parameters
    assert nodes["lease_duration"].default == DEFAULTS.lease_duration
    health = inspect.signature(WatchHealth).parameters
    assert health["down_bound"].default == DEFAULTS.watch_down_seconds


def test_the_readme_table_is_generated_from_the_settings() -> None:
    readme = (REPO / "README.md").read_text()
    name = "imageops run options"
    block = re.search(
        rf"<!-- BEGIN GENERATED: {name} -->\n(.*?)<!-- END GENERATED: {name} -->", readme, re.S
    )
    assert block, "README.md lost its generated options block"
    assert block.group(1) == options_table(), "README.md is out of date: run `make docs`"


def _templates() -> str:
    return "\n".join(p.read_text() for p in sorted((CHART / "templates").glob("*.*")))


def test_the_chart_passes_only_options_that_exist() -> None:
    text = _templates()
    passed = set(re.findall(r"^\s*- (--[a-z][a-z-]*)\s*$", text, re.M))
    assert passed, "no imageops run flags found in the chart's templates"
    flags = {o.flag for o in options()}
    assert passed <= flags, passed - flags
    env_set = set(re.findall(r"^\s*- name: ([A-Z_][A-Z0-9_]*)\s*$", text, re.M))
    known = {var for o in options() for var in o.env}
    kubernetes = {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}
    assert env_set - kubernetes <= known, env_set - kubernetes - known


def _value(values: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        values = values[part]
    return values


def test_the_chart_defaults_are_the_settings_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    charted = [o for o in options() if o.opt.chart]
    assert len(charted) >= 6
    for option in charted:
        assert _value(values, option.opt.chart or "") == option.default, option.opt.chart
