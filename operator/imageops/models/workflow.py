"""Workflow: a small DAG of image operations, run on one node or fanned out over many."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from imageops.models.base import API_VERSION, CamelModel, cel, validations
from imageops.models.common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    IMAGE_REF,
    Condition,
    Credentials,
    ErrorInfo,
    LocalObjectReference,
    Phase,
    image_ref_rules,
)
from imageops.models.imageoperation import OperationCommon, OperationDefaults, operation_rules

KIND = "Workflow"
PLURAL = "workflows"
SINGULAR = "workflow"
SHORT_NAMES = ["imgwf"]

# Bounds that keep objects small and let the API server's CEL cost estimator accept
# the rules below, which it prices by multiplying list and string maxima: at these
# maxima the dependsOn rule (steps x dependsOn x steps) takes about 1/6 of its budget
# on Kubernetes 1.35; 100 steps with 50 dependencies each would exceed it.
MAX_STEPS = 50
MAX_DEPENDENCIES = 20
MAX_NODES = 1000
MAX_CONDITIONS = 16
# A fan-out over more nodes than this keeps its status small (etcd stores at most
# 1.5 MiB per object, and every write rewrites all of it): its succeeded and pending
# nodes are listed with their phase only, the succeeded steps' results summarised.
MAX_DETAILED_NODES = 20

StepName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]


def _named(rule: JsonDict) -> JsonDict:
    """Prefix a step rule's message with the step's name, so the error says which step."""
    quoted = str(rule["message"]).replace("\\", "\\\\").replace('"', '\\"')
    return {**rule, "messageExpression": f'"step " + self.name + ": {quoted}"'}


STEP_RULES: list[JsonDict] = [
    _named(r)
    for r in [
        *operation_rules(prefix=""),
        cel(
            "!has(self.target) || !has(self.image) || self.target != self.image",
            "target must differ from image",
        ),
        cel("has(self.image) != has(self.imageFrom)", "set exactly one of image and imageFrom"),
        cel(
            "!has(self.imageFrom) || self.imageFrom.step != self.name",
            "imageFrom cannot name the step itself",
        ),
        cel(
            "!has(self.dependsOn) || !(self.name in self.dependsOn)",
            "a step cannot depend on itself",
        ),
    ]
]

SPEC_RULES: list[JsonDict] = [
    cel(
        "self.steps.all(s, self.steps.exists_one(t, t.name == s.name))",
        "spec.steps names must be unique",
    ),
    cel(
        "self.steps.all(s, !has(s.dependsOn) || "
        "s.dependsOn.all(d, self.steps.exists(t, t.name == d)))",
        "spec.steps[].dependsOn must name steps of this workflow",
    ),
    cel(
        "self.steps.all(s, !has(s.imageFrom) || self.steps.exists(t, t.name == s.imageFrom.step))",
        "spec.steps[].imageFrom.step must name a step of this workflow "
        "(it runs before the step, as if listed in dependsOn)",
    ),
    cel(
        "!self.allNodes || (has(self.nodeSelector) && size(self.nodeSelector) > 0)",
        "spec.allNodes requires a non-empty spec.nodeSelector",
    ),
    cel(
        "!(self.allNodes && has(self.nodeName))",
        "spec.nodeName and spec.allNodes are mutually exclusive",
    ),
    cel(
        "!(self.createSession && has(self.sessionRef))",
        "spec.createSession and spec.sessionRef are mutually exclusive",
    ),
]


class OnFailure(StrEnum):
    """What a failed Workflow does about the steps that already succeeded."""

    NONE = "None"
    ROLLBACK = "Rollback"


class StepPhase(StrEnum):
    """Lifecycle phase of one Workflow step."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"


class ImageFrom(CamelModel):
    """Where a step takes its image from instead of ``image``."""

    step: StepName = Field(
        description="The step whose result image is used, pinned by digest; this step "
        "depends on it (listing it in dependsOn too is allowed, not needed)."
    )


class _StepHead(CamelModel):
    """The step's own fields; a separate base only so that they come first in the schema."""

    name: StepName = Field(description="Step name (DNS label), unique within the workflow.")
    depends_on: list[StepName] | None = Field(
        default=None,
        max_length=MAX_DEPENDENCIES,
        description="Steps that must succeed before this one starts.",
    )
    image_from: ImageFrom | None = Field(
        default=None, description="Take the image from an earlier step's result (excludes image)."
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=IMAGE_REF,
        json_schema_extra=image_ref_rules("image"),
        description="Image reference (name[:tag][@digest]); required unless imageFrom is set.",
    )


class WorkflowStep(OperationDefaults, OperationCommon, _StepHead):
    """One step: an image operation that may wait for, and take its image from, other steps.

    backoffLimit and timeoutSeconds, when unset, come from the workflow's defaults.
    """

    model_config = ConfigDict(json_schema_extra=validations(*STEP_RULES))


class WorkflowSpec(CamelModel):
    """Desired state of a Workflow."""

    model_config = ConfigDict(json_schema_extra=validations(*SPEC_RULES))

    steps: list[WorkflowStep] = Field(
        min_length=1, max_length=MAX_STEPS, description="The steps; dependsOn orders them."
    )
    node_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Run every step on this node; assigned by the controller when empty.",
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        default=None,
        max_length=32,
        description="Choose the node (or, with allNodes, every node) by these labels.",
    )
    all_nodes: bool = Field(
        default=False, description="Run the steps on every node matching nodeSelector."
    )
    parallelism: int = Field(
        default=1, ge=1, le=100, description="With allNodes: how many nodes run at once."
    )
    fail_fast: bool = Field(
        default=True, description="Stop starting new steps (and nodes) after the first failure."
    )
    on_failure: OnFailure = Field(
        default=OnFailure.NONE,
        description="None keeps what succeeded; Rollback restores the tags the workflow moved.",
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, le=604800, description="Fail the workflow after this many seconds."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=31536000,
        description="Delete the workflow this many seconds after it finished.",
    )
    defaults: OperationDefaults | None = Field(
        default=None, description="backoffLimit and timeoutSeconds for steps that set none."
    )
    session_ref: LocalObjectReference | None = Field(
        default=None, description="ImageSession the workflow's operations belong to."
    )
    create_session: bool = Field(
        default=False, description="Create an ImageSession for this workflow's run."
    )
    credentials: Credentials | None = Field(
        default=None, description="Registry credentials for steps that set none."
    )


class StepStatus(CamelModel):
    """Observed state of one step (on one node)."""

    phase: StepPhase = Field(default=StepPhase.PENDING, description="Phase of the step.")
    operation_name: str | None = Field(
        default=None, max_length=253, description="ImageOperation that runs the step."
    )
    digest: str | None = Field(
        default=None, max_length=135, description="Registry (manifest) digest of the result."
    )
    image_id: str | None = Field(
        default=None, max_length=135, description="Local image ID of the result."
    )
    start_time: datetime | None = Field(default=None, description="When the step started.")
    completion_time: datetime | None = Field(default=None, description="When the step ended.")
    error: ErrorInfo | None = Field(default=None, description="Why the step failed.")


StepStatusMap = Annotated[
    dict[str, StepStatus],
    Field(max_length=MAX_STEPS, description="Step name to the step's state."),
]


class NodeStatus(CamelModel):
    """Observed state of the workflow on one node of a fan-out."""

    phase: Phase = Field(default=Phase.PENDING, description="Phase of the run on this node.")
    steps: StepStatusMap = Field(
        default_factory=dict,
        description=f"Step name to the step's state. In a fan-out over more than "
        f"{MAX_DETAILED_NODES} nodes, left out for a node that succeeded (see "
        "status.succeeded) or has not started.",
    )


class StepSummary(CamelModel):
    """What one step produced on the succeeded nodes of a large fan-out."""

    nodes: int = Field(default=0, ge=0, description="Succeeded nodes summarised here.")
    digest: str | None = Field(
        default=None, max_length=135, description="Registry digest most of them reported."
    )
    digest_nodes: int | None = Field(
        default=None,
        ge=0,
        description="How many of them reported that digest (less than nodes: they differ).",
    )
    image_id: str | None = Field(
        default=None, max_length=135, description="Local image ID most of them reported."
    )
    last_completion_time: datetime | None = Field(
        default=None, description="When the last of them finished the step."
    )


class NodeCounts(CamelModel):
    """How many nodes of a fan-out are in each phase."""

    total: int = Field(default=0, ge=0, description="All nodes of the run.")
    succeeded: int = Field(default=0, ge=0, description="Nodes where every step succeeded.")
    failed: int = Field(default=0, ge=0, description="Nodes that finished with a failed step.")
    running: int = Field(default=0, ge=0, description="Nodes with steps under way.")
    pending: int = Field(default=0, ge=0, description="Nodes waiting for their turn.")


class StepCounts(CamelModel):
    """How many steps (times nodes, for a fan-out) are in each phase."""

    total: int = Field(default=0, ge=0, description="All steps.")
    succeeded: int = Field(default=0, ge=0, description="Steps that succeeded.")
    failed: int = Field(default=0, ge=0, description="Steps that failed.")
    running: int = Field(default=0, ge=0, description="Steps running now.")
    pending: int = Field(default=0, ge=0, description="Steps waiting to start.")
    skipped: int = Field(default=0, ge=0, description="Steps skipped after a failure.")
    cancelled: int = Field(default=0, ge=0, description="Steps stopped before they finished.")


class WorkflowStatus(CamelModel):
    """Observed state of a Workflow."""

    phase: Phase | None = Field(default=None, description="Phase of the whole workflow.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=MAX_CONDITIONS, description="Standard conditions."
    )
    run_id: str | None = Field(default=None, max_length=63, description="Identifier of this run.")
    node: str | None = Field(
        default=None,
        max_length=253,
        description="Node every step of this run runs on (not set for a fan-out).",
    )
    steps: StepStatusMap = Field(default_factory=dict)
    nodes: dict[str, NodeStatus] = Field(
        default_factory=dict,
        max_length=MAX_NODES,
        description="Fan-out (allNodes): node name to the run on that node (every node "
        f"of the run; beyond {MAX_DETAILED_NODES} nodes, steps only for running and "
        "failed ones).",
    )
    succeeded: dict[str, StepSummary] = Field(
        default_factory=dict,
        max_length=MAX_STEPS,
        description=f"Fan-out over more than {MAX_DETAILED_NODES} nodes: step name to what "
        "it produced on the succeeded nodes, which status.nodes lists without steps.",
    )
    counts: StepCounts | None = Field(default=None, description="Steps per phase.")
    node_counts: NodeCounts | None = Field(
        default=None, description="Fan-out (allNodes): nodes per phase."
    )
    progress: str | None = Field(
        default=None, max_length=32, description='Finished of all steps, such as "3/5".'
    )
    nodes_progress: str | None = Field(
        default=None,
        max_length=32,
        description='Fan-out (allNodes): nodes finished of all nodes, such as "2/5".',
    )
    session_name: str | None = Field(
        default=None, max_length=253, description="ImageSession used by this run."
    )
    start_time: datetime | None = Field(default=None, description="When the run started.")
    completion_time: datetime | None = Field(default=None, description="When the run ended.")
    rolled_back: list[Annotated[str, Field(max_length=512)]] = Field(
        default_factory=list,
        max_length=100,
        description="onFailure Rollback: the tags restored to their previous image.",
    )
    message: str | None = Field(
        default=None, max_length=4096, description="Human-readable summary of the state."
    )


class Workflow(CamelModel):
    """The Workflow resource as the handlers see it (metadata kept loose)."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: WorkflowSpec
    status: WorkflowStatus = Field(default_factory=WorkflowStatus)


__all__ = [
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "ImageFrom",
    "NodeCounts",
    "NodeStatus",
    "OnFailure",
    "StepCounts",
    "StepPhase",
    "StepStatus",
    "StepSummary",
    "Workflow",
    "WorkflowSpec",
    "WorkflowStatus",
    "WorkflowStep",
]
