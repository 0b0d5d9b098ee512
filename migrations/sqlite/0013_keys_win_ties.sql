-- sessions_by_name was a copy of the sessions key, made on Postgres to win a planner's tie
-- (see migrations/postgres/0013_keys_win_ties.sql); SQLite's plans never needed it.
DROP INDEX sessions_by_name;
