-- Argo CD health check for hubgrade.io/HubUpgrade (tests/gitops_health.rs runs it).
-- Healthy: Succeeded. Degraded: Failed or RolledBack (the target was not reached; the message
-- says what the hub runs now). Progressing: any other phase, a status not yet written, or a
-- status written for an older generation of the object.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the hubgrade operator to start the upgrade"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the hubgrade operator to observe generation " .. generation
  return hs
end
local phase = status.phase
local message = phase
if status.message ~= nil and status.message ~= "" then
  message = phase .. ": " .. status.message
end
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "RolledBack" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
