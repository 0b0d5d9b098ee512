-- Daily rollups above the hourly ones (see services/store/src/execution/rollup/days.rs),
-- so that GetRunStats over a month reads about 30 rows per (agent, status) instead of
-- about 720. The roller sums a project's sealed days from their hourly rows (same
-- columns, `bucket` the day's first micro, UTC days) in the transaction that advances
-- `daily_until`: every day before it is summed, every day from it on is not, and it
-- never passes the day of `sealed_until` (a day is summed only once all its hours are
-- sealed). Existing projects start at 0 and the roller sums their days from the hourly
-- rows already there.
ALTER TABLE run_rollup_marks ADD COLUMN daily_until BIGINT NOT NULL DEFAULT 0;

CREATE TABLE run_rollups_daily (
    LIKE run_rollups INCLUDING ALL,
    FOREIGN KEY (workspace_id, project_id) REFERENCES projects (workspace_id, project_id) ON DELETE CASCADE
);

-- A run deleted below the watermark unseals its hour and its day too.
CREATE OR REPLACE FUNCTION agentry_run_rollup_unseal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    hour bigint := (OLD.create_time / 3600000000) * 3600000000;
    day bigint := (OLD.create_time / 86400000000) * 86400000000;
BEGIN
    UPDATE run_rollup_marks
        SET sealed_until = LEAST(sealed_until, hour), daily_until = LEAST(daily_until, day)
        WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id;
    IF FOUND THEN
        DELETE FROM run_rollups
            WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id AND bucket >= hour;
        DELETE FROM run_rollups_daily
            WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id AND bucket >= day;
    END IF;
    RETURN NULL;
END
$$;
