-- Where the sweeper's pruning of batches and workflows left off (queries
-- prune_batches and prune_workflows).  A batch or workflow past retention that a dead
-- letter keeps alive stays until the dead letter is purged, and every sweep used to
-- read all of them, oldest first, before it reached one it could delete: with
-- 100,000 such batches and as many workflows, about 0.3 s and 0.9 s of every sweep
-- (EXPLAIN ANALYZE).  Each sweep now reads the next page after this position and
-- moves it on; past the newest one it starts again from the oldest.  One row per
-- kind, rewritten by each sweep; losing it only restarts a round.
CREATE TABLE retention_cursors (
    name     text        PRIMARY KEY CHECK (name IN ('batches', 'workflows')),
    after_at timestamptz NOT NULL,
    after_id uuid        NOT NULL
);

-- A page is read in (time, id) order and ends after %(limit)s rows: with the id in
-- the index the scan stops there instead of reading every row past the cursor and
-- sorting them.  These replace the indexes of migrations 0013 and 0021.
CREATE INDEX batches_completed_id ON batches (completed_at, id) WHERE completed_at IS NOT NULL;
DROP INDEX batches_completed;
CREATE INDEX workflows_created_id ON workflows (created_at, id);
DROP INDEX workflows_created_at;
