-- One task, one trace: the trace context the task was submitted under, in X-Ray
-- header form (Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1), written by the
-- submit INSERT (and by a schedule firing, and inherited by a completion webhook) and
-- read by the drainer so every attempt joins the same trace.  Nullable: rows from
-- before this migration have none.  The bound matches core/tracecontext.MAX_HEADER;
-- adding a nullable column with no default rewrites nothing (a catalog change only).
ALTER TABLE tasks
    ADD COLUMN trace_context text CONSTRAINT tasks_trace_context_length CHECK (length(trace_context) <= 256);
