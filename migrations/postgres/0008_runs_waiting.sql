-- The hand-off look: when a run leaves its session, the session goes to its oldest run
-- waiting behind it (QUEUED, not ready). That look went through runs_by_session and read
-- every run the session ever had, oldest first, before it found none (issue 15: the
-- costliest read of a no-op run once a session has a few hundred runs). This index holds
-- only the waiting runs, usually none.
CREATE INDEX runs_waiting ON runs (workspace_id, project_id, session_id, create_time, run_id)
    WHERE status = 'QUEUED' AND ready = 0;
