-- Concurrent-run slots: one row per run a workspace may have RUNNING or CANCELLING at
-- once, free (run_id NULL) or held by that run. A claim takes a free slot together with
-- the run it leases, in one statement, both with SKIP LOCKED: claims of one workspace
-- proceed side by side on different slots and runs, and the quota holds without
-- counting RUNNING runs.
--
-- A run frees its slot in the transaction that takes it out of RUNNING/CANCELLING or
-- deletes it, by the triggers below, whatever the path (completion, failure, retry,
-- lapsed lease, cancel, a claim given back, a cascade).
--
-- A limit lowered under runs that hold more slots than the new limit leaves a surplus:
-- that many held slots are deleted, instead of freed, as runs let go of them. So at
-- every moment: slots - surplus = max_concurrent_runs, and no slot is free while the
-- surplus is above zero.
CREATE TABLE run_slots (
    workspace_id TEXT NOT NULL REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    slot         INTEGER NOT NULL,
    run_id       TEXT,
    PRIMARY KEY (workspace_id, slot)
);
-- A run holds at most one slot; the triggers find it by the run.
CREATE UNIQUE INDEX run_slots_by_run ON run_slots (workspace_id, run_id) WHERE run_id IS NOT NULL;

CREATE TABLE run_slot_surplus (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    surplus      INTEGER NOT NULL
);

-- Existing workspaces: their slots, the runs that hold one now in the lowest, and the
-- surplus of a limit lowered under more runs than it allows.
WITH held AS (
    SELECT workspace_id, run_id,
           row_number() OVER (PARTITION BY workspace_id ORDER BY start_time, run_id) AS slot
    FROM runs
    WHERE status IN ('RUNNING', 'CANCELLING')
), wanted AS (
    SELECT w.workspace_id,
           (w.quotas::jsonb ->> 'max_concurrent_runs')::integer AS n,
           (SELECT count(*) FROM held h WHERE h.workspace_id = w.workspace_id)::integer AS held
    FROM workspaces w
), surplus AS (
    INSERT INTO run_slot_surplus (workspace_id, surplus)
    SELECT workspace_id, held - n FROM wanted WHERE held > n
)
INSERT INTO run_slots (workspace_id, slot, run_id)
SELECT wanted.workspace_id, s.slot, held.run_id
FROM wanted
CROSS JOIN LATERAL generate_series(1, GREATEST(wanted.n, wanted.held)) AS s (slot)
LEFT JOIN held ON held.workspace_id = wanted.workspace_id AND held.slot = s.slot;

-- Frees the slot of the run leaving (OLD), or deletes it while there is a surplus. The
-- run's slot row is locked first: a limit change locks every slot row before it reads
-- or writes the surplus, so it sees this slot freed, or this sees its surplus.
CREATE FUNCTION agentry_free_run_slot() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    freed integer;
BEGIN
    UPDATE run_slots SET run_id = NULL
        WHERE workspace_id = OLD.workspace_id AND run_id = OLD.run_id
        RETURNING slot INTO freed;
    IF FOUND THEN
        UPDATE run_slot_surplus SET surplus = surplus - 1
            WHERE workspace_id = OLD.workspace_id AND surplus > 0;
        IF FOUND THEN
            DELETE FROM run_slots WHERE workspace_id = OLD.workspace_id AND slot = freed;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_free_slot AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (OLD.status IN ('RUNNING', 'CANCELLING') AND NEW.status NOT IN ('RUNNING', 'CANCELLING'))
    EXECUTE FUNCTION agentry_free_run_slot();
CREATE TRIGGER runs_free_slot_on_delete AFTER DELETE ON runs
    FOR EACH ROW
    WHEN (OLD.status IN ('RUNNING', 'CANCELLING'))
    EXECUTE FUNCTION agentry_free_run_slot();
