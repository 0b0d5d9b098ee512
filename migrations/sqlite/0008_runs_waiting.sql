-- The hand-off look's index: only the runs waiting behind another in their session (see
-- the Postgres migration).
CREATE INDEX runs_waiting ON runs (workspace_id, project_id, session_id, create_time, run_id)
    WHERE status = 'QUEUED' AND ready = 0;
