"""Typed metadata, status merge patches from the model, and the agent's refused imports."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from imageops.models.common import Phase
from imageops.models.imageoperation import ImageOperationHead, ImageOperationStatus
from imageops.models.meta import ObjectMeta, merge_patch
from imageops.runtime.imports import refused


def test_object_meta_reads_what_the_operator_needs_and_ignores_the_rest() -> None:
    meta = ObjectMeta.model_validate(
        {
            "name": "op",
            "namespace": "ns",
            "uid": "u1",
            "generation": 3,
            "resourceVersion": "42",
            "labels": {"a": "b"},
            "ownerReferences": [
                {
                    "apiVersion": "imageops.dev/v1alpha1",
                    "kind": "Workflow",
                    "name": "w",
                    "uid": "u0",
                }
            ],
            "deletionTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
        }
    )
    assert (meta.generation, meta.resource_version, meta.labels) == (3, "42", {"a": "b"})
    assert meta.owner_references[0].kind == "Workflow"
    assert meta.deletion_timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    head = ImageOperationHead.model_validate({"kind": "ImageOperation", "metadata": {"name": "x"}})
    assert head.metadata.generation == 1 and head.status == ImageOperationStatus()


def test_a_merge_patch_carries_exactly_the_fields_set_with_none_as_null() -> None:
    status = ImageOperationStatus(
        phase=Phase.RUNNING,
        digest=None,
        start_time=datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC),
        attempts=2,
    )
    assert merge_patch(status) == {
        "phase": "Running",
        "digest": None,
        "startTime": "2026-01-01T00:00:05Z",
        "attempts": 2,
    }


def test_a_misspelled_status_field_cannot_be_written() -> None:
    with pytest.raises(ValidationError):
        ImageOperationStatus(phse="Running")  # type: ignore[call-arg]


def test_refused_imports_fail_inside_the_block_and_work_after_it() -> None:
    name = "imageops_refused_probe_module"
    with refused(name), pytest.raises(ImportError):
        __import__(name)
    assert name not in sys.modules
    with refused("json"):  # imported already: left alone
        import json

        assert json.dumps(1) == "1"
