-- What a node's call changed of its task's policy (retries, backoff, timeout, queue,
-- priority), as JSON; NULL when it changed nothing. Command steps set it per call.
ALTER TABLE nodes ADD COLUMN policy TEXT;
