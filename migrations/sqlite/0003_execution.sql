-- Execution: sessions, transcripts, runs, tool calls and run event logs. Run events are
-- append-only; they go only with their run (session deletion).

CREATE TABLE sessions (
    workspace_id  TEXT NOT NULL,
    project_id    TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    description   TEXT NOT NULL,
    labels        TEXT NOT NULL,
    active_run    TEXT NOT NULL,
    message_count BIGINT NOT NULL,
    create_time   BIGINT NOT NULL,
    update_time   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project_id, session_id),
    FOREIGN KEY (workspace_id, project_id) REFERENCES projects (workspace_id, project_id) ON DELETE CASCADE
);
CREATE INDEX sessions_by_time ON sessions (workspace_id, project_id, create_time, session_id);

-- The transcript. `superseded` flips when a ROLLBACK run discards the run that wrote it.
CREATE TABLE messages (
    workspace_id TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    sequence     BIGINT NOT NULL,
    role         TEXT NOT NULL,
    content      TEXT NOT NULL,
    tool_call    TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    superseded   INTEGER NOT NULL,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project_id, session_id, sequence),
    FOREIGN KEY (workspace_id, project_id, session_id) REFERENCES sessions (workspace_id, project_id, session_id) ON DELETE CASCADE
);
CREATE INDEX messages_by_run ON messages (workspace_id, run_id);

-- Runs. `ready` marks the run that owns its session (only it may be claimed); the
-- lease columns fence workers: a call must name the current attempt and lease epoch.
CREATE TABLE runs (
    workspace_id      TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    project_id        TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    instance_id       TEXT NOT NULL,
    agent_id          TEXT NOT NULL,
    agent_revision    BIGINT NOT NULL,
    status            TEXT NOT NULL,
    stop_reason       TEXT NOT NULL,
    ready             INTEGER NOT NULL,
    spec              TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    error             TEXT NOT NULL,
    input_tokens      BIGINT NOT NULL,
    output_tokens     BIGINT NOT NULL,
    cost_usd          REAL NOT NULL,
    last_sequence     BIGINT NOT NULL,
    cancel_requested  INTEGER NOT NULL,
    supersede         INTEGER NOT NULL,
    approval          TEXT NOT NULL,
    approval_expire_time BIGINT,
    output            TEXT NOT NULL,
    next_attempt_time BIGINT NOT NULL,
    deadline          BIGINT,
    lease_epoch       BIGINT NOT NULL,
    lease_expire_time BIGINT,
    lease_duration    BIGINT NOT NULL,
    worker            TEXT NOT NULL,
    create_time       BIGINT NOT NULL,
    start_time        BIGINT,
    end_time          BIGINT,
    update_time       BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, run_id),
    FOREIGN KEY (workspace_id, project_id, session_id) REFERENCES sessions (workspace_id, project_id, session_id) ON DELETE CASCADE
);
CREATE INDEX runs_queue ON runs (workspace_id, agent_id, next_attempt_time) WHERE status = 'QUEUED' AND ready = 1;
CREATE INDEX runs_by_session ON runs (workspace_id, project_id, session_id, create_time);
CREATE INDEX runs_by_project ON runs (workspace_id, project_id, create_time);
CREATE INDEX runs_leased ON runs (workspace_id, status) WHERE status IN ('RUNNING', 'CANCELLING');
CREATE INDEX runs_lease_expiry ON runs (lease_expire_time) WHERE lease_expire_time IS NOT NULL;
CREATE INDEX runs_deadline ON runs (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX runs_approval_expiry ON runs (approval_expire_time) WHERE approval_expire_time IS NOT NULL;
CREATE INDEX runs_backoff ON runs (next_attempt_time) WHERE status = 'QUEUED';

-- Tool calls a run started, open until answered (or closed with a synthetic result).
CREATE TABLE tool_calls (
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    call_id      TEXT NOT NULL,
    tool         TEXT NOT NULL,
    open         INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, run_id, call_id),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs (workspace_id, run_id) ON DELETE CASCADE
);

-- Each run's durable log: sequence 1, 2, 3 … gapless; rows never change.
CREATE TABLE run_events (
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    sequence     BIGINT NOT NULL,
    attempt      INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    body         TEXT NOT NULL,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, run_id, sequence),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs (workspace_id, run_id) ON DELETE CASCADE
);

CREATE TRIGGER run_events_no_update BEFORE UPDATE ON run_events
BEGIN
    SELECT RAISE(ABORT, 'run events are append-only');
END;
CREATE TRIGGER run_events_guard_delete BEFORE DELETE ON run_events
WHEN EXISTS (
    SELECT 1 FROM runs r WHERE r.workspace_id = OLD.workspace_id AND r.run_id = OLD.run_id
)
BEGIN
    SELECT RAISE(ABORT, 'run events are append-only');
END;
