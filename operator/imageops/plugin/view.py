"""What ``kubectl imageops watch`` shows, computed from the objects (no I/O here).

An operation is shown layer by layer (``status.progress.layers``); a fan-out
Workflow node by node (its children's progress summed per node); a one-node
Workflow step by step; a session operation by operation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from imageops.models.labels import NODE_LABEL, STEP_LABEL

Obj = dict[str, Any]
FINISHED = ("Succeeded", "Failed")


@dataclass
class Bar:
    """One line of progress: a layer, a node, a step or an operation."""

    label: str
    phase: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    note: str = ""


@dataclass
class Snapshot:
    """Everything one frame shows, and whether the watch is over."""

    kind: str
    name: str
    namespace: str
    phase: str
    bars: list[Bar] = field(default_factory=list)
    finished: bool = False
    succeeded: bool = False
    digest: str | None = None
    errors: list[Obj] = field(default_factory=list)  # lastError-shaped: reason, message...
    message: str = ""

    @property
    def bytes_done(self) -> int:
        """Bytes of every bar."""
        return sum(b.bytes_done for b in self.bars)

    @property
    def bytes_total(self) -> int:
        """Bytes to transfer over every bar, as far as known."""
        return sum(b.bytes_total for b in self.bars)


def _meta(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("name", "")), str(meta.get("namespace", ""))


def _current(obj: Obj) -> bool:
    """Whether the status describes the object's current generation."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    return generation is None or status.get("observedGeneration") == generation


def op_phase(op: Obj) -> str:
    """The phase a person should read: Pending until the agent reports this generation."""
    status = op.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    return phase if _current(op) or phase not in FINISHED else "Pending"


def _op_bytes(op: Obj) -> tuple[int, int]:
    status = op.get("status") or {}
    progress = status.get("progress") or {}
    done, total = int(progress.get("bytesDone") or 0), int(progress.get("bytesTotal") or 0)
    if op_phase(op) == "Succeeded" and not total:
        # A cache hit, a tag or a dry run transfers nothing: show it as complete.
        size = int(status.get("sizeBytes") or 0)
        return size, size
    return done, total


def _op_note(op: Obj) -> str:
    status = op.get("status") or {}
    if status.get("cacheHit"):
        return "cached"
    if status.get("dryRunResult"):
        return "dry run"
    progress = status.get("progress") or {}
    if progress.get("layersTotal"):
        return f"{progress.get('layersDone', 0)}/{progress['layersTotal']} layers"
    return ""


def _error(obj: Obj) -> list[Obj]:
    error = (obj.get("status") or {}).get("lastError")
    return [dict(error)] if error else []


def operation(op: Obj) -> Snapshot:
    """One ImageOperation, a bar per layer (one bar while no layer is known)."""
    name, namespace = _meta(op)
    status = op.get("status") or {}
    phase = op_phase(op)
    layers = (status.get("progress") or {}).get("layers") or []
    bars = [
        Bar(
            str(layer.get("id", "")),
            "Succeeded" if layer.get("done") else phase,
            int(layer.get("bytesDone") or 0),
            int(layer.get("bytesTotal") or 0),
        )
        for layer in layers
    ]
    if not bars:
        done, total = _op_bytes(op)
        bars = [Bar(str((op.get("spec") or {}).get("image", name)), phase, done, total)]
    finished = phase in FINISHED
    return Snapshot(
        "ImageOperation",
        name,
        namespace,
        phase,
        bars,
        finished=finished,
        succeeded=phase == "Succeeded",
        digest=status.get("digest") if finished else None,
        errors=_error(op) if phase == "Failed" else [],
        message=_op_note(op),
    )


def _sum(label: str, phase: str, ops: Iterable[Obj]) -> Bar:
    bar = Bar(label, phase)
    notes = []
    for op in ops:
        done, total = _op_bytes(op)
        bar.bytes_done += done
        bar.bytes_total += total
        notes.append(_op_note(op))
    bar.note = next((n for n in notes if n), "")
    return bar


def workflow(wf: Obj, children: list[Obj]) -> Snapshot:
    """A Workflow: a bar per node for a fan-out, else a bar per step."""
    name, namespace = _meta(wf)
    status = wf.get("status") or {}
    phase = str(status.get("phase") or "Pending") if _current(wf) else "Pending"
    bars: list[Bar] = []
    if status.get("nodes"):
        for node, state in sorted(status["nodes"].items()):
            mine = _labelled(children, NODE_LABEL, node)
            bars.append(_sum(node, str(state.get("phase") or "Pending"), mine))
    else:
        for step, state in (status.get("steps") or {}).items():
            mine = _labelled(children, STEP_LABEL, step)
            bars.append(_sum(step, str(state.get("phase") or "Pending"), mine))
    finished = phase in FINISHED
    errors = [e for c in children if op_phase(c) == "Failed" for e in _error(c)]
    digests = {s.get("digest") for s in _step_states(status) if s.get("digest")}
    return Snapshot(
        "Workflow",
        name,
        namespace,
        phase,
        bars,
        finished=finished,
        succeeded=phase == "Succeeded",
        digest=next(iter(digests)) if finished and len(digests) == 1 else None,
        errors=errors if finished else [],
        message=str(status.get("message") or ""),
    )


def _labelled(children: list[Obj], key: str, value: str) -> list[Obj]:
    return [
        c for c in children if ((c.get("metadata") or {}).get("labels") or {}).get(key) == value
    ]


def _step_states(status: Obj) -> list[Obj]:
    steps = list((status.get("steps") or {}).values())
    for node in (status.get("nodes") or {}).values():
        steps.extend((node.get("steps") or {}).values())
    # A large fan-out summarises its succeeded nodes per step (status.succeeded).
    for summary in (status.get("succeeded") or {}).values():
        steps.append({"digest": summary.get("digest")})
        agreed = summary.get("digestNodes")
        if agreed is not None and agreed < (summary.get("nodes") or 0):
            steps.append({"digest": "(differs)"})  # some nodes reported another digest
    return steps


def session(sess: Obj, ops: list[Obj]) -> Snapshot:
    """An ImageSession: a bar per operation; over once nothing is active."""
    name, namespace = _meta(sess)
    status = sess.get("status") or {}
    jobs = status.get("jobs") or {}
    bars = [_sum(_meta(op)[0], op_phase(op), [op]) for op in ops]
    active = [b for b in bars if b.phase not in FINISHED]
    # The session folds finished operations into its statistics a moment later (it
    # writes at most once a second): over once it has counted every operation shown.
    counted = int(jobs.get("succeeded", 0)) + int(jobs.get("failed", 0))
    finished = bool(bars) and not active and not jobs.get("active") and counted >= len(bars)
    failed = [op for op in ops if op_phase(op) == "Failed"]
    message = (
        f"{jobs.get('succeeded', 0)} succeeded, {jobs.get('failed', 0)} failed, "
        f"{jobs.get('active', 0)} active"
    )
    return Snapshot(
        "ImageSession",
        name,
        namespace,
        str(status.get("phase") or "Pending"),
        bars,
        finished=finished,
        succeeded=finished and not failed,
        errors=[e for op in failed for e in _error(op)] if finished else [],
        message=message,
    )
