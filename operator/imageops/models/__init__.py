"""The custom-resource models: the single source of truth for the CRDs.

Re-exports the model classes; constants such as ``KIND`` and ``PLURAL`` stay in
each kind's module (``imageops.models.workflow.PLURAL``), since they clash here.
CRD generation lives in :mod:`imageops.models.crd`.
"""

from imageops.models.base import API_VERSION, CATEGORY, GROUP, VERSION, CamelModel, cel
from imageops.models.common import (
    Action,
    Condition,
    ConditionStatus,
    Credentials,
    ErrorInfo,
    ErrorReason,
    LayerProgress,
    LocalObjectReference,
    Phase,
    Progress,
    PullPolicy,
)
from imageops.models.imageoperation import (
    ImageOperation,
    ImageOperationSpec,
    ImageOperationStatus,
    OperationCommon,
    OperationDefaults,
    OperationFields,
)
from imageops.models.imagesession import (
    ActionStats,
    ErrorRecord,
    ErrorSummary,
    Execution,
    ImageSession,
    ImageSessionSpec,
    ImageSessionStatus,
    JobCounts,
    SessionPhase,
)
from imageops.models.workflow import (
    ImageFrom,
    NodeStatus,
    OnFailure,
    StepCounts,
    StepPhase,
    StepStatus,
    Workflow,
    WorkflowSpec,
    WorkflowStatus,
    WorkflowStep,
)

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "VERSION",
    "Action",
    "ActionStats",
    "CamelModel",
    "Condition",
    "ConditionStatus",
    "Credentials",
    "ErrorInfo",
    "ErrorReason",
    "ErrorRecord",
    "ErrorSummary",
    "Execution",
    "ImageFrom",
    "ImageOperation",
    "ImageOperationSpec",
    "ImageOperationStatus",
    "ImageSession",
    "ImageSessionSpec",
    "ImageSessionStatus",
    "JobCounts",
    "LayerProgress",
    "LocalObjectReference",
    "NodeStatus",
    "OnFailure",
    "OperationCommon",
    "OperationDefaults",
    "OperationFields",
    "Phase",
    "Progress",
    "PullPolicy",
    "SessionPhase",
    "StepCounts",
    "StepPhase",
    "StepStatus",
    "Workflow",
    "WorkflowSpec",
    "WorkflowStatus",
    "WorkflowStep",
    "cel",
]
