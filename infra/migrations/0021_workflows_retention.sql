-- Workflows are pruned like batches: the sweeper deletes a workflow created before
-- the retention period once none of its steps' tasks is left (query prune_workflows).
-- It reads them oldest first; this index saves it a scan of the whole table on every
-- sweep.  workflows is written once per workflow and never updated: building the
-- index holds its write lock only briefly.
CREATE INDEX workflows_created_at ON workflows (created_at);
