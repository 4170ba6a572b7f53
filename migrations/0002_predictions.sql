-- The downtime predicted for an upgrade when the ledger first saw it (from past upgrades in
-- the ledger), next to the measured one, and how it was predicted.
ALTER TABLE upgrades ADD COLUMN predicted_downtime_seconds BIGINT;
ALTER TABLE upgrades ADD COLUMN prediction_basis TEXT;
