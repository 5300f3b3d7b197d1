"""The controller's periodic read of agent Leases and Node labels, kept cheap at scale.

The controller reads both every few seconds. Through the client's models a
1,000-node read cost more CPU than everything else the controller did in a
1,000-node fan-out (bench/scale.py, profiled): each Node came back whole (status,
images, managedFields) and was turned into model objects field by field. Here
Nodes are asked for as metadata only (``PartialObjectMetadataList``: the API server
leaves out spec and status) and both lists are read as plain JSON, in pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from imageops.adapters.kube import Kube
from imageops.adapters.kubehttp import JSON

METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
PAGE = 500
TIMEOUT = (3.0, 10.0)

Leases = dict[str, tuple[datetime, int]]
Labels = dict[str, dict[str, str]]


def read_agent_leases(kube: Kube, namespace: str, label: str) -> tuple[Leases, Labels]:
    """Agents' leases (node → renew time, duration) and every Node's labels (blocking)."""
    leases: Leases = {}
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    for lease in _pages(kube, path, {"labelSelector": label}):
        spec = lease.get("spec") or {}
        # The holder is the node's full name (label values are cut at 63 characters).
        holder, renewed = spec.get("holderIdentity"), _time(spec.get("renewTime"))
        if holder and renewed is not None:
            leases[str(holder)] = (renewed, int(spec.get("leaseDurationSeconds") or 0))
    labels: Labels = {}
    for node in _pages(kube, "/api/v1/nodes", {}, accept=METADATA_ONLY):
        meta = node.get("metadata") or {}
        if meta.get("name"):
            labels[str(meta["name"])] = dict(meta.get("labels") or {})
    return leases, labels


def _pages(
    kube: Kube, path: str, query: dict[str, Any], accept: str = JSON
) -> Iterator[dict[str, Any]]:
    """Every item of a paged list (plain JSON, no client models)."""
    token: str | None = None
    while True:
        page = kube.request(
            "GET",
            path,
            query={**query, "limit": PAGE, "continue": token},
            accept=accept,
            timeout=TIMEOUT,
        )
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def _time(value: Any) -> datetime | None:
    """A Lease's MicroTime (RFC 3339), as an aware datetime."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
