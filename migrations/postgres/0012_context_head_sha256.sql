-- The head version's hash on the context row, written with head_version by every write
-- (services/store/src/contexts/write.rs, group_sql.rs, versions.rs). A write reads it with
-- the row lock it takes anyway, instead of looking the head version up in
-- context_versions: before a table's first ANALYZE that lookup could go through a list
-- index (context_versions_by_op) and read every version of the workspace.
-- '' only for a context without versions (head_version 0).
ALTER TABLE contexts ADD COLUMN head_sha256 TEXT NOT NULL DEFAULT '';

UPDATE contexts c SET head_sha256 = v.sha256
FROM context_versions v
WHERE v.workspace_id = c.workspace_id AND v.project_id = c.project_id
  AND v.context_id = c.context_id AND v.version = c.head_version;
