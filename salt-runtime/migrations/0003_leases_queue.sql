-- Ownership by lease instead of by process id, and the durable ready queue.
ALTER TABLE runs DROP COLUMN owner_pid;
ALTER TABLE runs DROP COLUMN heartbeat_at;

-- The orchestrator that drives a run, until its lease expires. A run stored as `running` or
-- `paused` whose lease is missing or expired reads as `interrupted`.
CREATE TABLE run_leases (
    run_id      INTEGER PRIMARY KEY,
    owner       TEXT    NOT NULL,
    acquired_at INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- Attempts ready to run, claimable by any worker. A claim lasts until `expires_at` unless
-- renewed; an expired claim is claimable again.
CREATE TABLE ready_queue (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL,
    node_id     INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    queue       TEXT    NOT NULL,
    priority    INTEGER NOT NULL,
    state       TEXT    NOT NULL, -- ready | claimed | succeeded | failed
    owner       TEXT,
    expires_at  INTEGER,
    enqueued_at INTEGER NOT NULL,
    claims      INTEGER NOT NULL DEFAULT 0,
    result      TEXT,
    error       TEXT,
    UNIQUE (run_id, node_id, attempt)
);
CREATE INDEX ready_queue_by_priority ON ready_queue (queue, state, priority DESC, id);
