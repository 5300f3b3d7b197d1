"""``kubectl imageops watch NAME``: follow an operation, workflow or session to its end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from imageops.adapters.kubeapi import Obj, PluginClient, PluginError
from imageops.models import imageoperation, imagesession, workflow
from imageops.models.labels import RUN_LABEL, WORKFLOW_LABEL
from imageops.plugin import view
from imageops.plugin.render import make_view

# kind name, short name, or plural in NAME's "kind/" prefix → plural.
KINDS: dict[str, str] = {}
for _mod in (imageoperation, workflow, imagesession):
    for _alias in (_mod.KIND.lower(), _mod.SINGULAR, _mod.PLURAL, *_mod.SHORT_NAMES):
        KINDS[_alias] = _mod.PLURAL
# Without a kind prefix, a name is looked up in this order.
SEARCH_ORDER = (imageoperation.PLURAL, workflow.PLURAL, imagesession.PLURAL)


def resolve(kube: PluginClient, name: str) -> tuple[str, str]:
    """(plural, name) of NAME or KIND/NAME; raises PluginError when nothing has that name."""
    kind, sep, bare = name.rpartition("/")
    if sep:
        plural = KINDS.get(kind.lower().split(".", 1)[0])
        if plural is None:
            raise PluginError(f"unknown kind {kind!r}: use imgop/, imgwf/ or imgsess/")
        if kube.get(plural, bare) is None:
            raise PluginError(f"{kind}/{bare} not found in namespace {kube.namespace}")
        return plural, bare
    found = [plural for plural in SEARCH_ORDER if kube.get(plural, name) is not None]
    if not found:
        raise PluginError(
            f"no ImageOperation, Workflow or ImageSession named {name!r} "
            f"in namespace {kube.namespace}"
        )
    return found[0], name


def snapshot(kube: PluginClient, plural: str, name: str) -> view.Snapshot | None:
    """The current frame of the object (None once it is deleted)."""
    obj = kube.get(plural, name)
    if obj is None:
        return None
    if plural == imageoperation.PLURAL:
        return view.operation(obj)
    if plural == workflow.PLURAL:
        children = kube.list(imageoperation.PLURAL, selector=f"{WORKFLOW_LABEL}={name}")
        # Children carry the generation they were created for (an earlier run's stay).
        run = (obj.get("metadata") or {}).get("generation")
        children = [c for c in children if _in_run(c, run)]
        return view.workflow(obj, children)
    ops = [
        op
        for op in kube.list(imageoperation.PLURAL)
        if ((op.get("spec") or {}).get("sessionRef") or {}).get("name") == name
    ]
    return view.session(obj, ops)


def _in_run(child: Obj, generation: object) -> bool:
    labels = (child.get("metadata") or {}).get("labels") or {}
    return generation is None or labels.get(RUN_LABEL) in (None, str(generation))


def watch(
    kube: PluginClient,
    name: str,
    out: TextIO,
    output: str | None = None,
    interval: float = 0.5,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Draw until the object finishes: 0 when it succeeded, 1 when it failed or vanished."""
    plural, bare = resolve(kube, name)
    shown = make_view(out, output)
    deadline = None if timeout is None else clock() + timeout
    last: view.Snapshot | None = None
    try:
        while True:
            snap = snapshot(kube, plural, bare)
            if snap is None:
                shown.close(last)
                print(f"{plural}/{bare} was deleted", file=out)
                return 1
            last = snap
            if snap.finished:
                shown.close(snap)
                return 0 if snap.succeeded else 1
            shown.show(snap)
            if deadline is not None and clock() > deadline:
                shown.close(None)
                print(f"timed out: {plural}/{bare} is still {snap.phase}", file=out)
                return 1
            time.sleep(interval)
    except KeyboardInterrupt:
        shown.close(None)
        return 130
