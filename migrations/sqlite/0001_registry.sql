-- Registry schema (SQLite; mirrors migrations/postgres/0001_registry.sql): tenancy, agent definitions, instances, idempotency and audit.
-- Times are microseconds since the Unix epoch; JSON documents are TEXT. Every key leads
-- with workspace_id so that the schema can be distributed by workspace.

CREATE TABLE server_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    workspace_id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    description  TEXT NOT NULL,
    quotas       TEXT NOT NULL,
    labels       TEXT NOT NULL,
    etag         BIGINT NOT NULL,
    create_time  BIGINT NOT NULL,
    update_time  BIGINT NOT NULL
);

CREATE TABLE projects (
    workspace_id TEXT NOT NULL REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    project_id   TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description  TEXT NOT NULL,
    labels       TEXT NOT NULL,
    etag         BIGINT NOT NULL,
    create_time  BIGINT NOT NULL,
    update_time  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project_id)
);

CREATE TABLE api_keys (
    workspace_id TEXT NOT NULL REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    key_id       TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL,
    create_time  BIGINT NOT NULL,
    expire_time  BIGINT,
    revoke_time  BIGINT,
    PRIMARY KEY (workspace_id, key_id)
);

-- The head of each definition. agent_uid names one incarnation, so that a definition
-- deleted and created again never shares revisions with the old one.
CREATE TABLE agents (
    workspace_id    TEXT NOT NULL REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    agent_id        TEXT NOT NULL,
    agent_uid       TEXT NOT NULL,
    latest_revision BIGINT NOT NULL,
    create_time     BIGINT NOT NULL,
    update_time     BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, agent_id)
);

-- Immutable revisions; outlive the head row (history is never rewritten).
CREATE TABLE agent_revisions (
    workspace_id TEXT NOT NULL,
    agent_uid    TEXT NOT NULL,
    revision     BIGINT NOT NULL,
    agent_id     TEXT NOT NULL,
    spec         TEXT NOT NULL,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, agent_uid, revision)
);

CREATE TABLE instances (
    workspace_id          TEXT NOT NULL,
    project_id            TEXT NOT NULL,
    instance_id           TEXT NOT NULL,
    display_name          TEXT NOT NULL,
    agent_id              TEXT NOT NULL,
    agent_uid             TEXT NOT NULL,
    agent_revision        BIGINT NOT NULL,
    config                TEXT NOT NULL,
    effective_config      TEXT NOT NULL,
    status                TEXT NOT NULL,
    status_before_offline TEXT,
    status_message        TEXT NOT NULL,
    heartbeat_ttl_ms      BIGINT NOT NULL,
    last_heartbeat_time   BIGINT,
    heartbeat_expire_time BIGINT,
    labels                TEXT NOT NULL,
    etag                  BIGINT NOT NULL,
    create_time           BIGINT NOT NULL,
    update_time           BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project_id, instance_id),
    FOREIGN KEY (workspace_id, project_id) REFERENCES projects (workspace_id, project_id) ON DELETE CASCADE
);
CREATE INDEX instances_by_agent ON instances (workspace_id, agent_uid);
CREATE INDEX instances_by_heartbeat ON instances (heartbeat_expire_time) WHERE heartbeat_expire_time IS NOT NULL;

-- The first result of every write that carried a request_id, for replay on retry.
CREATE TABLE idempotency_keys (
    workspace_id TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    method       TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    response     TEXT NOT NULL,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, request_id)
);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (create_time);

CREATE TABLE audit_log (
    workspace_id TEXT NOT NULL,
    audit_id     TEXT NOT NULL,
    create_time  BIGINT NOT NULL,
    principal    TEXT NOT NULL,
    method       TEXT NOT NULL,
    resource     TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    PRIMARY KEY (workspace_id, audit_id)
);

CREATE TRIGGER agent_revisions_no_update BEFORE UPDATE ON agent_revisions
BEGIN
    SELECT RAISE(ABORT, 'table agent_revisions is append-only');
END;
CREATE TRIGGER agent_revisions_no_delete BEFORE DELETE ON agent_revisions
BEGIN
    SELECT RAISE(ABORT, 'table agent_revisions is append-only');
END;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'table audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'table audit_log is append-only');
END;
