-- Argo CD health check for imageops.dev ImageOperation, Workflow and ImageSession.
--
-- Install it once per kind in the argocd-cm ConfigMap (docs/gitops.md):
--   resource.customizations.health.imageops.dev_ImageOperation: |
--     <this file>
--   (the same for imageops.dev_Workflow and imageops.dev_ImageSession)
--
-- The three kinds follow the kstatus conventions, and this check reads them in
-- kstatus' order, so Argo CD and Flux agree on every object:
--   Progressing  no status yet; status.observedGeneration differs from
--                metadata.generation (a new object has observedGeneration 0, a
--                changed spec is not observed yet); Reconciling=True (pending,
--                queued, running, retrying, an active session);
--   Degraded     Stalled=True (a permanent failure, an expired session);
--   Healthy      Ready=True;
--   Progressing  anything else.
-- A condition whose own observedGeneration is older than metadata.generation
-- counts as absent.
--
-- Argo CD runs argocd-cm scripts in gopher-lua (Lua 5.1) with only the base,
-- table, package and a safe os library, unless the key sets useOpenLibs: no
-- `string` library, so this script uses only the base library (tostring, ..).
-- tests/e2e/test_gitops.py runs it as Argo CD does (hack/tools/health), with
-- useOpenLibs off and on, on real objects in every state.

local hs = { status = "Progressing", message = "Waiting for the operator" }

local function number(value)
  if type(value) == "number" then
    return value
  end
  return nil
end

local generation = nil
if type(obj.metadata) == "table" then
  generation = number(obj.metadata.generation)
end

local status = obj.status
if type(status) ~= "table" then
  return hs
end

local observed = number(status.observedGeneration)
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.message = "Generation " .. tostring(generation) .. " not observed yet (status is for "
    .. tostring(observed) .. ")"
  return hs
end

local function find(conditionType)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if type(condition) == "table" and condition.type == conditionType then
      local seen = number(condition.observedGeneration)
      if generation ~= nil and seen ~= nil and seen ~= generation then
        return nil
      end
      return condition
    end
  end
  return nil
end

local function describe(condition, fallback)
  if type(condition.message) == "string" and condition.message ~= "" then
    return condition.message
  end
  if type(condition.reason) == "string" and condition.reason ~= "" then
    return condition.reason
  end
  return fallback
end

local reconciling = find("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

local stalled = find("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local ready = find("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

if ready ~= nil then
  hs.message = describe(ready, hs.message)
elseif type(status.phase) == "string" then
  hs.message = "Phase " .. status.phase
end
return hs
