-- The Postgres migration of this number replaces run_events' foreign key with a delete
-- trigger (its check cost every event insert a lock of the run's row). SQLite keeps the
-- foreign key: its check is a lookup in the same process, and dropping it would mean
-- rebuilding the table. Nothing changes here.
SELECT 1;
