-- Fewer index entries per run (issue 15). A run's row is written four times (created,
-- claimed, events appended, ended), and every write that is not a HOT update adds an
-- entry to each index of `runs` whose predicate the new row meets.
--
-- runs_leased served the count of RUNNING runs each claim once made; claims take a
-- concurrent-run slot instead (0006), and no query reads it any more (the status list
-- has runs_by_status).
DROP INDEX runs_leased;

-- runs_backoff serves the reaper's look for re-queued runs whose backoff ended (attempt
-- above 1); it held every new run too. Now it holds only those.
DROP INDEX runs_backoff;
CREATE INDEX runs_backoff ON runs (next_attempt_time) WHERE status = 'QUEUED' AND attempt > 1;
