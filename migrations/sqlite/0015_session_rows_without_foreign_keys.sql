-- The Postgres migration of this number replaces the foreign keys of runs and messages to
-- sessions with a delete trigger on sessions (their checks locked the session row for
-- every row inserted). SQLite keeps the foreign keys: their checks are lookups in the
-- same process, and dropping them would mean rebuilding the tables. Nothing changes here.
SELECT 1;
