"""``kubectl imageops get``: one table of operations, workflows and sessions, with progress."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TextIO

import yaml

from imageops.adapters.kubeapi import Obj, PluginClient
from imageops.models import imageoperation, imagesession, workflow
from imageops.plugin.view import op_phase
from imageops.services import clock
from imageops.services.progress_text import human_duration, summary


def _age(obj: Obj, now: datetime) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "-"
    created = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return human_duration((now - created).total_seconds())


def _op_row(op: Obj) -> list[str]:
    status, spec = op.get("status") or {}, op.get("spec") or {}
    progress = status.get("progress") or {}
    shown = progress.get("summary") or (
        summary(
            int(progress.get("bytesDone") or 0),
            int(progress.get("bytesTotal") or 0),
            int(progress.get("layersDone") or 0),
            int(progress.get("layersTotal") or 0),
        )
        if progress
        else ""
    )
    if status.get("cacheHit"):
        shown = "cached"
    node = status.get("node") or spec.get("nodeName") or ""
    return [op_phase(op), shown or "-", node or "-", str(spec.get("image", ""))]


def _wf_row(wf: Obj) -> list[str]:
    status = wf.get("status") or {}
    steps = f"steps {status['progress']}" if status.get("progress") else ""
    nodes = f"nodes {status['nodesProgress']}" if status.get("nodesProgress") else ""
    images = sorted({str(s.get("image") or "") for s in (wf.get("spec") or {}).get("steps", [])})
    where = "all matching" if (wf.get("spec") or {}).get("allNodes") else status.get("node")
    progress = " ".join(p for p in (nodes, steps) if p)
    return [str(status.get("phase") or "Pending"), progress or "-", where or "-", ",".join(images)]


def _sess_row(sess: Obj) -> list[str]:
    status = sess.get("status") or {}
    jobs = status.get("jobs") or {}
    progress = (
        f"{jobs.get('succeeded', 0)} ok {jobs.get('failed', 0)} failed "
        f"{jobs.get('active', 0)} active"
    )
    node = (sess.get("spec") or {}).get("nodeName") or "-"
    return [str(status.get("phase") or "-"), progress, node, ""]


_KINDS = (
    (imageoperation.PLURAL, "imgop", _op_row),
    (workflow.PLURAL, "imgwf", _wf_row),
    (imagesession.PLURAL, "imgsess", _sess_row),
)


def rows(kube: PluginClient, all_namespaces: bool) -> tuple[list[Obj], list[list[str]]]:
    """Every object of the three kinds and its table row (namespace first)."""
    now = clock.now()
    objects, table = [], []
    for plural, short, row in _KINDS:
        for obj in kube.list(plural, all_namespaces=all_namespaces):
            meta = obj.get("metadata") or {}
            objects.append(obj)
            table.append(
                [
                    str(meta.get("namespace", "")),
                    f"{short}/{meta.get('name')}",
                    *row(obj),
                    _age(obj, now),
                ]
            )
    return objects, table


def get_table(kube: PluginClient, all_namespaces: bool, out: TextIO, output: str | None) -> int:
    """Print the table (or a List of the objects with -o json|yaml)."""
    objects, table = rows(kube, all_namespaces)
    if output:
        doc: dict[str, Any] = {"apiVersion": "v1", "kind": "List", "items": objects}
        text = json.dumps(doc, indent=2) + "\n" if output == "json" else yaml.safe_dump(doc)
        out.write(text)
        return 0
    header = ["NAMESPACE", "NAME", "PHASE", "PROGRESS", "NODE", "IMAGE", "AGE"]
    if not all_namespaces:
        header, table = header[1:], [r[1:] for r in table]
    if not table:
        print(f"No resources found in {kube.namespace} namespace.", file=out)
        return 0
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for line in [header, *table]:
        print("   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)
    return 0
