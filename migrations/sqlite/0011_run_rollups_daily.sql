-- Daily rollups above the hourly ones: see migrations/postgres/0011_run_rollups_daily.sql.
ALTER TABLE run_rollup_marks ADD COLUMN daily_until BIGINT NOT NULL DEFAULT 0;

CREATE TABLE run_rollups_daily (
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

-- A run deleted below the watermark unseals its hour and its day too.
DROP TRIGGER runs_unseal_rollups;
CREATE TRIGGER runs_unseal_rollups AFTER DELETE ON runs
BEGIN
    DELETE FROM run_rollups
        WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id
          AND bucket >= (OLD.create_time / 3600000000) * 3600000000
          AND EXISTS (SELECT 1 FROM run_rollup_marks m
                      WHERE m.workspace_id = OLD.workspace_id AND m.project_id = OLD.project_id
                        AND m.sealed_until > OLD.create_time);
    DELETE FROM run_rollups_daily
        WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id
          AND bucket >= (OLD.create_time / 86400000000) * 86400000000
          AND EXISTS (SELECT 1 FROM run_rollup_marks m
                      WHERE m.workspace_id = OLD.workspace_id AND m.project_id = OLD.project_id
                        AND m.daily_until > OLD.create_time);
    UPDATE run_rollup_marks
        SET sealed_until = MIN(sealed_until, (OLD.create_time / 3600000000) * 3600000000),
            daily_until = MIN(daily_until, (OLD.create_time / 86400000000) * 86400000000)
        WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id;
END;
