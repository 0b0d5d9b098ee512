-- Concurrent-run slots and the surplus of a lowered limit (see the Postgres migration):
-- a claim takes a free slot with its run; a run frees its slot, by trigger, in the
-- transaction that takes it out of RUNNING/CANCELLING or deletes it, or deletes it
-- while there is a surplus. slots - surplus = max_concurrent_runs.
CREATE TABLE run_slots (
    workspace_id TEXT NOT NULL REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    slot         INTEGER NOT NULL,
    run_id       TEXT,
    PRIMARY KEY (workspace_id, slot)
);
CREATE UNIQUE INDEX run_slots_by_run ON run_slots (workspace_id, run_id) WHERE run_id IS NOT NULL;

CREATE TABLE run_slot_surplus (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    surplus      INTEGER NOT NULL
);

-- Existing workspaces: their slots, the runs that hold one now in the lowest; then the
-- surplus of a limit lowered under more runs than it allows.
WITH RECURSIVE
    held AS (
        SELECT workspace_id, run_id,
               row_number() OVER (PARTITION BY workspace_id ORDER BY start_time, run_id) AS slot
        FROM runs
        WHERE status IN ('RUNNING', 'CANCELLING')
    ),
    wanted AS (
        SELECT w.workspace_id,
               max(CAST(json_extract(w.quotas, '$.max_concurrent_runs') AS INTEGER),
                   (SELECT count(*) FROM held h WHERE h.workspace_id = w.workspace_id)) AS top
        FROM workspaces w
    ),
    slots (workspace_id, slot, top) AS (
        SELECT workspace_id, 1, top FROM wanted WHERE top >= 1
        UNION ALL
        SELECT workspace_id, slot + 1, top FROM slots WHERE slot < top
    )
INSERT INTO run_slots (workspace_id, slot, run_id)
SELECT slots.workspace_id, slots.slot, held.run_id
FROM slots
LEFT JOIN held ON held.workspace_id = slots.workspace_id AND held.slot = slots.slot;

INSERT INTO run_slot_surplus (workspace_id, surplus)
SELECT workspace_id, surplus FROM (
    SELECT w.workspace_id,
           (SELECT count(*) FROM run_slots s WHERE s.workspace_id = w.workspace_id)
           - CAST(json_extract(w.quotas, '$.max_concurrent_runs') AS INTEGER) AS surplus
    FROM workspaces w
) WHERE surplus > 0;

-- A run letting go of its slot: inserting (workspace_id, run_id) here runs the three
-- statements below, which see each other (one writer at a time). While there is a
-- surplus the run's slot is deleted and the surplus shrinks by it (a RUNNING or
-- CANCELLING run always holds a slot); otherwise the slot is freed.
CREATE VIEW run_slot_release AS SELECT workspace_id, run_id FROM run_slots WHERE 0;
CREATE TRIGGER run_slot_release INSTEAD OF INSERT ON run_slot_release
BEGIN
    DELETE FROM run_slots
        WHERE workspace_id = NEW.workspace_id AND run_id = NEW.run_id
          AND (SELECT surplus FROM run_slot_surplus WHERE workspace_id = NEW.workspace_id) > 0;
    UPDATE run_slot_surplus SET surplus = surplus - 1
        WHERE workspace_id = NEW.workspace_id AND surplus > 0
          AND NOT EXISTS (SELECT 1 FROM run_slots WHERE workspace_id = NEW.workspace_id AND run_id = NEW.run_id);
    UPDATE run_slots SET run_id = NULL
        WHERE workspace_id = NEW.workspace_id AND run_id = NEW.run_id;
END;

CREATE TRIGGER runs_free_slot AFTER UPDATE OF status ON runs
    WHEN OLD.status IN ('RUNNING', 'CANCELLING') AND NEW.status NOT IN ('RUNNING', 'CANCELLING')
BEGIN
    INSERT INTO run_slot_release (workspace_id, run_id) VALUES (OLD.workspace_id, OLD.run_id);
END;
CREATE TRIGGER runs_free_slot_on_delete AFTER DELETE ON runs
    WHEN OLD.status IN ('RUNNING', 'CANCELLING')
BEGIN
    INSERT INTO run_slot_release (workspace_id, run_id) VALUES (OLD.workspace_id, OLD.run_id);
END;
