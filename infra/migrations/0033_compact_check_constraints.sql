-- The same CHECK constraints, written as one array constant instead of a list.
--
-- PostgreSQL reads every CHECK constraint of a table back from its stored node text
-- (stringToNode), simplifies and compiles it again for every INSERT or UPDATE
-- statement; nothing keeps it between statements.  For a single submit (a task row and
-- its event row, one statement) that is half of the statement's instructions
-- (callgrind of PostgreSQL: 529k of 1,038k go away with the 17 constraints dropped; a
-- claim's UPDATE and event INSERT likewise, issue 14 round 7 in bench/RESULTS.md), and
-- the time goes with the length of that text.  `x IN ('A', 'B', ...)` is stored as an
-- array of one constant node each (~1,550 characters for the seven statuses);
-- `x = ANY ('{A,B,...}'::text[])` is one array constant (~690), and checks the same
-- thing: a value passes exactly when it equals one of the elements, and NULL (an
-- event's first from_status) passes both ways.  Measured (instructions): a single
-- submit 1,053k -> 962k, a one-task claim 1,541k -> 1,450k.  Folding all constraints
-- into one saved nothing more (the cost is the text, not the number of constraints),
-- so the names, and what each error names, stay.
--
-- NOT VALID, as 0016 did: every existing row satisfies the constraint being replaced,
-- whose condition this is, so a validating scan of tasks and of every task_events
-- partition, under the exclusive lock the DROP takes, would prove nothing new; new and
-- updated rows are checked all the same.  On task_events the DROP and ADD reach every
-- partition, and a partition made later (LIKE task_events INCLUDING CONSTRAINTS, then
-- ATTACH: migration 0019) copies the new text, so it still attaches.
ALTER TABLE tasks
    DROP CONSTRAINT tasks_status_check,
    ADD CONSTRAINT tasks_status_check
        CHECK (status = ANY ('{WAITING,PENDING,QUEUED,PROCESSING,COMPLETED,FAILED,CANCELLED}'::text[])) NOT VALID,
    DROP CONSTRAINT tasks_priority_check,
    ADD CONSTRAINT tasks_priority_check CHECK (priority = ANY ('{critical,high,normal,low}'::text[])) NOT VALID,
    DROP CONSTRAINT tasks_finished_iff_final,
    ADD CONSTRAINT tasks_finished_iff_final
        CHECK ((status = ANY ('{COMPLETED,FAILED,CANCELLED}'::text[])) = (finished_at IS NOT NULL)) NOT VALID;

ALTER TABLE task_events
    DROP CONSTRAINT task_events_from_status_check,
    ADD CONSTRAINT task_events_from_status_check
        CHECK (from_status = ANY ('{WAITING,PENDING,QUEUED,PROCESSING,COMPLETED,FAILED,CANCELLED}'::text[])) NOT VALID,
    DROP CONSTRAINT task_events_to_status_check,
    ADD CONSTRAINT task_events_to_status_check
        CHECK (to_status = ANY ('{WAITING,PENDING,QUEUED,PROCESSING,COMPLETED,FAILED,CANCELLED}'::text[])) NOT VALID;
