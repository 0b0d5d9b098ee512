-- The Postgres migration of this number replaces context_versions' foreign key with a
-- delete trigger on contexts and checks compaction's deletes per statement instead of
-- per row. SQLite has no statement-level triggers, and its per-row checks are lookups in
-- the same process. Nothing changes here.
SELECT 1;
