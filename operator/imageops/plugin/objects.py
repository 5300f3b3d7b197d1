"""The custom resources ``kubectl imageops pull|push|tag`` creates: what a user could write.

One node (``--node``) or a node chosen by labels (``--selector``) is an
ImageOperation; every node matching ``--selector`` (``--all-nodes``) is a fan-out
Workflow with one step. The bodies are validated by the same models as the CRDs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from imageops.models import imageoperation, workflow
from imageops.models.base import API_VERSION

Obj = dict[str, Any]


class InvalidRequest(ValueError):
    """The options do not describe a valid operation."""


@dataclass
class Request:
    """What the person asked for on the command line."""

    action: str  # Pull, Push or Tag
    image: str
    target: str | None = None
    node: str | None = None
    selector: dict[str, str] = field(default_factory=dict)
    all_nodes: bool = False
    session: str | None = None
    credentials: str | None = None
    dry_run: bool = False
    force: bool = False
    platform: str | None = None
    name: str | None = None
    parallelism: int | None = None  # fan-out: nodes at once


def parse_selector(text: str | None) -> dict[str, str]:
    """``k=v,k2=v2`` as kubectl's -l takes it (equality only)."""
    result: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"--selector: {part!r} is not KEY=VALUE")
        result[key.strip()] = value.strip().lstrip("=")
    return result


def _fields(req: Request) -> Obj:
    spec: Obj = {"action": req.action}
    if req.target:
        spec["target"] = req.target
    if req.force:
        spec["force"] = True
    if req.platform:
        spec["platform"] = req.platform
    if req.credentials:
        spec["credentials"] = {"secretRef": {"name": req.credentials}}
    if req.dry_run:
        spec["dryRun"] = True
    return spec


def _metadata(req: Request) -> Obj:
    if req.name:
        return {"name": req.name}
    return {"generateName": f"{req.action.lower()}-"}


def _check(req: Request) -> None:
    if req.node and (req.selector or req.all_nodes):
        raise InvalidRequest("--node excludes --selector and --all-nodes")
    if req.all_nodes and not req.selector:
        raise InvalidRequest("--all-nodes needs --selector KEY=VALUE (the pool to warm)")
    if req.action == "Tag" and not req.target:
        raise InvalidRequest("tag needs a TARGET: kubectl imageops tag IMAGE TARGET")
    if req.action == "Pull" and req.target:
        raise InvalidRequest("pull takes no TARGET (use tag, or push IMAGE TARGET)")


def build(req: Request) -> tuple[str, Obj]:
    """(plural, body) of the object that performs ``req``; raises InvalidRequest."""
    _check(req)
    try:
        if req.all_nodes:
            return workflow.PLURAL, _workflow(req)
        return imageoperation.PLURAL, _operation(req)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(problems) from exc


def _operation(req: Request) -> Obj:
    spec: Obj = {**_fields(req), "image": req.image}
    if req.node:
        spec["nodeName"] = req.node
    if req.selector:
        spec["nodeSelector"] = dict(req.selector)
    if req.session:
        spec["sessionRef"] = {"name": req.session}
    imageoperation.ImageOperationSpec.model_validate(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": imageoperation.KIND,
        "metadata": _metadata(req),
        "spec": spec,
    }


def _workflow(req: Request) -> Obj:
    step: Obj = {"name": req.action.lower(), **_fields(req), "image": req.image}
    spec: Obj = {"steps": [step], "allNodes": True, "nodeSelector": dict(req.selector)}
    if req.parallelism:
        spec["parallelism"] = req.parallelism
    if req.session:
        spec["sessionRef"] = {"name": req.session}
    workflow.WorkflowSpec.model_validate(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": workflow.KIND,
        "metadata": _metadata(req),
        "spec": spec,
    }
