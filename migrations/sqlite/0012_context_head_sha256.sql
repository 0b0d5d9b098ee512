-- The head version's hash on the context row (see the Postgres migration of the same
-- number). '' only for a context without versions (head_version 0).
ALTER TABLE contexts ADD COLUMN head_sha256 TEXT NOT NULL DEFAULT '';

UPDATE contexts SET head_sha256 = COALESCE((
    SELECT v.sha256 FROM context_versions v
    WHERE v.workspace_id = contexts.workspace_id AND v.project_id = contexts.project_id
      AND v.context_id = contexts.context_id AND v.version = contexts.head_version
), '');
