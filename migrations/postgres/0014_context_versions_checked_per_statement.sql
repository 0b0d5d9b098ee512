-- Two per-row checks of context_versions cost a context write's Postgres time without
-- guarding anything a statement-level check would not (issue 15, auto_explain on the
-- peers benchmark's CAS writes: about a sixth of a batch's STORE and half of its
-- compaction's time):
--
-- 1. The foreign key to contexts looked the context row up and locked it FOR KEY SHARE
--    for every version inserted. Every version is inserted by a transaction that holds
--    its context's row locked FOR UPDATE (a write, a rollback) or that inserted that
--    row itself (CreateContext), and a context is deleted only under a lock of that row,
--    so no version can be written for a context that is gone. The cascade stays, as a
--    trigger on contexts, as migration 0009 did for run events.
-- 2. The guard that lets compaction delete only versions below the context's retention
--    floor (or of a context that is gone) ran a lookup of the context per deleted row;
--    it now checks every row a DELETE removed in one query, after the statement. An
--    UPDATE is still refused row by row (none is ever legal).
ALTER TABLE context_versions
    DROP CONSTRAINT context_versions_workspace_id_project_id_context_id_fkey;

CREATE FUNCTION agentry_delete_context_versions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM context_versions
    WHERE workspace_id = OLD.workspace_id AND project_id = OLD.project_id
      AND context_id = OLD.context_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER contexts_delete_versions AFTER DELETE ON contexts
    FOR EACH ROW EXECUTE FUNCTION agentry_delete_context_versions();

CREATE FUNCTION agentry_context_versions_compaction_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM gone g
        JOIN contexts c ON c.workspace_id = g.workspace_id AND c.project_id = g.project_id
            AND c.context_id = g.context_id
        WHERE g.version >= c.floor_version
    ) THEN
        RAISE EXCEPTION 'context versions are immutable; only retention compaction removes them'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER context_versions_guard ON context_versions;

-- agentry_context_versions_guard (0002) refuses every UPDATE.
CREATE TRIGGER context_versions_no_update BEFORE UPDATE ON context_versions
    FOR EACH ROW EXECUTE FUNCTION agentry_context_versions_guard();

CREATE TRIGGER context_versions_guard_delete AFTER DELETE ON context_versions
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION agentry_context_versions_compaction_guard();
