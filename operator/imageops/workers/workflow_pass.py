"""One reconcile pass over one Workflow: plan the run, record its status, then act.

Called by :class:`imageops.workers.workflows.WorkflowReconciler` (one pass
per workflow at a time: the work queue guarantees it). A pass returns the
seconds after which it wants the next one, or None when only an event can
change its outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from imageops.adapters.kube import ObjectRef
from imageops.models.common import ErrorInfo, ErrorReason
from imageops.models.imageoperation import PLURAL as OPERATIONS
from imageops.models.imagesession import PLURAL as SESSIONS
from imageops.models.imagesession import ImageSession
from imageops.models.labels import RUN_LABEL
from imageops.models.workflow import MAX_NODES, PLURAL, WorkflowSpec, WorkflowStatus
from imageops.models.workflow_object import WorkflowObject
from imageops.services import dag, placement, workflow_status
from imageops.services.dag import ChildView
from imageops.services.workflow_run import RunContext, RunInput, RunPlan, plan_run
from imageops.services.workflow_status import FINISHED, RunMeta
from imageops.workers import workflow_objects as objects
from imageops.workers.context import ControllerContext

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)
Rejected = dict[tuple[int, str, str], ErrorInfo]  # (generation, node, step) -> why
MAX_NAME = 63  # the name is a label value on every child
EVENT_REASONS = {"Running": "Started", "StepFailed": "Failed"}


@dataclass
class _Run:
    """One pass: the workflow, its stored status and the run it describes."""

    key: Key
    ref: ObjectRef
    wf: WorkflowObject
    prev: WorkflowStatus
    same_run: bool
    meta: RunMeta


_VIEWS = objects.ChildViews()  # one per process: views depend on the child's version only


def _views(children: Sequence[Mapping[str, Any]]) -> list[ChildView]:
    return _VIEWS.of(children)


def _current(child: Mapping[str, Any], generation: int, uid: str) -> bool:
    """Whether a child belongs to this run: this generation of this very workflow."""
    labels = child["metadata"].get("labels") or {}
    return labels.get(RUN_LABEL) == str(generation) and workflow_status.owned_by(child, uid)


def _reason(status: WorkflowStatus) -> str:
    """The reason of the Ready condition: it always carries the outcome's reason."""
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    return ready.reason if ready is not None else ""


class WorkflowPass:
    """The pass itself; shares the reconciler's cache of workflows and refused children."""

    def __init__(
        self,
        ctx: ControllerContext,
        workflows: MutableMapping[Key, WorkflowObject],
        rejected: dict[Key, Rejected],
        again: Callable[[Key], None],
    ) -> None:
        self.ctx = ctx
        self.workflows = workflows
        self.rejected = rejected
        self.again = again  # another pass right after this one
        self._nodes_waited = False
        self._created = objects.RecentCreates()

    async def run(self, key: Key, wf: WorkflowObject, now: datetime) -> float | None:
        """Plan and record the current generation's run; the next pass's delay."""
        prev, generation, uid = wf.status, wf.meta.generation, wf.meta.uid
        same_run = prev.observed_generation == generation
        start = (prev.start_time if same_run else None) or now
        run = _Run(
            key,
            ObjectRef(wf.api_version, wf.kind, PLURAL, key[0], key[1], uid),
            wf,
            prev,
            same_run,
            RunMeta(generation, f"{uid[:8]}-g{generation}", start, now),
        )
        children = self.ctx.index.by_workflow(*key)
        mine = [c for c in children if _current(c, generation, uid)]
        # Children of an earlier generation, or of an earlier workflow of the same name.
        stale = [
            str(c["metadata"]["name"])
            for c in children
            # Not `c not in mine`: a list's membership test compares bodies, O(children²).
            if workflow_status.owned_by_workflow(c) and not _current(c, generation, uid)
        ]
        await objects.delete_operations(self.ctx.kube, key[0], stale)
        try:
            spec, graph = self._validate(wf)
        except ValueError as exc:
            text = f"invalid workflow: {exc}"
            reason = workflow_status.REASON_INVALID
            await self._write(run, workflow_status.failed_status(prev, run.meta, reason, text))
            return None
        session = await self._session(key, uid, spec, prev if same_run else None)
        run.meta = replace(run.meta, session=session)
        return await self._advance(run, spec, graph, _views(mine))

    def _validate(self, wf: WorkflowObject) -> tuple[WorkflowSpec, dag.Graph]:
        if wf.spec is None:
            raise ValueError(wf.spec_error or "no spec")
        if len(wf.meta.name) > MAX_NAME:
            raise dag.InvalidWorkflow(
                f"the name must be at most {MAX_NAME} characters: children carry it as a label"
            )
        return wf.spec, dag.build_graph(wf.spec)

    async def _advance(
        self, run: _Run, spec: WorkflowSpec, graph: dag.Graph, views: list[ChildView]
    ) -> float | None:
        """Plan the run on its nodes, record the status, then create and delete children."""
        key, meta = run.key, run.meta
        if not views and await self._session_missing(run, spec):
            return self.ctx.sweep_interval
        nodes = workflow_status.run_nodes(
            run.prev if run.same_run else None, views, spec.all_nodes
        ) or await self._choose(key[0], spec, meta.session)
        deadline = spec.active_deadline_seconds
        ends = None if deadline is None else meta.start_time + timedelta(seconds=deadline)
        late = ends is not None and meta.now >= ends
        # A run waiting for anything looks again at its deadline at the latest.
        left = None if ends is None or late else (ends - meta.now).total_seconds()
        if not nodes:
            await self._write(run, self._no_node(run, spec, late))
            return _sooner(self.ctx.sweep_interval, left)
        inp = self._input(run, spec, graph, views, nodes, late)
        status, plan = await self._plan(run, spec, inp)
        # Record first, then act: a crash in between leaves a status the next pass completes.
        if not await self._write(run, status):
            return None
        await objects.delete_operations(self.ctx.kube, key[0], plan.delete)
        fresh = [c for c in plan.create if not self._created.fresh(c)]
        await objects.run_limited([partial(self._create, key, meta.generation, c) for c in fresh])
        if status.phase in FINISHED:
            return 0.0  # the next pass starts the ttlSecondsAfterFinished
        return _sooner(self.ctx.resync_interval, left)

    def _input(
        self,
        run: _Run,
        spec: WorkflowSpec,
        graph: dag.Graph,
        views: list[ChildView],
        nodes: tuple[str, ...],
        late: bool,
    ) -> RunInput:
        """What the planner needs: the run, its children, and what the API server refused."""
        key, meta = run.key, run.meta
        return RunInput(
            run=RunContext(key[0], key[1], run.wf.meta.uid, meta.generation, meta.session),
            spec=spec,
            graph=graph,
            nodes=nodes,
            fan_out=spec.all_nodes,
            now=meta.now,
            children=[v for v in views if v.step is not None],
            rollbacks=[v for v in views if v.step is None],
            recorded=workflow_status.recorded_steps(run.prev, nodes, spec.all_nodes)
            if run.same_run
            else {},
            rejected={
                (n, s): e
                for (g, n, s), e in self.rejected.get(key, {}).items()
                if g == meta.generation
            },
            deadline_exceeded=late,
        )

    async def _plan(
        self, run: _Run, spec: WorkflowSpec, inp: RunInput
    ) -> tuple[WorkflowStatus, RunPlan]:
        """The plan and the status it gives; a final verdict is checked against the API server."""
        meta, late = run.meta, inp.deadline_exceeded
        plan = plan_run(inp)
        status = workflow_status.run_status(run.prev, meta, plan, spec.all_nodes, late)
        if status.phase not in FINISHED:
            return status, plan
        # A final verdict (and what to roll back) is checked against the API server's
        # children, not the index, which may lag right after a controller restart.
        listed = await objects.list_children(self.ctx.kube, *run.key)
        views = _views([c for c in listed if _current(c, meta.generation, run.wf.meta.uid)])
        plan = plan_run(
            replace(
                inp,
                children=[v for v in views if v.step is not None],
                rollbacks=[v for v in views if v.step is None],
            )
        )
        return workflow_status.run_status(run.prev, meta, plan, spec.all_nodes, late), plan

    def _no_node(self, run: _Run, spec: WorkflowSpec, late: bool) -> WorkflowStatus:
        waiting = workflow_status.no_node_message(spec)
        if not late:
            return workflow_status.pending_status(run.prev, run.meta, waiting)
        return workflow_status.failed_status(
            run.prev,
            run.meta,
            workflow_status.REASON_DEADLINE,
            f"activeDeadlineSeconds ({spec.active_deadline_seconds}s) exceeded while {waiting}",
        )

    async def _write(self, run: _Run, status: WorkflowStatus) -> bool:
        """Patch what changed and post an Event on transitions; False when not written.

        The patch carries the resourceVersion the pass read: when the workflow
        changed meanwhile (or was deleted and created again), the API server
        refuses it, and the event of the newer version brings another pass.
        """
        patch = workflow_status.merge_delta(run.wf.raw_status, workflow_status.status_wire(status))
        if not patch:
            return True
        updated = await self.ctx.kube.call(
            objects.patch_status,
            self.ctx.kube.sync,
            run.ref,
            run.wf.meta.resource_version,
            patch,
        )
        if updated is None:
            return False
        if run.key in self.workflows:
            # The watch event follows; until then the next pass must see this status.
            self.workflows[run.key] = WorkflowObject.from_body(updated)
        await self._announce(run.ref, run.prev, status)
        return True

    async def _announce(self, ref: ObjectRef, prev: WorkflowStatus, status: WorkflowStatus) -> None:
        """An Event whenever the phase or its reason changes (Started, Succeeded, ...)."""
        reason = _reason(status)
        if (
            prev.observed_generation == status.observed_generation
            and prev.phase == status.phase
            and _reason(prev) == reason
        ):
            return
        kind = "Normal" if reason in ("Running", "Succeeded") else "Warning"
        event = EVENT_REASONS.get(reason, reason)
        message = status.message or str(status.phase)
        if event == "Started":
            where = status.node or ", ".join(sorted(status.nodes))
            message = f"run {status.run_id} on {where}"
        await self.ctx.kube.post_event(ref, kind, event, message)

    async def _create(self, key: Key, generation: int, child: dict[str, Any]) -> None:
        try:
            await self.ctx.kube.call(self.ctx.kube.sync.create_custom, key[0], OPERATIONS, child)
            self._created.add(child)
        except Exception as exc:
            code = getattr(exc, "status", None)
            labels = child["metadata"]["labels"]
            step = labels.get("imageops.dev/step")
            if code not in (400, 403, 422) or step is None:
                raise
            # The API server (or an admission check) refuses it: retrying cannot help.
            why = ErrorInfo(
                reason=ErrorReason.INVALID_WORKFLOW,
                retryable=False,
                message=f"the API server refused {child['metadata']['name']}: "
                f"{objects.api_message(exc)}"[:4000],
            )
            node = str(child["spec"]["nodeName"])
            self.rejected.setdefault(key, {})[generation, node, str(step)] = why
            self.again(key)

    async def _session_missing(self, run: _Run, spec: WorkflowSpec) -> bool:
        """Fail closed: no step runs while spec.sessionRef names no ImageSession.

        Pending (reason SessionNotFound, with its Event) until the session appears; Failed
        SessionNotFound once ctx.session_wait_seconds have passed since the run started.
        """
        if spec.session_ref is None:
            return False
        name, namespace = spec.session_ref.name, run.key[0]
        found = await self.ctx.kube.call(self.ctx.kube.sync.get_custom, namespace, SESSIONS, name)
        if found is not None:
            return False
        meta, limit = run.meta, self.ctx.session_wait_seconds
        missing = f"ImageSession {name} not found in namespace {namespace}"
        reason = str(ErrorReason.SESSION_NOT_FOUND)
        if (meta.now - meta.start_time).total_seconds() >= limit:
            status = workflow_status.failed_status(
                run.prev, meta, reason, f"{missing} (waited {limit:.0f}s)"
            )
        else:
            status = workflow_status.waiting_status(
                run.prev, meta, reason, f"{missing}; waiting up to {limit:.0f}s for it"
            )
        await self._write(run, status)
        return True

    async def _session(
        self, key: Key, uid: str, spec: WorkflowSpec, prev: WorkflowStatus | None
    ) -> str | None:
        """The ImageSession of the run: the referenced one, or the workflow's own."""
        if spec.session_ref is not None:
            return spec.session_ref.name
        if not spec.create_session:
            return None
        if prev is None or prev.session_name != key[1]:
            await objects.ensure_session(self.ctx.kube, key[0], key[1], uid)
        return key[1]

    async def _choose(
        self, namespace: str, spec: WorkflowSpec, session: str | None
    ) -> tuple[str, ...]:
        """Nodes for a new run, by the placement policy (services.placement)."""
        request = placement.Request(spec.node_name, None, spec.all_nodes)
        if session and not spec.node_name and not spec.all_nodes:
            request = replace(request, session_node=await self._session_node(namespace, session))
        if request.node_name or request.session_node:
            return placement.place_run(request, (), {}, MAX_NODES)
        if not self._nodes_waited:
            self._nodes_waited = True
            try:  # right after start-up the directory has not read the leases yet
                await asyncio.wait_for(self.ctx.nodes.refreshed.wait(), timeout=10)
            except TimeoutError:
                log.warning("node directory not refreshed after 10s")
        live = self.ctx.nodes.live_nodes(spec.node_selector or {})
        return placement.place_run(request, live, self.ctx.index.node_load(), MAX_NODES)

    async def _session_node(self, namespace: str, session: str) -> str | None:
        obj = await self.ctx.kube.call(self.ctx.kube.sync.get_custom, namespace, SESSIONS, session)
        return None if obj is None else ImageSession.from_body(obj).spec.node_name


def _sooner(a: float, b: float | None) -> float:
    return a if b is None else min(a, b)
