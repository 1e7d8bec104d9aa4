-- The journal of runs on PostgreSQL: the same tables as the SQLite schema (its migrations 0001 to
-- 0010 together), with integer keys throughout, booleans as BOOLEAN, and partial indexes for the
-- hot queries (the claim, open signals and cancels, unrecorded queue results).
CREATE TABLE runs (
    id               BIGSERIAL PRIMARY KEY,
    workflow         TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    input            TEXT    NOT NULL,
    input_blob       BOOLEAN NOT NULL DEFAULT FALSE,
    output           TEXT,
    output_blob      BOOLEAN NOT NULL DEFAULT FALSE,
    error            TEXT,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    executor         TEXT    NOT NULL,
    parallelism      BIGINT  NOT NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    paused           BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE nodes (
    run_id       BIGINT  NOT NULL REFERENCES runs (id),
    id           BIGINT  NOT NULL,
    parent       BIGINT,
    seq          BIGINT,
    task         TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    args         TEXT    NOT NULL,
    input_hash   TEXT    NOT NULL,
    output       TEXT,
    output_blob  BOOLEAN NOT NULL DEFAULT FALSE,
    error        TEXT,
    attempts     BIGINT  NOT NULL DEFAULT 0,
    label        TEXT,
    color        TEXT,
    shape        TEXT,
    created_at   BIGINT  NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT,
    delivered_to BIGINT,
    policy       TEXT,
    PRIMARY KEY (run_id, id)
);
-- A superseded node gives its (parent, seq) key to the call that replaced it.
CREATE UNIQUE INDEX nodes_by_key ON nodes (run_id, parent, seq) WHERE state <> 'superseded';

CREATE TABLE edges (
    run_id    BIGINT NOT NULL,
    from_node BIGINT NOT NULL,
    to_node   BIGINT NOT NULL,
    kind      TEXT   NOT NULL,
    label     TEXT,
    PRIMARY KEY (run_id, from_node, to_node)
);

CREATE TABLE attempts (
    run_id      BIGINT NOT NULL,
    node_id     BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    state       TEXT   NOT NULL,
    executor    TEXT   NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    error       TEXT,
    PRIMARY KEY (run_id, node_id, attempt)
);

CREATE TABLE journal (
    run_id     BIGINT  NOT NULL,
    node_id    BIGINT  NOT NULL,
    seq        BIGINT  NOT NULL,
    kind       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    value_blob BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (run_id, node_id, seq)
);

CREATE TABLE logs (
    id      BIGSERIAL PRIMARY KEY,
    run_id  BIGINT NOT NULL,
    node_id BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    ts      BIGINT NOT NULL,
    line    TEXT   NOT NULL
);
CREATE INDEX logs_by_run ON logs (run_id, id);
CREATE INDEX logs_by_node ON logs (run_id, node_id, id);

CREATE TABLE promises (
    run_id      BIGINT NOT NULL,
    id          BIGINT NOT NULL,
    scope_node  BIGINT NOT NULL,
    declared_by BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    text        TEXT   NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (run_id, id)
);

CREATE TABLE waits (
    run_id        BIGINT NOT NULL,
    node_id       BIGINT NOT NULL,
    seq           BIGINT NOT NULL,
    name          TEXT   NOT NULL,
    schema        TEXT   NOT NULL,
    deadline      BIGINT,
    default_value TEXT,
    PRIMARY KEY (run_id, node_id, seq)
);

CREATE TABLE signals (
    id       BIGSERIAL PRIMARY KEY,
    run_id   BIGINT  NOT NULL,
    name     TEXT    NOT NULL,
    value    TEXT    NOT NULL,
    at       BIGINT  NOT NULL,
    consumed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX signals_open ON signals (run_id, id) WHERE NOT consumed;
CREATE INDEX signals_by_name ON signals (run_id, name);

CREATE TABLE node_cancels (
    id       BIGSERIAL PRIMARY KEY,
    run_id   BIGINT  NOT NULL REFERENCES runs (id),
    node_id  BIGINT  NOT NULL,
    consumed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX node_cancels_open ON node_cancels (run_id, id) WHERE NOT consumed;

-- The orchestrator that drives a run, until its lease expires.
CREATE TABLE run_leases (
    run_id      BIGINT PRIMARY KEY,
    owner       TEXT   NOT NULL,
    acquired_at BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX run_leases_by_owner ON run_leases (owner);

-- Attempts ready to run, claimable by any worker (state: ready | claimed | succeeded | failed |
-- cancelled). Rows are updated in place several times each: room is left in each page so that
-- those updates stay on the page (HOT updates, no index churn).
CREATE TABLE ready_queue (
    id          BIGSERIAL PRIMARY KEY,
    run_id      BIGINT NOT NULL,
    node_id     BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    queue       TEXT   NOT NULL,
    priority    BIGINT NOT NULL,
    state       TEXT   NOT NULL,
    owner       TEXT,
    expires_at  BIGINT,
    enqueued_at BIGINT NOT NULL,
    claims      BIGINT NOT NULL DEFAULT 0,
    task        TEXT   NOT NULL,
    input       TEXT   NOT NULL,
    result      TEXT,
    error       TEXT,
    taken_at    BIGINT,
    UNIQUE (run_id, node_id, attempt)
) WITH (fillfactor = 70);
-- The claim: only open entries, in the order they are claimed.
CREATE INDEX ready_queue_claimable ON ready_queue (queue, priority DESC, id) WHERE state IN ('ready', 'claimed');
-- Results workers reported that the run's orchestrator has not recorded yet.
CREATE INDEX ready_queue_unrecorded ON ready_queue (run_id, id)
    WHERE taken_at IS NULL AND state IN ('succeeded', 'failed');

-- Values whose JSON is over 1 MiB, once each, named by the sha256 of their JSON. Rows that hold
-- one have their flag column set and hold the reference `{"$salt_blob": "<sha256>", "bytes": N}`.
CREATE TABLE blobs (
    sha256 TEXT   PRIMARY KEY,
    bytes  BIGINT NOT NULL,
    data   BYTEA  NOT NULL
);
