"""The controller's operation index keeps what its readers need, not managedFields."""

from __future__ import annotations

import asyncio
from typing import Any

from imageops.workers.opindex import OperationIndex


def test_the_index_drops_managed_fields_and_keeps_the_rest() -> None:
    body: dict[str, Any] = {
        "metadata": {
            "name": "op",
            "namespace": "ns",
            "uid": "u1",
            "labels": {"imageops.dev/workflow": "wf"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"action": "Pull", "image": "a:1", "nodeName": "n1"},
        "status": {"phase": "Running"},
    }
    index = OperationIndex()
    asyncio.run(index.observe(None, body))
    held = index.get("u1")
    assert held is not None and "managedFields" not in held["metadata"]
    assert held["spec"] == body["spec"] and held["status"] == body["status"]
    assert held["metadata"]["labels"] == body["metadata"]["labels"]
    assert [c["metadata"]["name"] for c in index.by_workflow("ns", "wf")] == ["op"]
    assert "managedFields" in body["metadata"]  # the caller's body is left as it was
