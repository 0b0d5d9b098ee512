-- A run's row and each transcript message referenced their session by foreign key, whose
-- check looked the session up and locked it FOR KEY SHARE for every row inserted (issue
-- 15, auto_explain on the run benchmark: about 30 and 60 µs of every CreateRun). The
-- checks guard nothing the writers do not already hold: a run is inserted by CreateRun
-- and a message by a transcript append, each in a transaction that holds its session's
-- row locked (FOR NO KEY UPDATE), and a session is deleted only under a stronger lock
-- of that row, so nothing can be written for a session that is gone. The cascades stay,
-- as a trigger on sessions, as migrations 0009 and 0014 did for run events and context
-- versions; deleting the runs fires their own triggers (events, slots, rollups) and
-- their tool calls' foreign key cascade, as before.
ALTER TABLE runs DROP CONSTRAINT runs_workspace_id_project_id_session_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_workspace_id_project_id_session_id_fkey;

CREATE FUNCTION agentry_delete_session_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM messages
    WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id
      AND session_id = OLD.session_id;
    DELETE FROM runs
    WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id
      AND session_id = OLD.session_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_delete_rows AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION agentry_delete_session_rows();
