"""Label keys the operator puts on the objects it creates (and selects them by)."""

WORKFLOW_LABEL = "imageops.dev/workflow"
STEP_LABEL = "imageops.dev/step"
NODE_LABEL = "imageops.dev/node"
RUN_LABEL = "imageops.dev/run"
ROLE_LABEL = "imageops.dev/role"
SESSION_LABEL = "imageops.dev/session"
AGENT_LABEL = "imageops.dev/agent-node"
