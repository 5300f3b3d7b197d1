-- Argo CD health check for imageops.dev ImageOperation, Workflow and ImageSession.
--
-- Install it once per kind in the argocd-cm ConfigMap (docs/gitops.md):
--   resource.customizations.health.imageops.dev_ImageOperation: |
--     <this file>
--   (the same for imageops.dev_Workflow and imageops.dev_ImageSession)
--
-- The three kinds follow the kstatus conventions, so one check fits all:
--   Degraded     Stalled=True for the current generation (a permanent failure);
--   Healthy      Ready=True for the current generation (the result is verified);
--   Progressing  anything else: no status yet (e.g. no agent serves the node),
--                running, retrying, or a status that still describes an older spec.
-- A condition is "for the current generation" when its observedGeneration (or, if it
-- has none, status.observedGeneration) equals metadata.generation.
-- Written for Lua 5.1 (Argo CD's gopher-lua); tests/e2e/test_gitops.py runs it on
-- real objects with lua5.4.

local hs = { status = "Progressing", message = "Waiting for the operator" }

local function number(value)
  if type(value) == "number" then
    return value
  end
  return nil
end

local generation = nil
if obj.metadata ~= nil then
  generation = number(obj.metadata.generation)
end

local status = obj.status
if type(status) ~= "table" then
  return hs
end

local function current(condition)
  local observed = number(condition.observedGeneration)
  if observed == nil then
    observed = number(status.observedGeneration)
  end
  return generation == nil or observed == generation
end

local function find(conditionType)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if type(condition) == "table" and condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function describe(condition, fallback)
  if condition ~= nil and type(condition.message) == "string" and condition.message ~= "" then
    return condition.message
  end
  if condition ~= nil and type(condition.reason) == "string" and condition.reason ~= "" then
    return condition.reason
  end
  return fallback
end

local stalled = find("Stalled")
if stalled ~= nil and stalled.status == "True" and current(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local ready = find("Ready")
if ready ~= nil and ready.status == "True" and current(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

local observed = number(status.observedGeneration)
local reconciling = find("Reconciling")
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.message = string.format("Generation %d not observed yet (status is for %d)", generation, observed)
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling, "Reconciling")
elseif ready ~= nil then
  hs.message = describe(ready, hs.message)
elseif type(status.phase) == "string" then
  hs.message = "Phase " .. status.phase
end
return hs
