-- Fewer index entries per run (see the Postgres migration): runs_leased is read by no
-- query since claims take slots (0006); runs_backoff holds only re-queued runs.
DROP INDEX runs_leased;

DROP INDEX runs_backoff;
CREATE INDEX runs_backoff ON runs (next_attempt_time) WHERE status = 'QUEUED' AND attempt > 1;
