-- Argo CD health check for hubgrade.io/HubUpgrade (tests/gitops_health.rs runs it).
-- Healthy: Succeeded; also an External upgrade whose database is migrated and that waits for
-- Argo CD to set the new image (its sync wave is done: the next wave, with the hub Deployment,
-- may sync). Degraded: Failed or RolledBack (the target was not reached; the message says what
-- the hub runs now), and an External roll back whose database is restored and that waits for
-- the old image to come back (revert the change in Git). Progressing: any other phase, a
-- status not yet written, or a status written for an older generation of the object.
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
local external = status.imageManagement == "External"
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "RolledBack" then
  hs.status = "Degraded"
elseif external and phase == "RollingOut" and status.migrationSucceeded == true then
  hs.status = "Healthy"
elseif external and phase == "RollingBack" and status.databaseRestored == true then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
