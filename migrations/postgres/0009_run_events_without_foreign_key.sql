-- A run's events went with it by a foreign key, whose check ran for every event row
-- inserted: a lookup and a FOR KEY SHARE lock of the run's row, about a sixth of the
-- Postgres time of a no-op run with four events (issue 15, pg_stat_statements). The
-- check guards nothing the writers do not already hold: every event is inserted in the
-- transaction that created its run or that holds its run's row locked (a worker call's
-- fence, the reaper, a cancel), and a run is deleted only under a stronger lock of that
-- row, so no event can be written for a run that is gone. The cascade stays, as a
-- trigger; the append-only guard lets it delete the events of a run that no longer
-- exists, as it let the foreign key's cascade.
ALTER TABLE run_events DROP CONSTRAINT run_events_workspace_id_run_id_fkey;

CREATE FUNCTION agentry_delete_run_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM run_events WHERE workspace_id = OLD.workspace_id AND run_id = OLD.run_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_delete_events AFTER DELETE ON runs
    FOR EACH ROW EXECUTE FUNCTION agentry_delete_run_events();
