-- What a worker needs to run a queued attempt without the run's orchestrator: the task and its
-- input (the stored arguments with upstream outputs resolved). `taken_at` is when the
-- orchestrator took the entry's result (or closed the entry because the attempt ended another
-- way: an entry still `ready` or `claimed` then becomes `cancelled`).
ALTER TABLE ready_queue ADD COLUMN task TEXT NOT NULL DEFAULT '';
ALTER TABLE ready_queue ADD COLUMN input TEXT NOT NULL DEFAULT 'null';
ALTER TABLE ready_queue ADD COLUMN taken_at INTEGER;
