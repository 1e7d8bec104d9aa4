-- A label a body gave an edge with `ctx.edge_label` (cosmetic, drawn on the edge). NULL when none
-- was set.
ALTER TABLE edges ADD COLUMN label TEXT;
