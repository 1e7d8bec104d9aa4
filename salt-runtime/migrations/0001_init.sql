-- The journal of runs: every transition of a run, node or attempt is written here before
-- the orchestrator acts on it.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow     TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    input        TEXT    NOT NULL,
    output       TEXT,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    executor     TEXT    NOT NULL,
    parallelism  INTEGER NOT NULL,
    owner_pid    INTEGER,
    heartbeat_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE nodes (
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    id          INTEGER NOT NULL,
    parent      INTEGER,
    seq         INTEGER,
    task        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    args        TEXT    NOT NULL,
    input_hash  TEXT    NOT NULL,
    output      TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    label       TEXT,
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;

CREATE UNIQUE INDEX nodes_by_key ON nodes (run_id, parent, seq);

CREATE TABLE edges (
    run_id    INTEGER NOT NULL,
    from_node INTEGER NOT NULL,
    to_node   INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    PRIMARY KEY (run_id, from_node, to_node)
) WITHOUT ROWID;

CREATE TABLE attempts (
    run_id      INTEGER NOT NULL,
    node_id     INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    executor    TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    error       TEXT,
    PRIMARY KEY (run_id, node_id, attempt)
) WITHOUT ROWID;

CREATE TABLE journal (
    run_id  INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    value   TEXT    NOT NULL,
    PRIMARY KEY (run_id, node_id, seq)
) WITHOUT ROWID;

CREATE TABLE logs (
    run_id  INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    ts      INTEGER NOT NULL,
    line    TEXT    NOT NULL
);

CREATE INDEX logs_by_node ON logs (run_id, node_id, attempt);
