-- Results workers reported that the run's orchestrator has not recorded yet: what an
-- orchestrator waiting for its queued attempts looks for after every commit of another process.
CREATE INDEX ready_queue_unrecorded ON ready_queue (run_id, id)
    WHERE taken_at IS NULL AND state IN ('succeeded', 'failed');
