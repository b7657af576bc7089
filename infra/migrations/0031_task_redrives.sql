-- How many times a task was redriven (FAILED -> QUEUED).
--
-- A redriven task that fails again is dead-lettered again, legitimately, with its
-- attempts counted from 1 again: its dead-letter log lines, webhook events and audit
-- rows for each run looked the same, so one task dead-lettered three times (a submit
-- and two redrives, as the e2e client test does) read like a duplicated final
-- transition.  redrive increments this; finish returns it so that the dead-letter
-- WARNING names the run it ended.
--
-- A constant default: both ALTERs only change the catalogue (no table rewrite).
-- tasks_archive keeps the columns of tasks in the same order (0027): the column goes
-- at the end of both, and its partitions get it from their parent.
ALTER TABLE tasks ADD COLUMN redrives integer NOT NULL DEFAULT 0;
ALTER TABLE tasks_archive ADD COLUMN redrives integer NOT NULL DEFAULT 0;
