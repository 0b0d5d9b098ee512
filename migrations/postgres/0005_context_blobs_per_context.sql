-- Documents are stored once per context instead of once per workspace. A blob shared by
-- several contexts was one row whose reference count every writer of that document
-- updated: concurrent writes of identical documents to different contexts serialized on
-- that row until each commit's WAL flush. Now a blob belongs to one context, whose row
-- lock already serializes its writes, so no two contexts' writes ever wait for each
-- other; a rollback or writing back an earlier document of the same context still
-- stores nothing new.
ALTER TABLE context_blobs RENAME TO context_blobs_by_workspace;

CREATE TABLE context_blobs (
    workspace_id TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    context_id   TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    data         TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    -- Versions of this context that store this document.
    refs         BIGINT NOT NULL,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project_id, context_id, sha256)
);

INSERT INTO context_blobs (workspace_id, project_id, context_id, sha256, data, size_bytes,
                           refs, create_time)
SELECT v.workspace_id, v.project_id, v.context_id, v.sha256, b.data, b.size_bytes,
       count(*), b.create_time
FROM context_versions v
JOIN context_blobs_by_workspace b ON b.workspace_id = v.workspace_id AND b.sha256 = v.sha256
GROUP BY v.workspace_id, v.project_id, v.context_id, v.sha256, b.workspace_id, b.sha256;

DROP TABLE context_blobs_by_workspace;
-- Only the shared blobs' release looked versions up by document.
DROP INDEX context_versions_by_blob;
