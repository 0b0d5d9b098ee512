-- GetRunStats rollups: see migrations/postgres/0010_run_rollups.sql. One writer at a
-- time, so the delete trigger needs no lock.
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

CREATE TRIGGER runs_unseal_rollups AFTER DELETE ON runs
BEGIN
    DELETE FROM run_rollups
        WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id
          AND bucket >= (OLD.create_time / 3600000000) * 3600000000
          AND EXISTS (SELECT 1 FROM run_rollup_marks m
                      WHERE m.workspace_id = OLD.workspace_id AND m.project_id = OLD.project_id
                        AND m.sealed_until > OLD.create_time);
    UPDATE run_rollup_marks SET sealed_until = MIN(sealed_until, (OLD.create_time / 3600000000) * 3600000000)
        WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id;
END;
