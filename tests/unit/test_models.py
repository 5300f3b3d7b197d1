"""Workflow and ImageSession models: camelCase wire format, defaults and bounds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from imageops.models import (
    Action,
    ImageSession,
    ImageSessionSpec,
    ImageSessionStatus,
    OnFailure,
    StepPhase,
    Workflow,
    WorkflowSpec,
    WorkflowStatus,
    WorkflowStep,
)

WORKFLOW_WIRE: dict[str, Any] = {
    "steps": [
        {"name": "pull", "action": "Pull", "image": "registry:5000/app:1.0"},
        {
            "name": "retag",
            "dependsOn": ["pull"],
            "imageFrom": {"step": "pull"},
            "action": "Tag",
            "target": "registry:5000/app:stable",
            "force": True,
            "backoffLimit": 1,
        },
    ],
    "nodeSelector": {"pool": "build"},
    "allNodes": True,
    "parallelism": 3,
    "onFailure": "Rollback",
    "defaults": {"timeoutSeconds": 120},
    "credentials": {"secretRef": {"name": "regcred"}},
}


def _step(**fields: Any) -> dict[str, Any]:
    return {"name": "s", "action": "Pull", "image": "app:1", **fields}


def test_workflow_spec_round_trips_camel_case_with_defaults() -> None:
    spec = WorkflowSpec.model_validate(WORKFLOW_WIRE)
    assert spec.steps[1].image_from is not None and spec.steps[1].image_from.step == "pull"
    assert spec.steps[1].image is None
    assert spec.on_failure == OnFailure.ROLLBACK
    wire = spec.to_wire()
    defaults = {"failFast": True, "createSession": False}
    assert wire == {**WORKFLOW_WIRE, **defaults, "steps": wire["steps"]}
    assert wire["steps"][0] == {**WORKFLOW_WIRE["steps"][0], "force": False, "dryRun": False}
    assert WorkflowSpec.model_validate(wire) == spec


def test_on_failure_none_is_a_string_not_a_missing_value() -> None:
    spec = WorkflowSpec.model_validate({"steps": [_step()]})
    assert spec.to_wire()["onFailure"] == "None"


def test_snake_case_names_work_in_python() -> None:
    step = WorkflowStep(name="a", action=Action.PULL, image="app:1", depends_on=["b"])
    assert step.to_wire()["dependsOn"] == ["b"]


@pytest.mark.parametrize(
    "spec",
    [
        {"steps": []},
        {"steps": [_step(name=f"s{i}") for i in range(51)]},
        {"steps": [_step(name="Upper")]},
        {"steps": [_step(name="x" * 64)]},
        {"steps": [_step(dependsOn=[f"d{i}" for i in range(21)])]},
        {"steps": [_step()], "parallelism": 0},
        {"steps": [_step()], "onFailure": "Retry"},
        {"steps": [_step()], "defaults": {"backoffLimit": 21}},
        {"steps": [_step(backoffLimit=-1)]},
        {"steps": [_step(imageFrom={"step": "a", "digest": "x"})]},
        {"steps": [_step()], "nodeSelector": {f"k{i}": "v" for i in range(33)}},
        {"steps": [_step()], "unknownField": 1},
    ],
)
def test_workflow_spec_rejects_out_of_bounds(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WorkflowSpec.model_validate(spec)


def test_workflow_status_holds_steps_nodes_and_counts() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    step = {
        "phase": "Failed",
        "operationName": "wf-pull",
        "startTime": now.isoformat(),
        "error": {"reason": "NotFound", "message": "no such image", "retryable": False},
    }
    wire = {
        "phase": "Running",
        "runId": "r1",
        "steps": {"pull": step, "tag": {"phase": "Skipped"}},
        "nodes": {"node-a": {"phase": "Failed", "steps": {"pull": step}}},
        "counts": {"total": 2, "failed": 1, "skipped": 1},
        "progress": "1/2",
        "rolledBack": ["registry:5000/app:stable"],
    }
    status = WorkflowStatus.model_validate(wire)
    assert status.steps["tag"].phase == StepPhase.SKIPPED
    assert status.steps["pull"].start_time == now
    assert status.nodes["node-a"].steps["pull"].error is not None
    out = status.to_wire()
    assert out["counts"] == {
        "total": 2,
        "succeeded": 0,
        "failed": 1,
        "running": 0,
        "pending": 0,
        "skipped": 1,
        "cancelled": 0,
    }
    assert out["steps"]["pull"]["startTime"] == "2026-01-02T03:04:05Z"
    assert WorkflowStatus.model_validate(out) == status


def test_workflow_status_maps_are_bounded() -> None:
    with pytest.raises(ValidationError):
        WorkflowStatus.model_validate({"steps": {f"s{i}": {} for i in range(51)}})
    with pytest.raises(ValidationError):
        WorkflowStatus.model_validate({"message": "x" * 4097})


def test_workflow_resource_ignores_unknown_top_level_keys() -> None:
    body = {
        "apiVersion": "imageops.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "wf", "namespace": "ns"},
        "spec": {"steps": [_step()]},
        "extra": "ignored",
    }
    wf = Workflow.model_validate(body)
    assert wf.status == WorkflowStatus()
    assert wf.metadata["name"] == "wf"


def test_image_session_defaults() -> None:
    session = ImageSession.model_validate({"metadata": {"name": "s"}})
    assert session.spec.history_limit == 50
    assert session.spec.preserve_logs is False
    assert session.spec.to_wire() == {"preserveLogs": False, "historyLimit": 50}


@pytest.mark.parametrize(
    "spec",
    [
        {"historyLimit": 0},
        {"historyLimit": 501},
        {"allowedRegistries": ["Registry.Example.com"]},
        {"allowedRegistries": ["https://registry.example.com"]},
        {"allowedRegistries": ["*"]},
        {"allowedRegistries": [f"r{i}.example.com" for i in range(51)]},
        {"timeoutSeconds": 0},
        {"ttlSecondsAfterIdle": -1},
    ],
)
def test_image_session_spec_rejects_out_of_bounds(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ImageSessionSpec.model_validate(spec)


def test_allowed_registries_accept_hosts_ports_and_wildcards() -> None:
    hosts = ["registry.example.com", "127.0.0.1:5000", "*.corp.example", "localhost:5001"]
    assert ImageSessionSpec.model_validate({"allowedRegistries": hosts}).allowed_registries == hosts


def test_image_session_status_round_trips() -> None:
    wire = {
        "phase": "Active",
        "jobs": {"active": 1, "succeeded": 2, "failed": 1, "total": 4},
        "actions": {
            "Pull": {
                "count": 3,
                "succeeded": 2,
                "failed": 1,
                "minSeconds": 0.5,
                "avgSeconds": 1.0,
                "maxSeconds": 2.0,
            }
        },
        "errors": {
            "byReason": {"NotFound": 1},
            "recent": [
                {
                    "time": "2026-01-02T03:04:05Z",
                    "operation": "op1",
                    "reason": "NotFound",
                    "message": "manifest unknown",
                }
            ],
        },
        "recentExecutions": [
            {
                "operation": "op1",
                "action": "Pull",
                "image": "app:1",
                "result": "Failed",
                "durationSeconds": 2.0,
                "reason": "NotFound",
                "completionTime": "2026-01-02T03:04:05Z",
            }
        ],
        "cacheHitRatio": 0.25,
        "archivedTo": "session-archive",
    }
    status = ImageSessionStatus.model_validate(wire)
    assert status.to_wire() == {**wire, "conditions": []}


@pytest.mark.parametrize(
    "status",
    [
        {"cacheHitRatio": 1.5},
        {"actions": {"Delete": {}}},
        {"errors": {"byReason": {"Bogus": 1}}},
        {
            "recentExecutions": [
                {"operation": "o", "action": "Pull", "image": "i", "result": "Succeeded"}
            ]
            * 501
        },
        {"jobs": {"active": -1}},
    ],
)
def test_image_session_status_rejects_out_of_bounds(status: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ImageSessionStatus.model_validate(status)
