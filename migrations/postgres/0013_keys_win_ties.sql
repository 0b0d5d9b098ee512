-- A run or a session looked up by its key takes the key whatever the statistics say.
--
-- On a table that is small and was never analyzed (every table of a new database, until
-- autovacuum first analyzes it), a lookup by key costs the same through the key as
-- through any index that leads with the same column (workspace_id): both are estimated
-- at one row. Postgres then keeps the index it considered last, which is the newest,
-- and a connection keeps that plan for its prepared statement until the table is
-- analyzed, however large the table grows meanwhile. The list indexes of 0004 are newer
-- than the keys of 0003, so a run read, locked or updated by id went through
-- runs_by_session and read every entry of its workspace there: four times per run.
-- 0004 made sessions_by_name, a copy of the sessions key, to win the same tie for
-- sessions. Both keys are rebuilt here as their table's newest index, under their
-- names, and the copy goes. tests/tests/plans.rs checks the lookups on an empty, never
-- analyzed database.
--
-- Not done for the keys of contexts, context versions, instances and messages: their
-- lists are ordered by the key, so on a table never analyzed a filtered list (by owner,
-- author, status, agent) ties with the key as well, and there the filter's index must
-- win (plans.rs checks that at 100,000 rows).

ALTER TABLE tool_calls DROP CONSTRAINT tool_calls_workspace_id_run_id_fkey;
ALTER TABLE runs DROP CONSTRAINT runs_workspace_id_project_id_session_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_workspace_id_project_id_session_id_fkey;

CREATE UNIQUE INDEX runs_key ON runs (workspace_id, run_id);
ALTER TABLE runs DROP CONSTRAINT runs_pkey,
    ADD CONSTRAINT runs_pkey PRIMARY KEY USING INDEX runs_key;

DROP INDEX sessions_by_name;
CREATE UNIQUE INDEX sessions_key ON sessions (workspace_id, project_id, session_id);
ALTER TABLE sessions DROP CONSTRAINT sessions_pkey,
    ADD CONSTRAINT sessions_pkey PRIMARY KEY USING INDEX sessions_key;

ALTER TABLE tool_calls ADD CONSTRAINT tool_calls_workspace_id_run_id_fkey
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs (workspace_id, run_id) ON DELETE CASCADE;
ALTER TABLE runs ADD CONSTRAINT runs_workspace_id_project_id_session_id_fkey
    FOREIGN KEY (workspace_id, project_id, session_id)
    REFERENCES sessions (workspace_id, project_id, session_id) ON DELETE CASCADE;
ALTER TABLE messages ADD CONSTRAINT messages_workspace_id_project_id_session_id_fkey
    FOREIGN KEY (workspace_id, project_id, session_id)
    REFERENCES sessions (workspace_id, project_id, session_id) ON DELETE CASCADE;
