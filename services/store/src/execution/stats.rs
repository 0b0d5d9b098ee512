//! GetRunStats, computed by the database: counts, usage and duration percentiles of a
//! project's runs created in a window (up to a year of runs), so that the server's memory
//! does not grow with the number of runs.
//!
//! Percentiles are nearest-rank: the value at rank `max(1, ceil(q × n))` of the sorted
//! values. Postgres computes them with `percentile_disc`; SQLite, which has no ordered-set
//! aggregates, numbers the sorted values with a window function and keeps the three
//! ranks (its sorter spills to disk, so this too is bounded in memory). Both compute the
//! rank with the same double arithmetic, so both back ends give the same answer.
//! (`percentile_cont` would interpolate, which SQLite cannot match exactly.)
//!
//! The window's rows are found through `runs_by_project` (workspace, project,
//! create_time).
//!
//! When sealed rollup hours lie inside the window (see `super::rollup`), their rows
//! replace the scan of those hours: counts and sums stay exact, and percentiles come
//! from log-linear histograms, within 1 % (exact below 128 µs). A window with no sealed
//! hour is scanned as above, exactly.

use std::collections::BTreeMap;

use agentry_core::{
    Result,
    names::ProjectName,
    port::{RunStatsGroup, RunStatsQuery, RunStatsStore},
    run::RunStatus,
    time::UnixMicros,
};
use async_trait::async_trait;
use sea_query::{Alias, Expr, Order, Query, SelectStatement};

use super::rollup::{Cell, Cells};
use crate::{Store, db::Backend, rows::ProjectKeyed, tables::Runs};

/// The quantiles GetRunStats reports.
const QUANTILES: [f64; 3] = [0.50, 0.95, 0.99];

/// The nearest rank of quantile `q` among `n` values (1-based), as both back ends
/// compute it.
fn rank(q: f64, n: i64) -> i64 {
    ((q * n as f64).ceil() as i64).max(1)
}

/// A duration measured on a run, and which runs have it.
#[derive(Clone, Copy)]
enum Measure {
    QueueWait,
    RunTime,
}

impl Measure {
    fn value(self) -> &'static str {
        match self {
            Measure::QueueWait => "start_time - create_time",
            Measure::RunTime => "end_time - start_time",
        }
    }

    fn present(self) -> &'static str {
        match self {
            Measure::QueueWait => "start_time IS NOT NULL",
            Measure::RunTime => "start_time IS NOT NULL AND end_time IS NOT NULL",
        }
    }
}

fn in_window(
    stmt: &mut SelectStatement,
    project: &ProjectName,
    start: UnixMicros,
    end: UnixMicros,
) {
    stmt.cond_where(Runs::in_project(project))
        .and_where(Expr::col(Runs::CreateTime).gte(start))
        .and_where(Expr::col(Runs::CreateTime).lt(end));
}

#[derive(sqlx::FromRow, Debug, Default, Clone)]
pub(super) struct CountRow {
    pub agent_id: String,
    pub status: String,
    pub runs: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub started: i64,
    pub ended: i64,
}

impl CountRow {
    /// Adds `other`'s counts and sums (of the same agent and status).
    pub(super) fn add(&mut self, other: &CountRow) {
        self.runs += other.runs;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
        self.started += other.started;
        self.ended += other.ended;
    }
}

/// Counts and sums per (agent, status).
fn counts(project: &ProjectName, start: UnixMicros, end: UnixMicros) -> SelectStatement {
    let present = |m: Measure| {
        format!(
            "CAST(COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0) AS BIGINT)",
            m.present()
        )
    };
    let columns = [
        ("runs", "COUNT(*)".to_owned()),
        (
            "input_tokens",
            "CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT)".into(),
        ),
        (
            "output_tokens",
            "CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT)".into(),
        ),
        (
            "cost_usd",
            "CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION)".into(),
        ),
        ("started", present(Measure::QueueWait)),
        ("ended", present(Measure::RunTime)),
    ];
    let mut stmt = Query::select();
    stmt.columns([Runs::AgentId, Runs::Status]);
    for (alias, sql) in columns {
        stmt.expr_as(Expr::cust(sql), Alias::new(alias));
    }
    stmt.from(Runs::Table)
        .group_by_col(Runs::AgentId)
        .group_by_col(Runs::Status);
    in_window(&mut stmt, project, start, end);
    stmt
}

#[derive(sqlx::FromRow)]
struct PercentileRow {
    agent_id: String,
    wait_p50: Option<i64>,
    wait_p95: Option<i64>,
    wait_p99: Option<i64>,
    run_p50: Option<i64>,
    run_p95: Option<i64>,
    run_p99: Option<i64>,
}

/// Postgres: every percentile of the total, or of each agent, in one statement.
fn pg_percentiles(w: &Window<'_>) -> SelectStatement {
    let mut stmt = Query::select();
    if w.grouped {
        stmt.column(Runs::AgentId).group_by_col(Runs::AgentId);
    } else {
        stmt.expr_as(Expr::cust("''"), Alias::new("agent_id"));
    }
    for (prefix, measure) in [("wait", Measure::QueueWait), ("run", Measure::RunTime)] {
        for (q, suffix) in QUANTILES.iter().zip(["p50", "p95", "p99"]) {
            stmt.expr_as(
                Expr::cust(format!(
                    "percentile_disc({q:?}) WITHIN GROUP (ORDER BY {}) FILTER (WHERE {})",
                    measure.value(),
                    measure.present()
                )),
                Alias::new(format!("{prefix}_{suffix}")),
            );
        }
    }
    stmt.from(Runs::Table);
    in_window(&mut stmt, w.project, w.start, w.end);
    stmt
}

#[derive(sqlx::FromRow)]
struct RankedRow {
    agent_id: String,
    value: i64,
    position: i64,
    value_count: i64,
}

/// SQLite: the values of `measure` at the quantiles' ranks, per agent or for the total.
fn sqlite_ranked(w: &Window<'_>, measure: Measure) -> SelectStatement {
    let mut values = Query::select();
    if w.grouped {
        values.expr_as(Expr::col(Runs::AgentId), Alias::new("grp"));
    } else {
        values.expr_as(Expr::cust("''"), Alias::new("grp"));
    }
    values
        .expr_as(Expr::cust(measure.value()), Alias::new("value"))
        .from(Runs::Table)
        .and_where(Expr::cust(measure.present()));
    in_window(&mut values, w.project, w.start, w.end);
    let ranked = Query::select()
        .columns([Alias::new("grp"), Alias::new("value")])
        .expr_as(
            Expr::cust("ROW_NUMBER() OVER (PARTITION BY grp ORDER BY value)"),
            Alias::new("position"),
        )
        .expr_as(
            Expr::cust("COUNT(*) OVER (PARTITION BY grp)"),
            Alias::new("value_count"),
        )
        .from_subquery(values, Alias::new("measured"))
        .to_owned();
    // max(1, ceil(q × n)) in SQL: CAST truncates, and a comparison is 0 or 1.
    let wanted = QUANTILES
        .iter()
        .map(|q| {
            format!(
                "position = MAX(1, CAST({q:?} * value_count AS INTEGER) + ({q:?} * value_count > CAST({q:?} * value_count AS INTEGER)))"
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    Query::select()
        .expr_as(Expr::col(Alias::new("grp")), Alias::new("agent_id"))
        .column(Alias::new("value"))
        .columns([Alias::new("position"), Alias::new("value_count")])
        .from_subquery(ranked, Alias::new("ranked"))
        .and_where(Expr::cust(wanted))
        .order_by(Alias::new("grp"), Order::Asc)
        .to_owned()
}

/// The project's figures and, when asked for, each agent's.
#[derive(Default)]
struct Figures {
    total: RunStatsGroup,
    agents: Agents,
}

impl Figures {
    /// The total, or `agent`'s figures when `grouped`.
    fn of(&mut self, grouped: bool, agent: &str) -> &mut RunStatsGroup {
        if grouped {
            group(&mut self.agents, agent)
        } else {
            &mut self.total
        }
    }

    /// What GetRunStats answers: the total and the agents' figures, by agent id.
    fn into_parts(self) -> (RunStatsGroup, Vec<RunStatsGroup>) {
        (self.total, self.agents.into_values().collect())
    }
}

fn group<'g>(
    groups: &'g mut BTreeMap<String, RunStatsGroup>,
    agent: &str,
) -> &'g mut RunStatsGroup {
    groups
        .entry(agent.to_owned())
        .or_insert_with(|| RunStatsGroup {
            agent: Some(agent.to_owned()),
            ..RunStatsGroup::default()
        })
}

type Agents = BTreeMap<String, RunStatsGroup>;

/// Adds each count row to the project's figures and, when `by_agent`, its agent's.
fn tally(rows: &[CountRow], by_agent: bool) -> Figures {
    let Figures {
        mut total,
        mut agents,
    } = Figures::default();
    for row in rows {
        let terminal = RunStatus::parse(&row.status).is_some_and(RunStatus::is_terminal);
        let succeeded = RunStatus::parse(&row.status) == Some(RunStatus::Succeeded);
        let mut groups = vec![&mut total];
        if by_agent {
            groups.push(group(&mut agents, &row.agent_id));
        }
        for figures in groups {
            figures.total += row.runs;
            *figures.by_status.entry(row.status.clone()).or_insert(0) += row.runs;
            if terminal {
                figures.finished += row.runs;
            }
            if succeeded {
                figures.succeeded += row.runs;
            }
            figures.queue_wait.count += row.started;
            figures.run_time.count += row.ended;
            figures.usage.input_tokens += row.input_tokens;
            figures.usage.output_tokens += row.output_tokens;
            figures.usage.cost_usd += row.cost_usd;
        }
    }
    Figures { total, agents }
}

/// The figures of rolled-up cells: counts as [`tally`] adds them, percentiles from the
/// merged histograms (nearest rank, within 1 %).
fn from_cells(cells: &Cells, by_agent: bool) -> Figures {
    let rows: Vec<CountRow> = cells.values().map(|cell| cell.counts.clone()).collect();
    let mut figures = tally(&rows, by_agent);
    let mut merged: BTreeMap<Option<&str>, Cell> = BTreeMap::new();
    for ((agent, _), cell) in cells {
        merged.entry(None).or_default().merge_histograms(cell);
        if by_agent {
            merged
                .entry(Some(agent))
                .or_default()
                .merge_histograms(cell);
        }
    }
    for (agent, cell) in merged {
        let group = figures.of(agent.is_some(), agent.unwrap_or(""));
        for (histogram, percentiles) in [
            (&cell.queue_wait, &mut group.queue_wait),
            (&cell.run_time, &mut group.run_time),
        ] {
            let n = histogram.count();
            let slots = [
                &mut percentiles.p50,
                &mut percentiles.p95,
                &mut percentiles.p99,
            ];
            for (q, slot) in QUANTILES.iter().zip(slots) {
                *slot = histogram.at_rank(rank(*q, n));
            }
        }
    }
    figures
}

#[async_trait]
impl RunStatsStore for Store {
    async fn run_stats(
        &self,
        project: &ProjectName,
        query: RunStatsQuery,
    ) -> Result<(RunStatsGroup, Vec<RunStatsGroup>)> {
        let RunStatsQuery {
            start,
            end,
            by_agent,
        } = query;
        if let Some(cells) = self.rolled_cells(project, start, end).await? {
            return Ok(from_cells(&cells, by_agent).into_parts());
        }
        let rows: Vec<CountRow> = self.db.fetch_all(&counts(project, start, end)).await?;
        let mut figures = tally(&rows, by_agent);
        if figures.total.total == 0 {
            return Ok(figures.into_parts());
        }
        let mut groupings = vec![false];
        if by_agent {
            groupings.push(true);
        }
        for grouped in groupings {
            let window = Window {
                project,
                start,
                end,
                grouped,
            };
            match self.db.backend() {
                Backend::Postgres => self.pg_fill(&window, &mut figures).await?,
                Backend::Sqlite => self.sqlite_fill(&window, &mut figures).await?,
            }
        }
        Ok(figures.into_parts())
    }
}

/// The runs a percentile query reads, and whether it groups them by agent.
struct Window<'a> {
    project: &'a ProjectName,
    start: UnixMicros,
    end: UnixMicros,
    grouped: bool,
}

impl Store {
    /// Postgres computes the percentiles itself (`percentile_disc`).
    async fn pg_fill(&self, w: &Window<'_>, all: &mut Figures) -> Result<()> {
        let stmt = pg_percentiles(w);
        let rows: Vec<PercentileRow> = self.db.fetch_all(&stmt).await?;
        for row in rows {
            let figures = all.of(w.grouped, &row.agent_id);
            let wait = &mut figures.queue_wait;
            (wait.p50, wait.p95, wait.p99) = (
                row.wait_p50.unwrap_or(0),
                row.wait_p95.unwrap_or(0),
                row.wait_p99.unwrap_or(0),
            );
            let run = &mut figures.run_time;
            (run.p50, run.p95, run.p99) = (
                row.run_p50.unwrap_or(0),
                row.run_p95.unwrap_or(0),
                row.run_p99.unwrap_or(0),
            );
        }
        Ok(())
    }

    /// SQLite ranks the values; the rows at the quantiles' ranks are the percentiles.
    async fn sqlite_fill(&self, w: &Window<'_>, all: &mut Figures) -> Result<()> {
        for measure in [Measure::QueueWait, Measure::RunTime] {
            let stmt = sqlite_ranked(w, measure);
            let rows: Vec<RankedRow> = self.db.fetch_all(&stmt).await?;
            for row in rows {
                let figures = all.of(w.grouped, &row.agent_id);
                let percentiles = match measure {
                    Measure::QueueWait => &mut figures.queue_wait,
                    Measure::RunTime => &mut figures.run_time,
                };
                let slots = [
                    &mut percentiles.p50,
                    &mut percentiles.p95,
                    &mut percentiles.p99,
                ];
                for (q, slot) in QUANTILES.iter().zip(slots) {
                    if rank(*q, row.value_count) == row.position {
                        *slot = row.value;
                    }
                }
            }
        }
        Ok(())
    }
}
