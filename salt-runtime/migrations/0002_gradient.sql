-- Annotations, promises, signals and pause.
ALTER TABLE nodes ADD COLUMN color TEXT;
ALTER TABLE nodes ADD COLUMN shape TEXT;
ALTER TABLE runs ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;

CREATE TABLE promises (
    run_id      INTEGER NOT NULL,
    id          INTEGER NOT NULL,
    scope_node  INTEGER NOT NULL,
    declared_by INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    text        TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;

-- Signals a parked node waits for; removed when it gets one.
CREATE TABLE waits (
    run_id        INTEGER NOT NULL,
    node_id       INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    schema        TEXT    NOT NULL,
    deadline      INTEGER,
    default_value TEXT,
    PRIMARY KEY (run_id, node_id, seq)
) WITHOUT ROWID;

-- Signals sent to a run, consumed by the node that waits for them.
CREATE TABLE signals (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   INTEGER NOT NULL,
    name     TEXT    NOT NULL,
    value    TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX signals_by_run ON signals (run_id, consumed);
