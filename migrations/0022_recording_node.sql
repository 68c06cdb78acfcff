-- Recordings in a cluster (issue 18, docs/scaling.md "Recordings in a cluster"): the node whose engine
-- made the recording (Settings.node). NULL for rows made before this column (node unknown). A
-- deletion that finds the file missing on its own node keeps the row of another node's recording
-- (its file may be on that node's disk) instead of deleting it.
ALTER TABLE recording ADD COLUMN IF NOT EXISTS node_id text;
