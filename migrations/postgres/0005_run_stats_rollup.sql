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
    cost_usd      DOUBLE PRECISION NOT NULL,
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
CREATE INDEX runs_by_queue_wait ON runs (workspace_id, project_id, (start_time - create_time))
    WHERE start_time IS NOT NULL;
CREATE INDEX runs_by_run_time ON runs (workspace_id, project_id, (end_time - start_time))
    WHERE start_time IS NOT NULL AND end_time IS NOT NULL;

CREATE FUNCTION run_stat_period(t BIGINT, span BIGINT) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE AS $$ SELECT (t / span - CASE WHEN t % span < 0 THEN 1 ELSE 0 END) * span $$;

CREATE FUNCTION run_stat_count(r runs, n BIGINT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO run_stat_counts AS c
    SELECT r.workspace_id, r.project_id, s.span, run_stat_period(r.create_time, s.span),
        r.agent_id, r.status, n, n * r.input_tokens, n * r.output_tokens, n * r.cost_usd,
        CASE WHEN r.start_time IS NOT NULL THEN n ELSE 0 END,
        CASE WHEN r.start_time IS NOT NULL AND r.end_time IS NOT NULL THEN n ELSE 0 END
    FROM run_stat_spans s
    ON CONFLICT (workspace_id, project_id, span, period, agent_id, status) DO UPDATE SET
        runs = c.runs + excluded.runs,
        input_tokens = c.input_tokens + excluded.input_tokens,
        output_tokens = c.output_tokens + excluded.output_tokens,
        cost_usd = c.cost_usd + excluded.cost_usd,
        started = c.started + excluded.started,
        ended = c.ended + excluded.ended;
END
$$;

CREATE FUNCTION run_stat_duration(r runs, which INTEGER, n BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v BIGINT := CASE WHEN which = 0 THEN r.start_time - r.create_time
        ELSE r.end_time - r.start_time END;
BEGIN
    IF v IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO run_stat_durations AS d
    SELECT r.workspace_id, r.project_id, s.span, run_stat_period(r.create_time, s.span), which,
        r.agent_id, (SELECT max(lo) FROM run_stat_buckets WHERE lo <= v), n, v, v
    FROM run_stat_spans s
    ON CONFLICT (workspace_id, project_id, span, period, measure, agent_id, bucket) DO UPDATE SET
        runs = d.runs + excluded.runs,
        min_value = CASE WHEN excluded.runs < 0 THEN d.min_value
            WHEN d.runs <= 0 THEN excluded.min_value
            ELSE LEAST(d.min_value, excluded.min_value) END,
        max_value = CASE WHEN excluded.runs < 0 THEN d.max_value
            WHEN d.runs <= 0 THEN excluded.max_value
            ELSE GREATEST(d.max_value, excluded.max_value) END;
END
$$;

-- A run's update or deletion: the old state taken away, the new one added, for what
-- the change touches.
CREATE FUNCTION run_stat_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    counts BOOLEAN := TG_OP = 'DELETE';
    wait BOOLEAN := TG_OP = 'DELETE';
    took BOOLEAN := TG_OP = 'DELETE';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        wait := (OLD.workspace_id, OLD.project_id, OLD.agent_id, OLD.create_time, OLD.start_time)
            IS DISTINCT FROM (NEW.workspace_id, NEW.project_id, NEW.agent_id, NEW.create_time, NEW.start_time);
        took := wait OR OLD.end_time IS DISTINCT FROM NEW.end_time;
        counts := took OR (OLD.status, OLD.input_tokens, OLD.output_tokens, OLD.cost_usd)
            IS DISTINCT FROM (NEW.status, NEW.input_tokens, NEW.output_tokens, NEW.cost_usd);
    END IF;
    IF counts THEN PERFORM run_stat_count(OLD, -1); END IF;
    IF wait THEN PERFORM run_stat_duration(OLD, 0, -1); END IF;
    IF took THEN PERFORM run_stat_duration(OLD, 1, -1); END IF;
    IF TG_OP = 'UPDATE' THEN
        IF counts THEN PERFORM run_stat_count(NEW, 1); END IF;
        IF wait THEN PERFORM run_stat_duration(NEW, 0, 1); END IF;
        IF took THEN PERFORM run_stat_duration(NEW, 1, 1); END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_stats AFTER DELETE OR UPDATE OF workspace_id, project_id,
    agent_id, status, input_tokens, output_tokens, cost_usd, create_time, start_time, end_time
    ON runs FOR EACH ROW EXECUTE FUNCTION run_stat_track();

-- Inserted runs: once per statement, grouped, so that a bulk load adds its rows at once.
CREATE FUNCTION run_stat_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO run_stat_counts AS c
    SELECT r.workspace_id, r.project_id, s.span, run_stat_period(r.create_time, s.span),
        r.agent_id, r.status, count(*), sum(r.input_tokens), sum(r.output_tokens), sum(r.cost_usd),
        count(r.start_time), count(r.end_time - r.start_time)
    FROM inserted_runs r, run_stat_spans s
    GROUP BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (workspace_id, project_id, span, period, agent_id, status) DO UPDATE SET
        runs = c.runs + excluded.runs,
        input_tokens = c.input_tokens + excluded.input_tokens,
        output_tokens = c.output_tokens + excluded.output_tokens,
        cost_usd = c.cost_usd + excluded.cost_usd,
        started = c.started + excluded.started,
        ended = c.ended + excluded.ended;
    INSERT INTO run_stat_durations AS d
    SELECT workspace_id, project_id, span, period, measure, agent_id,
        (SELECT max(lo) FROM run_stat_buckets WHERE lo <= value) AS bucket,
        count(*), min(value), max(value)
    FROM (
        SELECT r.workspace_id, r.project_id, s.span,
            run_stat_period(r.create_time, s.span) AS period, m.measure, r.agent_id,
            CASE WHEN m.measure = 0 THEN r.start_time - r.create_time
                ELSE r.end_time - r.start_time END AS value
        FROM inserted_runs r, run_stat_spans s, (VALUES (0), (1)) m (measure)
        WHERE r.start_time IS NOT NULL
    ) measured
    WHERE value IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (workspace_id, project_id, span, period, measure, agent_id, bucket) DO UPDATE SET
        runs = d.runs + excluded.runs,
        min_value = CASE WHEN d.runs <= 0 THEN excluded.min_value
            ELSE LEAST(d.min_value, excluded.min_value) END,
        max_value = CASE WHEN d.runs <= 0 THEN excluded.max_value
            ELSE GREATEST(d.max_value, excluded.max_value) END;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_stats_inserted AFTER INSERT ON runs REFERENCING NEW TABLE AS inserted_runs
    FOR EACH STATEMENT EXECUTE FUNCTION run_stat_inserted();

-- The runs written before this migration.
INSERT INTO run_stat_counts
SELECT r.workspace_id, r.project_id, s.span, run_stat_period(r.create_time, s.span),
    r.agent_id, r.status, count(*), sum(r.input_tokens), sum(r.output_tokens), sum(r.cost_usd),
    count(r.start_time), count(r.end_time - r.start_time)
FROM runs r, run_stat_spans s
GROUP BY 1, 2, 3, 4, 5, 6;

INSERT INTO run_stat_durations
SELECT workspace_id, project_id, span, period, measure, agent_id,
    (SELECT max(lo) FROM run_stat_buckets WHERE lo <= value) AS bucket,
    count(*), min(value), max(value)
FROM (
    SELECT r.workspace_id, r.project_id, s.span, run_stat_period(r.create_time, s.span) AS period,
        m.measure, r.agent_id,
        CASE WHEN m.measure = 0 THEN r.start_time - r.create_time
            ELSE r.end_time - r.start_time END AS value
    FROM runs r, run_stat_spans s, (VALUES (0), (1)) m (measure)
) measured
WHERE value IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7;
