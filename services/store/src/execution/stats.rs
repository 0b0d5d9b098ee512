//! GetRunStats: counts, usage and duration percentiles of a project's runs created in a
//! window (up to a year of runs), read from a rollup so that neither the time nor the
//! memory of a call grows with the number of runs.
//!
//! The rollup (migration 0005) counts each run by the hour and by the day it was created
//! in, and its queue wait and run time by a bucket of two significant digits with the
//! bucket's smallest and largest value; triggers on `runs` keep it in the transaction
//! that writes the run. A window is read as whole days, then whole hours at its ends,
//! then the runs of the less than an hour left at each end (through `runs_by_project`).
//!
//! Percentiles are nearest-rank: the value at rank `max(1, ceil(q × n))` of the sorted
//! values. The merged buckets give the bucket of that rank; when its bounds are equal
//! that is the value, otherwise the runs of the window whose value lies within the
//! bounds are read in value order through `runs_by_queue_wait` / `runs_by_run_time`
//! (one bucket's runs, not the window's), so both back ends give the exact answer.

use std::collections::BTreeMap;

use agentry_core::{Result, names::ProjectName, run::RunStatus, run::Usage, time::Micros};
use sea_query::{Alias, Expr, Order, Query, SelectStatement};

use crate::{Store, tables::Runs};

mod plan;

use plan::Plan;

/// Percentiles of a duration (micros) and how many values they were taken over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: i64,
    pub p50: Micros,
    pub p95: Micros,
    pub p99: Micros,
}

/// The figures of one group of runs: a project's, or one agent's in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStatsGroup {
    /// Empty for the project total.
    pub agent: String,
    pub total: i64,
    /// By stored status name (`SUCCEEDED` …).
    pub by_status: BTreeMap<String, i64>,
    pub finished: i64,
    pub succeeded: i64,
    /// Creation to first start, of runs that started.
    pub queue_wait: Percentiles,
    /// First start to end, of runs that ended.
    pub run_time: Percentiles,
    pub usage: Usage,
}

/// The quantiles GetRunStats reports.
const QUANTILES: [f64; 3] = [0.50, 0.95, 0.99];

/// The nearest rank of quantile `q` among `n` values (1-based).
fn rank(q: f64, n: i64) -> i64 {
    ((q * n as f64).ceil() as i64).max(1)
}

/// The lower bound of `value`'s bucket, as `run_stat_buckets` lists them: below 100
/// each value, above two significant digits, all negative values together.
pub(crate) fn bucket(value: i64) -> i64 {
    if value < 0 {
        return i64::MIN;
    }
    let mut scale = 1;
    while value / scale >= 100 {
        scale *= 10;
    }
    value / scale * scale
}

/// A duration measured on a run, and which runs have it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Measure {
    QueueWait,
    RunTime,
}

impl Measure {
    const ALL: [Measure; 2] = [Measure::QueueWait, Measure::RunTime];

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

fn of_project(stmt: &mut SelectStatement, project: &ProjectName) {
    stmt.and_where(Expr::col(Runs::WorkspaceId).eq(project.workspace.as_str()))
        .and_where(Expr::col(Runs::ProjectId).eq(project.project.as_str()));
}

#[derive(sqlx::FromRow)]
struct CountRow {
    agent_id: String,
    status: String,
    runs: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    started: i64,
    ended: i64,
}

/// Counts and sums per (agent, status): of the rollup's periods (`rollup`), or of the
/// runs at the window's ends.
fn counts(project: &ProjectName, plan: &Plan, rollup: bool) -> SelectStatement {
    let started = format!(
        "CASE WHEN {} THEN 1 ELSE 0 END",
        Measure::QueueWait.present()
    );
    let ended = format!("CASE WHEN {} THEN 1 ELSE 0 END", Measure::RunTime.present());
    let (table, runs, started, ended, window) = if rollup {
        let table = Alias::new("run_stat_counts");
        (table, "runs", "started", "ended", plan.rollup())
    } else {
        let table = Alias::new("runs");
        (table, "1", started.as_str(), ended.as_str(), plan.runs())
    };
    let sums = [
        ("runs", runs),
        ("input_tokens", "input_tokens"),
        ("output_tokens", "output_tokens"),
        ("started", started),
        ("ended", ended),
    ];
    let mut stmt = Query::select();
    stmt.columns([Runs::AgentId, Runs::Status]);
    for (alias, value) in sums {
        stmt.expr_as(
            Expr::cust(format!("CAST(COALESCE(SUM({value}), 0) AS BIGINT)")),
            Alias::new(alias),
        );
    }
    stmt.expr_as(
        Expr::cust("CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION)"),
        Alias::new("cost_usd"),
    )
    .from(table)
    .and_where(window)
    .group_by_col(Runs::AgentId)
    .group_by_col(Runs::Status);
    of_project(&mut stmt, project);
    stmt
}

/// One bucket of a histogram: how many values, and bounds of them.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct Cell {
    runs: i64,
    min_value: i64,
    max_value: i64,
}

impl Cell {
    fn merge(&mut self, other: Cell) {
        self.runs += other.runs;
        self.min_value = self.min_value.min(other.min_value);
        self.max_value = self.max_value.max(other.max_value);
    }
}

/// Bucket → cell, in value order.
type Histogram = BTreeMap<i64, Cell>;

/// (agent, measure) → histogram.
type Histograms = BTreeMap<(String, Measure), Histogram>;

fn add(histograms: &mut Histograms, agent: &str, measure: Measure, bucket: i64, cell: Cell) {
    histograms
        .entry((agent.to_owned(), measure))
        .or_default()
        .entry(bucket)
        .and_modify(|c| c.merge(cell))
        .or_insert(cell);
}

#[derive(sqlx::FromRow)]
struct BucketRow {
    agent_id: String,
    measure: i64,
    bucket: i64,
    #[sqlx(flatten)]
    cell: Cell,
}

/// The rollup's buckets of the plan's periods, per agent.
fn rollup_buckets(project: &ProjectName, plan: &Plan) -> SelectStatement {
    let mut stmt = Query::select();
    stmt.column(Runs::AgentId)
        .expr_as(Expr::cust("CAST(measure AS BIGINT)"), Alias::new("measure"))
        .column(Alias::new("bucket"))
        .expr_as(Expr::cust("CAST(SUM(runs) AS BIGINT)"), Alias::new("runs"))
        .expr_as(Expr::cust("MIN(min_value)"), Alias::new("min_value"))
        .expr_as(Expr::cust("MAX(max_value)"), Alias::new("max_value"))
        .from(Alias::new("run_stat_durations"))
        .and_where(Expr::cust("runs > 0"))
        .and_where(plan.rollup())
        .group_by_col(Runs::AgentId)
        .group_by_col(Alias::new("measure"))
        .group_by_col(Alias::new("bucket"));
    of_project(&mut stmt, project);
    stmt
}

#[derive(sqlx::FromRow)]
struct EdgeRow {
    agent_id: String,
    wait: i64,
    took: Option<i64>,
}

/// The durations of the runs at the window's ends that started.
fn edge_durations(project: &ProjectName, plan: &Plan) -> SelectStatement {
    let mut stmt = Query::select();
    stmt.column(Runs::AgentId)
        .expr_as(Expr::cust(Measure::QueueWait.value()), Alias::new("wait"))
        .expr_as(Expr::cust(Measure::RunTime.value()), Alias::new("took"))
        .from(Runs::Table)
        .and_where(Expr::cust(Measure::QueueWait.present()))
        .and_where(plan.runs());
    of_project(&mut stmt, project);
    stmt
}

/// Where the value of a rank lies.
enum Pick {
    Value(i64),
    /// The `offset`-th (0-based) value of the window's runs within [min, max].
    Within {
        min: i64,
        max: i64,
        offset: i64,
    },
}

/// Where the `rank`-th (1-based) value of `histogram` lies.
fn pick(histogram: &Histogram, rank: i64) -> Option<Pick> {
    let mut below = 0;
    for cell in histogram.values() {
        if rank <= below + cell.runs {
            return Some(if cell.min_value == cell.max_value {
                Pick::Value(cell.min_value)
            } else {
                Pick::Within {
                    min: cell.min_value,
                    max: cell.max_value,
                    offset: rank - below - 1,
                }
            });
        }
        below += cell.runs;
    }
    None
}

/// The runs a group's figure is taken over.
struct Scope<'a> {
    project: &'a ProjectName,
    start: Micros,
    end: Micros,
    /// None for the project total.
    agent: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct ValueRow {
    value: i64,
}

/// The `offset`-th value of `measure` within [min, max] among the scope's runs.
fn nth_value(scope: &Scope, measure: Measure, min: i64, max: i64, offset: i64) -> SelectStatement {
    let value = measure.value();
    let mut stmt = Query::select();
    stmt.expr_as(Expr::cust(value), Alias::new("value"))
        .from(Runs::Table)
        .and_where(Expr::cust(measure.present()))
        .and_where(Expr::cust(format!("{value} >= {min} AND {value} <= {max}")))
        .and_where(Expr::col(Runs::CreateTime).gte(scope.start))
        .and_where(Expr::col(Runs::CreateTime).lt(scope.end))
        .order_by_expr(Expr::cust(value), Order::Asc)
        .limit(1)
        .offset(offset as u64);
    if let Some(agent) = scope.agent {
        stmt.and_where(Expr::col(Runs::AgentId).eq(agent));
    }
    of_project(&mut stmt, scope.project);
    stmt
}

/// Adds a row of counts to a group's figures.
fn count_into(figures: &mut RunStatsGroup, row: &CountRow) {
    let status = RunStatus::parse(&row.status);
    if row.runs == 0 {
        return;
    }
    figures.total += row.runs;
    *figures.by_status.entry(row.status.clone()).or_insert(0) += row.runs;
    if status.is_some_and(RunStatus::is_terminal) {
        figures.finished += row.runs;
    }
    if status == Some(RunStatus::Succeeded) {
        figures.succeeded += row.runs;
    }
    figures.queue_wait.count += row.started;
    figures.run_time.count += row.ended;
    figures.usage.input_tokens += row.input_tokens;
    figures.usage.output_tokens += row.output_tokens;
    figures.usage.cost_usd += row.cost_usd;
}

fn group<'g>(
    groups: &'g mut BTreeMap<String, RunStatsGroup>,
    agent: &str,
) -> &'g mut RunStatsGroup {
    groups
        .entry(agent.to_owned())
        .or_insert_with(|| RunStatsGroup {
            agent: agent.to_owned(),
            ..RunStatsGroup::default()
        })
}

impl Store {
    /// The figures of `project`'s runs created in `[start, end)`: the total, and with
    /// `by_agent` each agent's (ordered by agent id).
    pub async fn run_stats(
        &self,
        project: &ProjectName,
        start: Micros,
        end: Micros,
        by_agent: bool,
    ) -> Result<(RunStatsGroup, Vec<RunStatsGroup>)> {
        let plan = Plan::new(start, end);
        let mut rows: Vec<CountRow> = self.db.fetch_all(&counts(project, &plan, true)).await?;
        if !plan.edges.is_empty() {
            rows.extend(
                self.db
                    .fetch_all::<CountRow>(&counts(project, &plan, false))
                    .await?,
            );
        }
        let mut total = RunStatsGroup::default();
        let mut agents: BTreeMap<String, RunStatsGroup> = BTreeMap::new();
        for row in rows.iter().filter(|r| r.runs > 0) {
            count_into(&mut total, row);
            if by_agent {
                count_into(group(&mut agents, &row.agent_id), row);
            }
        }
        if total.total == 0 {
            return Ok((total, agents.into_values().collect()));
        }
        let histograms = self.histograms(project, &plan).await?;
        let scope = Scope {
            project,
            start,
            end,
            agent: None,
        };
        let mut whole = Histograms::new();
        for ((_, measure), histogram) in &histograms {
            for (bucket, cell) in histogram {
                add(&mut whole, "", *measure, *bucket, *cell);
            }
        }
        self.percentiles(&scope, &whole, &mut total).await?;
        for (agent, figures) in &mut agents {
            let scope = Scope {
                agent: Some(agent),
                ..scope
            };
            self.percentiles(&scope, &histograms, figures).await?;
        }
        Ok((total, agents.into_values().collect()))
    }

    /// Every (agent, measure)'s histogram of the window.
    async fn histograms(&self, project: &ProjectName, plan: &Plan) -> Result<Histograms> {
        let mut histograms = Histograms::new();
        let rows: Vec<BucketRow> = self.db.fetch_all(&rollup_buckets(project, plan)).await?;
        for row in rows {
            let measure = Measure::ALL[usize::from(row.measure != 0)];
            add(
                &mut histograms,
                &row.agent_id,
                measure,
                row.bucket,
                row.cell,
            );
        }
        if plan.edges.is_empty() {
            return Ok(histograms);
        }
        let edges: Vec<EdgeRow> = self.db.fetch_all(&edge_durations(project, plan)).await?;
        for row in edges {
            let values = [
                (Measure::QueueWait, Some(row.wait)),
                (Measure::RunTime, row.took),
            ];
            for (measure, value) in values {
                if let Some(value) = value {
                    let cell = Cell {
                        runs: 1,
                        min_value: value,
                        max_value: value,
                    };
                    add(&mut histograms, &row.agent_id, measure, bucket(value), cell);
                }
            }
        }
        Ok(histograms)
    }

    /// The scope's percentiles of both measures, from its histograms.
    async fn percentiles(
        &self,
        scope: &Scope<'_>,
        histograms: &Histograms,
        figures: &mut RunStatsGroup,
    ) -> Result<()> {
        for measure in Measure::ALL {
            let key = (scope.agent.unwrap_or("").to_owned(), measure);
            let Some(histogram) = histograms.get(&key) else {
                continue;
            };
            let count: i64 = histogram.values().map(|c| c.runs).sum();
            let mut values = [0; 3];
            for (q, slot) in QUANTILES.iter().zip(values.iter_mut()) {
                *slot = match pick(histogram, rank(*q, count)) {
                    None => 0,
                    Some(Pick::Value(value)) => value,
                    Some(Pick::Within { min, max, offset }) => self
                        .db
                        .fetch_optional::<ValueRow>(&nth_value(scope, measure, min, max, offset))
                        .await?
                        .map_or(max, |row| row.value),
                };
            }
            let percentiles = match measure {
                Measure::QueueWait => &mut figures.queue_wait,
                Measure::RunTime => &mut figures.run_time,
            };
            (percentiles.p50, percentiles.p95, percentiles.p99) = (values[0], values[1], values[2]);
        }
        Ok(())
    }
}
