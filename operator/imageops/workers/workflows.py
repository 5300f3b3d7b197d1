"""The Workflow controller: runs each workflow's steps as child ImageOperations.

Every Workflow event, every change of one of its children (through the
OperationIndex) and every sweep re-runs one idempotent pass: read the
children, plan (services.workflow_run), write the status delta, then create
and delete children. State lives only in the API server (children and
status), so a restarted controller carries on where the last one stopped.
No finalizers: deleting a Workflow never waits; its children are deleted
when the DELETED event arrives (the test bed has no garbage collector).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from imageops.adapters.kube import ObjectRef
from imageops.models.common import ErrorInfo, ErrorReason, Phase
from imageops.models.imageoperation import PLURAL as OPERATIONS
from imageops.models.imagesession import PLURAL as SESSIONS
from imageops.models.labels import RUN_LABEL
from imageops.models.workflow import MAX_NODES, PLURAL, WorkflowSpec, WorkflowStatus
from imageops.services import dag, workflow_status
from imageops.services.dag import ChildView
from imageops.services.workflow_run import RunContext, RunInput, plan_run
from imageops.services.workflow_status import FINISHED, RunMeta
from imageops.workers import workflow_objects as objects
from imageops.workers.context import ControllerContext, repeat
from imageops.workers.opindex import Body, workflow_of

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)
Rejected = dict[tuple[int, str, str], ErrorInfo]  # (generation, node, step) -> why
MAX_NAME = 63  # the name is a label value on every child
ORPHAN_SWEEPS = 15  # sweeps between two looks for children of vanished workflows
ACTIVE = (None, Phase.PENDING.value, Phase.RUNNING.value)
EVENT_REASONS = {"Running": "Started", "StepFailed": "Failed"}


def _now() -> datetime:
    # Whole seconds: status times are stored so, and an unchanged pass must compare equal.
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class _Pass:
    """One reconcile pass: the workflow, its stored status and the run it describes."""

    key: Key
    ref: ObjectRef
    uid: str
    version: str | None
    raw: Mapping[str, Any]
    prev: WorkflowStatus
    same_run: bool
    meta: RunMeta


_VIEWS = objects.ChildViews()  # one per process: views depend on the child's version only


def _views(children: Sequence[Body]) -> list[ChildView]:
    return _VIEWS.of(children)


def _key(body: Body) -> Key:
    meta = body["metadata"]
    return str(meta["namespace"]), str(meta["name"])


class WorkflowReconciler:
    """Drives every Workflow the controller sees."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.workflows: dict[Key, Body] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._queued: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._rejected: dict[Key, Rejected] = {}
        self._sweeps = 0
        self._nodes_waited = False
        self._created = objects.RecentCreates()

    async def observe(self, event_type: str | None, body: Body) -> None:
        """Handle one watch event of a Workflow."""
        key = _key(body)
        if event_type == "DELETED":
            self.workflows.pop(key, None)
            self._rejected.pop(key, None)
            async with self._lock(key):
                await self._cleanup(key, str(body["metadata"]["uid"]), _owns_session(body))
            self._locks.pop(key, None)
            return
        if workflow_status.is_older(self.workflows.get(key), body, same=True):
            return  # an older version, or the one this controller's last write returned
        self.workflows[key] = body
        await self.reconcile(key)

    async def on_operation(self, event_type: str | None, body: Body) -> None:
        """OperationIndex listener: a child changed, so its workflow takes another pass."""
        name = workflow_of(body)
        if name is None:
            return
        key = (str(body["metadata"]["namespace"]), name)
        if key in self.workflows:
            self._kick(key)

    async def run_sweeper(self) -> None:
        """Sweep forever, every ``ctx.sweep_interval`` seconds (cancel the task to stop)."""
        await repeat(self.ctx.sweep_interval, self.sweep, "workflow sweep")

    async def sweep(self) -> None:
        """Deadlines, node re-checks and retries of unfinished runs; TTLs of finished ones."""
        now = _now()
        for key, body in list(self.workflows.items()):
            status = workflow_status.parse_status(body.get("status") or {})
            finished = status.observed_generation == _generation(body) and status.phase in FINISHED
            if not finished:
                await self.reconcile(key)
            elif workflow_status.ttl_expired(_spec_ttl(body), status, now):
                try:
                    await self._expire(key, body)
                except Exception:
                    log.exception("could not delete expired workflow %s/%s", *key)
        self._sweeps += 1
        if self._sweeps % ORPHAN_SWEEPS == 0:
            await self._collect_orphans()

    async def reconcile(self, key: Key) -> None:
        """One pass over one workflow, serialised with every other pass over it."""
        async with self._lock(key):
            body = self.workflows.get(key)
            if body is None:
                return
            try:
                await self._reconcile(key, body)
            except Exception:
                # The sweep takes the next pass; nothing is lost (state is in the API server).
                log.exception("reconcile of workflow %s/%s failed", *key)

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _kick(self, key: Key) -> None:
        """Reconcile soon; events arriving before the pass starts share it."""
        if key in self._queued:
            return
        self._queued.add(key)
        task = asyncio.create_task(self._queued_pass(key), name=f"workflow/{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _queued_pass(self, key: Key) -> None:
        self._queued.discard(key)
        await self.reconcile(key)

    async def _reconcile(self, key: Key, body: Body) -> None:
        meta = body["metadata"]
        raw: Mapping[str, Any] = body.get("status") or {}
        prev = workflow_status.parse_status(raw)
        generation, now, uid = _generation(body), _now(), str(meta["uid"])
        same_run = prev.observed_generation == generation
        if meta.get("deletionTimestamp") or (same_run and prev.phase in FINISHED):
            return
        start = (prev.start_time if same_run else None) or now
        run = _Pass(
            key,
            ObjectRef.from_body(body, PLURAL),
            uid,
            meta.get("resourceVersion"),
            raw,
            prev,
            same_run,
            RunMeta(generation, f"{uid[:8]}-g{generation}", start, now),
        )
        children = self.ctx.index.by_workflow(*key)
        mine = [c for c in children if _current(c, generation, uid)]
        # Children of an earlier generation, or of an earlier workflow of the same name.
        # Not `c not in mine`: a list's membership test compares bodies, O(children²).
        stale = [
            str(c["metadata"]["name"])
            for c in children
            if workflow_status.owned_by_workflow(c) and not _current(c, generation, uid)
        ]
        await objects.delete_operations(self.ctx.kube, key[0], stale)
        try:
            spec = WorkflowSpec.model_validate(body.get("spec") or {})
            if len(key[1]) > MAX_NAME:
                raise dag.InvalidWorkflow(
                    f"the name must be at most {MAX_NAME} characters: children carry it as a label"
                )
            graph = dag.build_graph(spec)
        except ValueError as exc:
            await self._write(
                run,
                workflow_status.failed_status(
                    prev, run.meta, workflow_status.REASON_INVALID, f"invalid workflow: {exc}"
                ),
            )
            return
        session = await self._session(key, uid, spec, prev if same_run else None)
        run.meta = replace(run.meta, session=session)
        await self._advance(run, spec, graph, _views(mine))

    async def _advance(
        self, run: _Pass, spec: WorkflowSpec, graph: dag.Graph, views: list[ChildView]
    ) -> None:
        """Plan the run on its nodes, record the status, then create and delete children."""
        key, meta = run.key, run.meta
        if not views and await self._session_missing(run, spec):
            return
        nodes = workflow_status.run_nodes(
            run.prev if run.same_run else None, views, spec.all_nodes
        ) or await self._choose(key[0], spec, meta.session)
        deadline = spec.active_deadline_seconds
        late = deadline is not None and meta.now >= meta.start_time + timedelta(seconds=deadline)
        if not nodes:
            waiting = workflow_status.no_node_message(spec)
            await self._write(
                run,
                workflow_status.failed_status(
                    run.prev,
                    meta,
                    workflow_status.REASON_DEADLINE,
                    f"activeDeadlineSeconds ({deadline}s) exceeded while {waiting}",
                )
                if late
                else workflow_status.pending_status(run.prev, meta, waiting),
            )
            return
        inp = RunInput(
            run=RunContext(key[0], key[1], run.uid, meta.generation, meta.session),
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
                for (g, n, s), e in self._rejected.get(key, {}).items()
                if g == meta.generation
            },
            deadline_exceeded=late,
        )
        plan = plan_run(inp)
        status = workflow_status.run_status(run.prev, meta, plan, spec.all_nodes, late)
        if status.phase in FINISHED:
            # A final verdict (and what to roll back) is checked against the API server's
            # children, not the index, which may lag right after a controller restart.
            listed = await objects.list_children(self.ctx.kube, *key)
            views = _views([c for c in listed if _current(c, meta.generation, run.uid)])
            plan = plan_run(
                replace(
                    inp,
                    children=[v for v in views if v.step is not None],
                    rollbacks=[v for v in views if v.step is None],
                )
            )
            status = workflow_status.run_status(run.prev, meta, plan, spec.all_nodes, late)
        # Record first, then act: a crash in between leaves a status the next pass completes.
        if not await self._write(run, status):
            return
        await objects.delete_operations(self.ctx.kube, key[0], plan.delete)
        fresh = [c for c in plan.create if not self._created.fresh(c)]
        await objects.run_limited([partial(self._create, key, meta.generation, c) for c in fresh])

    async def _write(self, run: _Pass, status: WorkflowStatus) -> bool:
        """Patch what changed and post an Event on transitions; False when not written.

        The patch carries the resourceVersion the pass read: when the workflow
        changed meanwhile (or was deleted and created again), the API server
        refuses it, and the event of the newer version brings another pass.
        """
        patch = workflow_status.merge_delta(run.raw, workflow_status.status_wire(status))
        if not patch:
            return True
        updated = await self.ctx.kube.call(
            objects.patch_status, self.ctx.kube.sync, run.ref, run.version, patch
        )
        if updated is None:
            return False
        if run.key in self.workflows:
            # The watch event follows; until then the next pass must see this status.
            self.workflows[run.key] = updated
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
            self._rejected.setdefault(key, {})[generation, node, str(step)] = why
            self._kick(key)

    async def _session_missing(self, run: _Pass, spec: WorkflowSpec) -> bool:
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
        """Nodes for a new run: the named one (the workflow's, else its session's), every
        live match for a fan-out, or the least busy live match."""
        if spec.node_name:
            return (spec.node_name,)
        if session and not spec.all_nodes:
            obj = await self.ctx.kube.call(
                self.ctx.kube.sync.get_custom, namespace, SESSIONS, session
            )
            node = ((obj or {}).get("spec") or {}).get("nodeName")
            if node:
                return (str(node),)
        if not self._nodes_waited:
            self._nodes_waited = True
            try:  # right after start-up the directory has not read the leases yet
                await asyncio.wait_for(self.ctx.nodes.refreshed.wait(), timeout=10)
            except TimeoutError:
                log.warning("node directory not refreshed after 10s")
        live = self.ctx.nodes.live_nodes(spec.node_selector or {})
        if spec.all_nodes or not live:
            return tuple(live[:MAX_NODES])
        load = Counter(
            (b.get("spec") or {}).get("nodeName")
            for b in self.ctx.index.all()
            if (b.get("status") or {}).get("phase") in ACTIVE
        )
        return (min(live, key=lambda n: (load[n], n)),)

    async def _expire(self, key: Key, body: Body) -> None:
        """ttlSecondsAfterFinished: delete the workflow, its children and its session."""
        log.info("deleting workflow %s/%s: ttlSecondsAfterFinished passed", *key)
        await self.ctx.kube.call(self.ctx.kube.sync.delete_custom, key[0], PLURAL, key[1])
        self.workflows.pop(key, None)
        async with self._lock(key):
            await self._cleanup(key, str(body["metadata"]["uid"]), _owns_session(body))

    async def _cleanup(self, key: Key, uid: str, session: bool) -> None:
        """Delete what a deleted workflow (``uid``) owned; what fails here, the orphan
        collection of a later sweep deletes."""
        try:
            await objects.cleanup(self.ctx.kube, key[0], key[1], uid, session)
        except Exception:
            log.exception("could not delete what workflow %s/%s owned", *key)

    async def _collect_orphans(self) -> None:
        """Children whose workflow went away while no controller was watching."""
        owners: dict[Key, set[str]] = {}
        for child in self.ctx.index.all():
            name = workflow_of(child)
            key = (str(child["metadata"]["namespace"]), name or "")
            if name and key not in self.workflows:
                refs = child["metadata"].get("ownerReferences") or []
                owners.setdefault(key, set()).update(
                    str(r.get("uid")) for r in refs if workflow_status.is_workflow_ref(r)
                )
        for key, uids in owners.items():
            obj = await self.ctx.kube.call(self.ctx.kube.sync.get_custom, key[0], PLURAL, key[1])
            live_uid = (obj or {}).get("metadata", {}).get("uid")
            for uid in uids - {live_uid}:
                async with self._lock(key):
                    await self._cleanup(key, uid, session=True)


def _generation(body: Body) -> int:
    return int(body["metadata"].get("generation") or 1)


def _current(child: Body, generation: int, uid: str) -> bool:
    """Whether a child belongs to this run: this generation of this very workflow."""
    labels = child["metadata"].get("labels") or {}
    return labels.get(RUN_LABEL) == str(generation) and workflow_status.owned_by(child, uid)


def _reason(status: WorkflowStatus) -> str:
    """The reason of the Ready condition: it always carries the outcome's reason."""
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    return ready.reason if ready is not None else ""


def _spec_ttl(body: Body) -> int | None:
    ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
    return ttl if isinstance(ttl, int) else None


def _owns_session(body: Body) -> bool:
    return bool((body.get("spec") or {}).get("createSession"))
