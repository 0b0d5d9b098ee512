-- GetRunStats from a rollup instead of every run of its window (see
-- services/store/src/execution/stats.rs). A run is counted by the hour and by the day
-- it was created in (`span`, `period`: the period's first microsecond), and its queue
-- wait and run time by a bucket of two significant digits, with the bucket's smallest
-- and largest value. Triggers on `runs` keep both tables in the transaction that
-- writes the run, whichever statement writes it: the new row is added, the old one
-- taken away.

-- The rollup's periods: an hour and a day, in microseconds.
CREATE TABLE run_stat_spans (span BIGINT PRIMARY KEY);
INSERT INTO run_stat_spans (span) VALUES (3600000000), (86400000000);

-- The lower bounds of the duration buckets: every value below 100 is its own bucket,
-- above that two significant digits (10..99 × 10^k); negative values share one bucket.
CREATE TABLE run_stat_buckets (lo BIGINT PRIMARY KEY);
INSERT INTO run_stat_buckets (lo)
WITH RECURSIVE scales (s) AS (
    SELECT CAST(1 AS BIGINT) UNION ALL SELECT s * 10 FROM scales WHERE s < 100000000000000000
), mantissas (m) AS (
    SELECT CAST(0 AS BIGINT) UNION ALL SELECT m + 1 FROM mantissas WHERE m < 99
)
SELECT m * s FROM scales, mantissas WHERE (m >= 10 OR s = 1) AND m <= 9223372036854775807 / s
UNION ALL SELECT -9223372036854775807 - 1;

CREATE TABLE run_stat_counts (
    workspace_id  TEXT NOT NULL,
    project_id    TEXT NOT NULL,
    span          BIGINT NOT NULL,
    period        BIGINT NOT NULL,
    agent_id      TEXT NOT NULL,
    status        TEXT NOT NULL,
    runs          BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_usd      REAL NOT NULL,
    -- Runs that started, and that started and ended.
    started       BIGINT NOT NULL,
    ended         BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project_id, span, period, agent_id, status)
);

CREATE TABLE run_stat_durations (
    workspace_id TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    span         BIGINT NOT NULL,
    period       BIGINT NOT NULL,
    -- 0: queue wait (start - create), 1: run time (end - start).
    measure      INTEGER NOT NULL,
    agent_id     TEXT NOT NULL,
    bucket       BIGINT NOT NULL,
    runs         BIGINT NOT NULL,
    -- Bounds of the bucket's values (a removal leaves them as they were: still bounds).
    min_value    BIGINT NOT NULL,
    max_value    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project_id, span, period, measure, agent_id, bucket)
);

-- A bucket's exact values, read for the one bucket a percentile falls in.
CREATE INDEX runs_by_queue_wait ON runs (workspace_id, project_id, start_time - create_time)
    WHERE start_time IS NOT NULL;
CREATE INDEX runs_by_run_time ON runs (workspace_id, project_id, end_time - start_time)
    WHERE start_time IS NOT NULL AND end_time IS NOT NULL;

-- A run's state as it enters (n = 1) or leaves (n = -1) the rollup: the triggers on
-- `runs` write one row here per state, and the trigger on this table applies it and
-- deletes it, so that the rollup's statements are written once.
CREATE TABLE run_stat_changes (
    workspace_id  TEXT NOT NULL,
    project_id    TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    status        TEXT NOT NULL,
    create_time   BIGINT NOT NULL,
    start_time    BIGINT,
    end_time      BIGINT,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_usd      REAL NOT NULL,
    n             BIGINT NOT NULL
);

CREATE TRIGGER runs_stats_insert AFTER INSERT ON runs BEGIN
    INSERT INTO run_stat_changes VALUES (NEW.workspace_id, NEW.project_id, NEW.agent_id, NEW.status, NEW.create_time, NEW.start_time, NEW.end_time, NEW.input_tokens, NEW.output_tokens, NEW.cost_usd, 1);
END;

CREATE TRIGGER runs_stats_delete AFTER DELETE ON runs BEGIN
    INSERT INTO run_stat_changes VALUES (OLD.workspace_id, OLD.project_id, OLD.agent_id, OLD.status, OLD.create_time, OLD.start_time, OLD.end_time, OLD.input_tokens, OLD.output_tokens, OLD.cost_usd, -1);
END;

CREATE TRIGGER runs_stats_update AFTER UPDATE OF workspace_id, project_id, agent_id, status, create_time, start_time, end_time, input_tokens, output_tokens, cost_usd ON runs
WHEN OLD.workspace_id IS NOT NEW.workspace_id OR OLD.project_id IS NOT NEW.project_id OR OLD.agent_id IS NOT NEW.agent_id OR OLD.status IS NOT NEW.status OR OLD.create_time IS NOT NEW.create_time OR OLD.start_time IS NOT NEW.start_time OR OLD.end_time IS NOT NEW.end_time OR OLD.input_tokens IS NOT NEW.input_tokens OR OLD.output_tokens IS NOT NEW.output_tokens OR OLD.cost_usd IS NOT NEW.cost_usd
BEGIN
    INSERT INTO run_stat_changes VALUES (OLD.workspace_id, OLD.project_id, OLD.agent_id, OLD.status, OLD.create_time, OLD.start_time, OLD.end_time, OLD.input_tokens, OLD.output_tokens, OLD.cost_usd, -1);
    INSERT INTO run_stat_changes VALUES (NEW.workspace_id, NEW.project_id, NEW.agent_id, NEW.status, NEW.create_time, NEW.start_time, NEW.end_time, NEW.input_tokens, NEW.output_tokens, NEW.cost_usd, 1);
END;

CREATE TRIGGER run_stat_changes_apply AFTER INSERT ON run_stat_changes BEGIN
INSERT INTO run_stat_counts (workspace_id, project_id, span, period, agent_id, status, runs,
    input_tokens, output_tokens, cost_usd, started, ended)
SELECT NEW.workspace_id, NEW.project_id, s.span,
    (NEW.create_time / s.span - (NEW.create_time % s.span < 0)) * s.span,
    NEW.agent_id, NEW.status, NEW.n, NEW.n * NEW.input_tokens, NEW.n * NEW.output_tokens, NEW.n * NEW.cost_usd,
    CASE WHEN NEW.start_time IS NOT NULL THEN NEW.n ELSE 0 END,
    CASE WHEN NEW.start_time IS NOT NULL AND NEW.end_time IS NOT NULL THEN NEW.n ELSE 0 END
FROM run_stat_spans s WHERE 1
ON CONFLICT (workspace_id, project_id, span, period, agent_id, status) DO UPDATE SET
    runs = runs + excluded.runs,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    cost_usd = cost_usd + excluded.cost_usd,
    started = started + excluded.started,
    ended = ended + excluded.ended;

INSERT INTO run_stat_durations (workspace_id, project_id, span, period, measure, agent_id, bucket,
    runs, min_value, max_value)
SELECT NEW.workspace_id, NEW.project_id, s.span,
    (NEW.create_time / s.span - (NEW.create_time % s.span < 0)) * s.span, v.measure, NEW.agent_id,
    (SELECT max(lo) FROM run_stat_buckets WHERE lo <= v.value), NEW.n, v.value, v.value
FROM run_stat_spans s, (
    SELECT 0 AS measure, NEW.start_time - NEW.create_time AS value
    UNION ALL SELECT 1, NEW.end_time - NEW.start_time
) v
WHERE v.value IS NOT NULL
ON CONFLICT (workspace_id, project_id, span, period, measure, agent_id, bucket) DO UPDATE SET
    runs = runs + excluded.runs,
    min_value = CASE WHEN excluded.runs < 0 THEN min_value WHEN runs <= 0 THEN excluded.min_value
        ELSE min(min_value, excluded.min_value) END,
    max_value = CASE WHEN excluded.runs < 0 THEN max_value WHEN runs <= 0 THEN excluded.max_value
        ELSE max(max_value, excluded.max_value) END;
    DELETE FROM run_stat_changes WHERE rowid = NEW.rowid;
END;

-- The runs written before this migration.
INSERT INTO run_stat_counts
SELECT r.workspace_id, r.project_id, s.span,
    (r.create_time / s.span - (r.create_time % s.span < 0)) * s.span,
    r.agent_id, r.status, count(*), sum(r.input_tokens), sum(r.output_tokens), sum(r.cost_usd),
    count(r.start_time), count(r.end_time - r.start_time)
FROM runs r, run_stat_spans s
GROUP BY 1, 2, 3, 4, 5, 6;

INSERT INTO run_stat_durations
SELECT workspace_id, project_id, span, period, measure, agent_id,
    (SELECT max(lo) FROM run_stat_buckets WHERE lo <= value) AS bucket,
    count(*), min(value), max(value)
FROM (
    SELECT r.workspace_id, r.project_id, s.span,
        (r.create_time / s.span - (r.create_time % s.span < 0)) * s.span AS period,
        m.measure, r.agent_id,
        CASE WHEN m.measure = 0 THEN r.start_time - r.create_time
            ELSE r.end_time - r.start_time END AS value
    FROM runs r, run_stat_spans s, (SELECT 0 AS measure UNION ALL SELECT 1) m
) measured
WHERE value IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7;
