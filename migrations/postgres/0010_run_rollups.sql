-- GetRunStats rollups (see services/store/src/execution/rollup/mod.rs). A background
-- roller folds the TERMINAL runs of a project created before its watermark into one row
-- per (hour of create_time, agent, status): exact counts and sums, and log-linear
-- histograms of queue wait and run time (`key:count,…`, keys in `rollup::hist`).
--
-- Every run created before `sealed_until` was terminal when it was folded (the
-- watermark never passes the oldest unfinished run) and terminal runs never change, so
-- the rollup rows below the watermark are exact. A run deleted below the watermark
-- (session deletion) lowers the watermark to its hour and drops the rollups from there
-- on; the roller folds them again. Both go with their project.
CREATE TABLE run_rollup_marks (
    workspace_id TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    sealed_until BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project_id),
    FOREIGN KEY (workspace_id, project_id) REFERENCES projects (workspace_id, project_id) ON DELETE CASCADE
);

CREATE TABLE run_rollups (
    workspace_id  TEXT NOT NULL,
    project_id    TEXT NOT NULL,
    bucket        BIGINT NOT NULL,
    agent_id      TEXT NOT NULL,
    status        TEXT NOT NULL,
    runs          BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_usd      DOUBLE PRECISION NOT NULL,
    started       BIGINT NOT NULL,
    ended         BIGINT NOT NULL,
    queue_wait    TEXT NOT NULL,
    run_time      TEXT NOT NULL,
    PRIMARY KEY (workspace_id, project_id, bucket, agent_id, status),
    FOREIGN KEY (workspace_id, project_id) REFERENCES projects (workspace_id, project_id) ON DELETE CASCADE
);

-- The marks row is updated unconditionally (LEAST): a roller holds it locked while it
-- folds, so a delete waits for the fold to commit and then undoes it from its hour on.
CREATE FUNCTION agentry_run_rollup_unseal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    hour bigint := (OLD.create_time / 3600000000) * 3600000000;
BEGIN
    UPDATE run_rollup_marks SET sealed_until = LEAST(sealed_until, hour)
        WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id;
    IF FOUND THEN
        DELETE FROM run_rollups
            WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id AND bucket >= hour;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_unseal_rollups AFTER DELETE ON runs
    FOR EACH ROW EXECUTE FUNCTION agentry_run_rollup_unseal();
