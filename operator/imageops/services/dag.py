"""Workflow step graphs: validation, readiness, and what a run does next.

Pure: the controller feeds in the workflow's spec, the nodes of the run, the
child ImageOperations it sees and the step phases its status recorded; it gets
back the children to create or delete and every step's new phase. Nothing here
talks to the API server, so a restart rebuilds the same decisions from the
same objects.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imageops.models.common import Action, ErrorInfo, ErrorReason
from imageops.models.workflow import StepPhase, WorkflowSpec, WorkflowStep
from imageops.services.errors import OperationError
from imageops.services.reference import parse_reference

TERMINAL = frozenset(
    {StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.CANCELLED}
)
BLOCKING = frozenset({StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.CANCELLED})
MAX_LABEL = 63
_IMAGE_ID = re.compile(r"^sha256:[a-f0-9]{64}$")


class InvalidWorkflow(ValueError):
    """The workflow cannot run as written; the message says why."""


@dataclass(frozen=True)
class Graph:
    """Validated steps: each one's dependencies, and an order that respects them."""

    steps: Mapping[str, WorkflowStep]
    deps: Mapping[str, tuple[str, ...]]
    order: tuple[str, ...]


def build_graph(spec: WorkflowSpec) -> Graph:
    """Check the steps and order them; InvalidWorkflow names what is wrong.

    The API server's CEL rules reject duplicate and unknown names already;
    they are checked again because a cycle can only be found here.
    """
    steps: dict[str, WorkflowStep] = {}
    for step in spec.steps:
        if step.name in steps:
            raise InvalidWorkflow(f"step name {step.name!r} is used twice")
        steps[step.name] = step
    deps: dict[str, tuple[str, ...]] = {}
    for step in spec.steps:
        # imageFrom implies the dependency (as a Tekton result reference does).
        implied = [step.image_from.step] if step.image_from is not None else []
        wanted = tuple(dict.fromkeys([*(step.depends_on or []), *implied]))
        unknown = [d for d in wanted if d not in steps]
        if unknown:
            raise InvalidWorkflow(f"step {step.name!r} depends on unknown step(s) {unknown}")
        deps[step.name] = wanted
        _check_step(step, wanted)
    cycle = find_cycle(deps)
    if cycle:
        raise InvalidWorkflow(f"dependency cycle: {' -> '.join(cycle)}")
    return Graph(steps=steps, deps=deps, order=_topological(list(steps), deps))


def _check_step(step: WorkflowStep, deps: tuple[str, ...]) -> None:
    if (step.image is None) == (step.image_from is None):
        raise InvalidWorkflow(f"step {step.name!r}: set exactly one of image and imageFrom")
    if step.image_from is not None:
        if step.image_from.step == step.name:
            raise InvalidWorkflow(f"step {step.name!r}: imageFrom cannot name the step itself")
        if step.action == Action.PUSH and not step.target:
            # The image is pinned by digest, and a registry needs a tag to push to.
            raise InvalidWorkflow(
                f"step {step.name!r}: a Push with imageFrom needs a target to push"
            )


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts (``a, b, a``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: fully explored
    for root in deps:
        if state.get(root):
            continue
        path: list[str] = [root]
        stack = [iter(deps.get(root, ()))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(deps.get(nxt, ())))
    return None


def _topological(names: list[str], deps: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Kahn's order, ties broken by the order the steps are written in."""
    done: list[str] = []
    placed: set[str] = set()
    while len(done) < len(names):
        ready = next(n for n in names if n not in placed and set(deps[n]) <= placed)
        done.append(ready)
        placed.add(ready)
    return tuple(done)


@dataclass(frozen=True)
class Advance:
    """One node's steps after a pass: new phases, children to create and to delete."""

    phases: dict[str, StepPhase]
    start: list[str] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)


def advance(
    graph: Graph, phases: Mapping[str, StepPhase], *, stop: bool, admitted: bool = True
) -> Advance:
    """Start every step whose dependencies all succeeded; skip the ones that cannot run.

    ``stop`` (failFast after a failure, or the deadline): running steps are
    cancelled and pending ones skipped. ``admitted`` False (a fan-out node
    waiting for its turn) holds pending steps back without skipping them.
    """
    new = {name: phases.get(name, StepPhase.PENDING) for name in graph.order}
    result = Advance(phases=new)
    for name in graph.order:
        phase = new[name]
        if stop:
            if phase is StepPhase.RUNNING:
                new[name] = StepPhase.CANCELLED
                result.cancel.append(name)
            elif phase is StepPhase.PENDING:
                new[name] = StepPhase.SKIPPED
            continue
        if phase is not StepPhase.PENDING:
            continue
        before = [new[d] for d in graph.deps[name]]
        if any(p in BLOCKING for p in before):
            new[name] = StepPhase.SKIPPED
        elif admitted and all(p is StepPhase.SUCCEEDED for p in before):
            new[name] = StepPhase.RUNNING
            result.start.append(name)
    return result


def admit_nodes(
    nodes: Sequence[str], started: set[str], finished: set[str], parallelism: int
) -> set[str]:
    """Fan-out nodes allowed to work: those already started, plus the next ones in order
    while fewer than ``parallelism`` are busy."""
    allowed = set(started)
    free = parallelism - len(started - finished)
    for node in nodes:
        if free <= 0:
            break
        if node not in started:
            allowed.add(node)
            free -= 1
    return allowed


@dataclass(frozen=True)
class ChildView:
    """What a run needs of one child ImageOperation (a step, or a rollback Tag)."""

    name: str
    node: str
    step: str | None
    action: str
    image: str
    target: str | None
    phase: StepPhase
    digest: str | None = None
    image_id: str | None = None
    previous_target_image_id: str | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    error: ErrorInfo | None = None


def pinned_image(result: ChildView) -> str:
    """The image a step produced, pinned: ``<repository>@<digest>`` (else its image ID).

    A Pull's and a Tag's digest belong to the source image's repository (a Tag
    reports its source's repo digest), a Push's to the pushed repository.
    """
    source = result.target if result.action == Action.PUSH and result.target else result.image
    # A local image's digest may be its image ID (services.perform.local_digest):
    # that names no manifest in any repository, so the ID itself is the pin.
    if result.digest and result.digest != result.image_id and not _IMAGE_ID.match(source):
        try:
            return f"{parse_reference(source).name}@{result.digest}"
        except OperationError:
            pass
    if result.image_id:
        return result.image_id
    raise InvalidWorkflow(
        f"step {result.step!r} reported neither a digest nor an image ID to take the image from"
    )


def short_hash(text: str, length: int = 8) -> str:
    """A stable short hex hash, for names and label values."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def label_value(text: str) -> str:
    """``text`` as a label value (at most 63 characters; long ones cut and hashed)."""
    if len(text) <= MAX_LABEL:
        return text
    return f"{text[: MAX_LABEL - 9].rstrip('-._')}-{short_hash(text)}"


def child_name(workflow: str, generation: int, step: str, node: str | None = None) -> str:
    """Deterministic name of a step's ImageOperation (per node in a fan-out)."""
    middle = f"-{short_hash(node)}" if node is not None else ""
    return f"{workflow}-g{generation}{middle}-{step}"


def rollback_name(workflow: str, generation: int, node: str, target: str) -> str:
    """Deterministic name of the ImageOperation restoring ``target`` on ``node``."""
    return f"{workflow}-g{generation}-rollback-{short_hash(node + '|' + target)}"


def rollback_targets(node_children: Sequence[ChildView]) -> list[tuple[str, str]]:
    """(target, image it pointed at before) for every tag the node's steps moved.

    The earliest step to move a tag knows what it pointed at before the run;
    tags that did not exist before (no previous image) are left as they are.
    """
    moved: dict[str, tuple[str, str]] = {}
    done = [
        c
        for c in node_children
        if c.phase is StepPhase.SUCCEEDED
        and c.step is not None
        and c.target
        and c.action in (Action.TAG, Action.PUSH)
    ]
    done.sort(key=lambda c: (c.completion_time is None, c.completion_time or datetime.min))
    for child in done:
        previous = child.previous_target_image_id
        if previous and previous != child.image_id and child.target:
            moved.setdefault(_normal(child.target), (child.target, previous))
    return list(moved.values())


def _normal(ref: str) -> str:
    try:
        return str(parse_reference(ref))
    except OperationError:
        return ref


def step_fields(step: WorkflowStep, spec: WorkflowSpec) -> dict[str, Any]:
    """A step's ImageOperation fields, except image, node and session.

    Precedence: the step's own fields, then the workflow's defaults and
    credentials; what is still unset is left to the session and the agent.
    """
    own = step.model_dump(
        by_alias=True,
        exclude_none=True,
        mode="json",
        exclude={"name", "depends_on", "image_from", "image"},
    )
    defaults = spec.defaults.to_wire() if spec.defaults else {}
    if spec.credentials is not None:
        defaults["credentials"] = spec.credentials.to_wire()
    return {**defaults, **own}


def cancel_error(reason: str) -> ErrorInfo:
    """The error recorded on a step that was stopped before it finished."""
    return ErrorInfo(reason=ErrorReason.CANCELLED, message=reason, retryable=False, suggestion="")
