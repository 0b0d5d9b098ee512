-- Every list page is an index seek: each index holds the equality columns of a list
-- (and of its documented filter), then the page order, so that the keyset condition
-- `(create_time, id) < (t, id)` starts the scan at the page and never reads the rows
-- before it.
--
-- A lookup by name must take the primary key even before the table's first ANALYZE.
-- Without statistics Postgres takes every equality as selective, so an index that
-- leads with (workspace_id, project_id) looks exactly as cheap as the primary key
-- (workspace_id, project_id, id) for a lookup, and on a tie it takes the index created
-- last, which then reads every entry of the project. So a filter's column comes
-- second, before project_id, where a lookup by name does not reach it; and where an
-- index must lead with (workspace_id, project_id) (the unfiltered session list), a
-- unique index on the name is created after it.

-- ListRuns of a project, and with its status, agent or instance filter. (A run is
-- looked up by (workspace_id, run_id), which none of these lead with.)
DROP INDEX runs_by_project;
CREATE INDEX runs_by_project ON runs (workspace_id, project_id, create_time, run_id);
CREATE INDEX runs_by_status ON runs (workspace_id, status, project_id, create_time, run_id);
CREATE INDEX runs_by_agent ON runs (workspace_id, agent_id, project_id, create_time, run_id);
CREATE INDEX runs_by_instance ON runs (workspace_id, instance_id, project_id, create_time, run_id);
-- ListRuns of a session.
DROP INDEX runs_by_session;
CREATE INDEX runs_by_session ON runs (workspace_id, project_id, session_id, create_time, run_id);

-- ListSessions with its instance filter; then the name, last (see above).
CREATE INDEX sessions_by_instance ON sessions (workspace_id, instance_id, project_id, create_time, session_id);
CREATE UNIQUE INDEX sessions_by_name ON sessions (workspace_id, project_id, session_id);

-- ListContexts with its owner filter.
DROP INDEX contexts_by_owner;
CREATE INDEX contexts_by_owner ON contexts (workspace_id, owner, project_id, context_id);

-- ListContextVersions with its author or operation filter.
CREATE INDEX context_versions_by_author ON context_versions (workspace_id, author, project_id, context_id, version);
CREATE INDEX context_versions_by_op ON context_versions (workspace_id, op, project_id, context_id, version);

-- ListInstances with its status or agent filter.
CREATE INDEX instances_by_status ON instances (workspace_id, status, project_id, instance_id);
CREATE INDEX instances_by_agent_id ON instances (workspace_id, agent_id, project_id, instance_id);
