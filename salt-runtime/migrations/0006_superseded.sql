-- A node can be superseded (state 'superseded'): its parent ran again and made a different call
-- at its place. It stays in the history, and the new call's node takes its (parent, seq) key,
-- which is therefore unique among the nodes that are not superseded only.
DROP INDEX nodes_by_key;
CREATE UNIQUE INDEX nodes_by_key ON nodes (run_id, parent, seq) WHERE state <> 'superseded';
