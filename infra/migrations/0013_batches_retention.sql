-- Completed batches leave with their tasks: the sweeper deletes a batch completed
-- before the retention period once none of its tasks is left (its dead letters keep
-- it until they are purged).  This index finds them oldest first.
CREATE INDEX batches_completed ON batches (completed_at) WHERE completed_at IS NOT NULL;
