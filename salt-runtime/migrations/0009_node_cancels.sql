-- Requests to cancel one node of a running run (`cancel RUN --node N`), taken by the run's
-- orchestrator: the node's attempt is stopped and the node recorded `cancelled`.
CREATE TABLE node_cancels (
    id       INTEGER PRIMARY KEY,
    run_id   INTEGER NOT NULL REFERENCES runs(id),
    node_id  INTEGER NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX node_cancels_open ON node_cancels (run_id) WHERE consumed = 0;
