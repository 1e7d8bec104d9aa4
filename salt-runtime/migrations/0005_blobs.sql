-- Values whose JSON is over 1 MiB live in content-addressed files beside the database
-- (`<db file>.blobs/<sha256>`). Where a column may hold one, a flag says that it holds the
-- reference `{"$salt_blob": "<sha256>", "bytes": N}` instead of the value itself, so a user value
-- that looks like a reference is never taken for one. (Arguments in `nodes.args` are tagged
-- already: a spilled one is `{"blob": <reference>}` instead of `{"value": …}`.)
ALTER TABLE runs ADD COLUMN input_blob INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN output_blob INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN output_blob INTEGER NOT NULL DEFAULT 0;
ALTER TABLE journal ADD COLUMN value_blob INTEGER NOT NULL DEFAULT 0;
