-- A node that did not succeed and whose error was given to its parent's body (the parent awaited
-- it): the parent's attempt that received it. The parent owns that failure from then on: if the
-- parent succeeds, the run does too, and `recover` leaves the node alone. NULL when nobody
-- received it yet (a failure nobody awaited fails the run).
ALTER TABLE nodes ADD COLUMN delivered_to INTEGER;
