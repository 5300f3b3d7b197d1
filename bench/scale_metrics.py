"""API requests as the API server counts them: ``apiserver_request_total`` from its /metrics.

The counter has no user or user-agent label (its labels: verb, group, version,
resource, subresource, scope, component, code, dry_run), so the controller's
writes are told apart by what only the controller writes in the benchmark's
namespace: ImageOperations created, patched or deleted (the agents write only
their status subresource), the Workflow and its status, ImageSessions; Events
are split by their ``reportingInstance`` (the controller's --node-name), read
back from the API server after the run.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client

RequestKey = tuple[str, str, str]  # (verb, resource, subresource)
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

# What only the controller writes (the resource, any subresource).
CONTROLLER_RESOURCES = frozenset({"workflows", "imagesessions"})
# The benchmark's own write: it creates the Workflow.
BENCH_APPLY = ("POST", "workflows")
# ImageOperations: the controller creates, patches (spec, labels) and deletes them; the
# agents write nothing but the status subresource.
AGENT_SUBRESOURCE = "status"


def request_totals(kubeconfig: str) -> Counter[RequestKey]:
    """apiserver_request_total summed over codes and scopes, by (verb, resource, subresource)."""
    text = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "get", "--raw", "/metrics"],
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
    ).stdout
    return parse_request_totals(text)


def parse_request_totals(text: str) -> Counter[RequestKey]:
    """The same, from the text of /metrics."""
    totals: Counter[RequestKey] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        totals[key] += int(float(match["value"]))
    return totals


def delta(after: Mapping[RequestKey, int], before: Mapping[RequestKey, int]) -> dict[str, int]:
    """Requests between two scrapes, keyed "VERB resource[/subresource]", zeros left out."""
    result: dict[str, int] = {}
    for key, value in after.items():
        diff = value - before.get(key, 0)
        if diff > 0:
            verb, resource, sub = key
            result[f"{verb} {resource}{'/' + sub if sub else ''}"] = diff
    return dict(sorted(result.items()))


def _split(name: str) -> tuple[str, str, str]:
    verb, _, path = name.partition(" ")
    resource, _, sub = path.partition("/")
    return verb, resource, sub


def controller_writes(requests: Mapping[str, int], controller_events: int) -> dict[str, int]:
    """The writes only the controller makes, by request kind (see the module docstring)."""
    found: dict[str, int] = {}
    for name, count in requests.items():
        verb, resource, sub = _split(name)
        if verb not in WRITE_VERBS:
            continue
        mine = (resource in CONTROLLER_RESOURCES and (verb, resource) != BENCH_APPLY) or (
            resource == "imageoperations" and sub != AGENT_SUBRESOURCE
        )
        if mine:
            found[name] = count
    if controller_events:
        found["POST events (controller's)"] = controller_events
    return found


def agent_writes(requests: Mapping[str, int], agent_events: int) -> dict[str, int]:
    """The agents' (fleet and real) writes: operation status, Leases, their Events."""
    found = {
        name: count
        for name, count in requests.items()
        if _split(name)[0] in WRITE_VERBS
        and (_split(name)[1:] == ("imageoperations", AGENT_SUBRESOURCE) or "leases" in name)
    }
    if agent_events:
        found["POST events (agents')"] = agent_events
    return found


def events_by_instance(api: client.ApiClient, namespace: str) -> Counter[str]:
    """Events of the namespace by reportingInstance (the --node-name of who posted it)."""
    core = client.CoreV1Api(api)
    found: Counter[str] = Counter()
    token = None
    while True:
        page: Any = core.list_namespaced_event(namespace, limit=500, _continue=token)
        for event in page.items:
            found[
                event.reporting_instance or (event.source.host if event.source else "") or ""
            ] += 1
        token = page.metadata._continue
        if not token:
            return found


def total(counts: Iterable[int]) -> int:
    """Sum of counts."""
    return sum(counts)
