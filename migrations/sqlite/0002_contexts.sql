-- Contexts (SQLite; mirrors migrations/postgres/0002_contexts.sql): immutable, gapless versions per context; documents stored once per workspace
-- by content hash (reference counted). Versions can be deleted only below the context's
-- retention floor (compaction) or once the context itself is gone.

CREATE TABLE contexts (
    workspace_id  TEXT NOT NULL,
    project_id    TEXT NOT NULL,
    context_id    TEXT NOT NULL,
    owner         TEXT NOT NULL,
    description   TEXT NOT NULL,
    keep_last     INTEGER NOT NULL,
    head_version  BIGINT NOT NULL,
    floor_version BIGINT NOT NULL,
    labels        TEXT NOT NULL,
    create_time   BIGINT NOT NULL,
    update_time   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project_id, context_id),
    FOREIGN KEY (workspace_id, project_id) REFERENCES projects (workspace_id, project_id) ON DELETE CASCADE
);
CREATE INDEX contexts_by_owner ON contexts (workspace_id, project_id, owner);

CREATE TABLE context_versions (
    workspace_id TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    context_id   TEXT NOT NULL,
    version      BIGINT NOT NULL,
    op           TEXT NOT NULL,
    rollback_of  BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    author       TEXT NOT NULL,
    description  TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project_id, context_id, version),
    FOREIGN KEY (workspace_id, project_id, context_id) REFERENCES contexts (workspace_id, project_id, context_id) ON DELETE CASCADE
);
CREATE INDEX context_versions_by_blob ON context_versions (workspace_id, sha256);

CREATE TABLE context_blobs (
    workspace_id TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    data         TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    refs         BIGINT NOT NULL,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, sha256)
);

CREATE TRIGGER context_versions_no_update BEFORE UPDATE ON context_versions
BEGIN
    SELECT RAISE(ABORT, 'context versions are immutable');
END;
CREATE TRIGGER context_versions_guard_delete BEFORE DELETE ON context_versions
WHEN EXISTS (
    SELECT 1 FROM contexts c
    WHERE c.workspace_id = OLD.workspace_id AND c.project_id = OLD.project_id
      AND c.context_id = OLD.context_id AND OLD.version >= c.floor_version
)
BEGIN
    SELECT RAISE(ABORT, 'context versions are immutable; only retention compaction removes them');
END;
