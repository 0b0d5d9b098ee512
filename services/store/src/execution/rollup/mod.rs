//! Rollups of finished runs for GetRunStats, so that its cost does not grow with the
//! number of runs in its window.
//!
//! A background roller (called from the server's reaper task on every replica) folds the
//! runs of each project created before its watermark `run_rollup_marks.sealed_until`
//! into `run_rollups`: one row per (hour of create_time, agent, status) with exact
//! counts, token and cost sums, started/ended counts and log-linear histograms of queue
//! wait and run time ([`hist`]). The watermark is hour-aligned and advances to
//! `min(now - LAG, the oldest unfinished run of the project)`, floored to the hour:
//! every run below it was terminal when folded, and a terminal run never changes again,
//! so the sealed hours stay exact without touching any run transition. A fold and the
//! watermark's advance commit together, under the marks row's lock (Postgres), and an
//! hour is folded only from the watermark up, so each run is folded exactly once; a
//! crash loses nothing but the fold in progress.
//!
//! Above the hours, the same transaction sums each day whose hours are all sealed into
//! `run_rollups_daily` ([`days`], migration 0011), up to the second watermark
//! `daily_until` (a day, never past the day of `sealed_until`); so each day too is summed
//! exactly once, from hours that can no longer change.
//!
//! A run deleted below the watermark (its session deleted) lowers the watermark to its
//! hour, and `daily_until` to its day, and deletes the rollups from there on, by trigger
//! (migrations 0010 and 0011); the roller folds them again. The rollups go with their
//! project (foreign keys).
//!
//! Assumption, documented: a run's create_time is at most [`LAG`] older than the
//! commit that inserts it (clock skew between replicas plus transaction time);
//! otherwise a run could land below a watermark that has already passed it.
//!
//! A project whose oldest unfinished run is old (a run queued for days) keeps its
//! watermark there: GetRunStats stays exact but scans from that run on.
//!
//! GetRunStats reads the summed days and the other sealed hours fully inside its window
//! and scans the rest exactly ([`read`]).

mod days;
pub(crate) mod hist;
mod read;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agentry_core::{Result, time::now_micros};
use sea_query::{Alias, Expr, LockType, OnConflict, Order, Query};

use super::stats::CountRow;
use crate::{Store, db::Tx, tables::Runs};
use hist::Histogram;

/// How far behind now the watermark stays.
pub(crate) const LAG: i64 = 5 * 60 * 1_000_000;
/// The rollup bucket: an hour of create_time.
pub(crate) const HOUR: i64 = 3_600 * 1_000_000;
/// The daily rollup bucket: a UTC day of create_time.
pub(crate) const DAY: i64 = 24 * HOUR;
/// The most runs one fold reads (at least one whole hour is always folded).
const FOLD_RUNS: usize = 50_000;

pub(crate) fn floor_hour(t: i64) -> i64 {
    t.div_euclid(HOUR) * HOUR
}

pub(crate) fn floor_day(t: i64) -> i64 {
    t.div_euclid(DAY) * DAY
}

/// A run as a rollup counts it.
#[derive(sqlx::FromRow)]
pub(crate) struct RawRun {
    agent_id: String,
    status: String,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    create_time: i64,
    start_time: Option<i64>,
    end_time: Option<i64>,
}

pub(crate) fn raw_runs() -> sea_query::SelectStatement {
    Query::select()
        .columns([
            Runs::AgentId,
            Runs::Status,
            Runs::InputTokens,
            Runs::OutputTokens,
            Runs::CostUsd,
            Runs::CreateTime,
            Runs::StartTime,
            Runs::EndTime,
        ])
        .from(Runs::Table)
        .to_owned()
}

/// The figures of the runs of one (agent, status), of an hour or of a scan.
#[derive(Debug, Default, Clone)]
pub(crate) struct Cell {
    pub(in crate::execution) counts: CountRow,
    pub queue_wait: Histogram,
    pub run_time: Histogram,
}

impl Cell {
    /// An empty cell of `agent` and `status`.
    fn of(agent: &str, status: &str) -> Cell {
        Cell {
            counts: CountRow {
                agent_id: agent.to_owned(),
                status: status.to_owned(),
                ..CountRow::default()
            },
            ..Cell::default()
        }
    }

    fn add(&mut self, run: &RawRun) {
        let counts = &mut self.counts;
        counts.runs += 1;
        counts.input_tokens += run.input_tokens;
        counts.output_tokens += run.output_tokens;
        counts.cost_usd += run.cost_usd;
        if let Some(start) = run.start_time {
            counts.started += 1;
            self.queue_wait.add(start - run.create_time);
            if let Some(end) = run.end_time {
                counts.ended += 1;
                self.run_time.add(end - start);
            }
        }
    }

    /// Adds `other`'s histograms (not its counts).
    pub(crate) fn merge_histograms(&mut self, other: &Cell) {
        self.queue_wait.merge(&other.queue_wait);
        self.run_time.merge(&other.run_time);
    }
}

/// Cells by (agent, status).
pub(crate) type Cells = BTreeMap<(String, String), Cell>;

/// A rollup row (an hour's or a day's) as read back.
#[derive(sqlx::FromRow)]
pub(crate) struct Rolled {
    bucket: i64,
    #[sqlx(flatten)]
    counts: CountRow,
    queue_wait: String,
    run_time: String,
}

impl Rolled {
    /// Adds this row's figures to its (agent, status) cell of `cells`.
    fn add_to(&self, cells: &mut Cells) -> Result<()> {
        let (agent, status) = (&self.counts.agent_id, &self.counts.status);
        let cell = cells
            .entry((agent.clone(), status.clone()))
            .or_insert_with(|| Cell::of(agent, status));
        cell.counts.add(&self.counts);
        cell.queue_wait
            .merge_encoded(&self.queue_wait)
            .and_then(|()| cell.run_time.merge_encoded(&self.run_time))
            .ok_or_else(|| agentry_core::Error::internal("undecodable run rollup histogram"))
    }
}

pub(crate) fn fold_into(cells: &mut Cells, runs: &[RawRun]) {
    for run in runs {
        cells
            .entry((run.agent_id.clone(), run.status.clone()))
            .or_insert_with(|| Cell::of(&run.agent_id, &run.status))
            .add(run);
    }
}

/// The columns of `run_rollups`.
const COLUMNS: [&str; 13] = [
    "workspace_id",
    "project_id",
    "bucket",
    "agent_id",
    "status",
    "runs",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "started",
    "ended",
    "queue_wait",
    "run_time",
];

const UNFINISHED: [&str; 4] = ["QUEUED", "RUNNING", "REQUIRES_ACTION", "CANCELLING"];

fn marks() -> Alias {
    Alias::new("run_rollup_marks")
}

fn col(name: &str) -> Alias {
    Alias::new(name)
}

fn of_project(workspace: &str, project: &str) -> sea_query::Condition {
    sea_query::Condition::all()
        .add(Expr::col(col("workspace_id")).eq(workspace))
        .add(Expr::col(col("project_id")).eq(project))
}

impl Store {
    /// One roller pass: folds what each project may seal, within `max_time`. Returns
    /// the runs folded and whether the pass stopped before it was done.
    pub async fn roll_run_stats(&self, max_time: Duration) -> Result<(u64, bool)> {
        let started = Instant::now();
        let goal = floor_hour(now_micros() - LAG);
        let mark = "FROM run_rollup_marks m \
                    WHERE m.workspace_id = p.workspace_id AND m.project_id = p.project_id";
        let candidates = Query::select()
            .columns([
                (Alias::new("p"), col("workspace_id")),
                (Alias::new("p"), col("project_id")),
            ])
            .from_as(crate::tables::Projects::Table, Alias::new("p"))
            .and_where(Expr::cust(format!(
                "EXISTS (SELECT 1 FROM runs r WHERE r.workspace_id = p.workspace_id \
                 AND r.project_id = p.project_id AND r.create_time < {goal} \
                 AND r.create_time >= COALESCE((SELECT m.sealed_until {mark}), 0)) \
                 OR EXISTS (SELECT 1 {mark} AND m.daily_until < (m.sealed_until / {DAY}) * {DAY})"
            )))
            .to_owned();
        let projects: Vec<(String, String)> = self.db.fetch_all(&candidates).await?;
        let mut folded = 0;
        for (workspace, project) in projects {
            loop {
                if started.elapsed() >= max_time {
                    return Ok((folded, true));
                }
                match self.fold(&workspace, &project, goal).await {
                    Ok((runs, done)) => {
                        folded += runs;
                        if done {
                            break;
                        }
                    }
                    // One project's failure does not hold the others back.
                    Err(error) => {
                        tracing::warn!(%error, workspace, project, "run stats roll-up failed");
                        break;
                    }
                }
            }
        }
        Ok((folded, false))
    }

    /// Folds the next hours of one project, and sums the days they complete, in one
    /// transaction. Returns the runs folded and whether the project's watermarks reached
    /// as far as they may.
    async fn fold(&self, workspace: &str, project: &str, goal: i64) -> Result<(u64, bool)> {
        let mut tx = self.db.begin_as("RollRunStats").await?;
        let mark = lock_mark(&mut tx, workspace, project).await?;
        let unfinished: Option<(Option<i64>,)> = tx
            .fetch_optional(
                &Query::select()
                    .expr(Expr::col(Runs::CreateTime).min())
                    .from(Runs::Table)
                    .cond_where(of_project(workspace, project))
                    .and_where(Expr::col(Runs::Status).is_in(UNFINISHED))
                    .to_owned(),
            )
            .await?;
        let goal = match unfinished.and_then(|(t,)| t) {
            Some(oldest) => goal.min(floor_hour(oldest)),
            None => goal,
        };
        let (runs, until) = if goal > mark.sealed_until {
            fold_hours(&mut tx, workspace, project, mark.sealed_until, goal).await?
        } else {
            (0, mark.sealed_until)
        };
        let days = floor_day(until);
        let daily = days::roll(&mut tx, workspace, project, mark.daily_until, days).await?;
        if (until, daily) == (mark.sealed_until, mark.daily_until) {
            return Ok((0, true));
        }
        tx.execute(
            &Query::update()
                .table(marks())
                .value(col("sealed_until"), until)
                .value(col("daily_until"), daily)
                .cond_where(of_project(workspace, project))
                .to_owned(),
        )
        .await?;
        tx.commit().await?;
        Ok((runs, until >= goal && daily == days))
    }
}

/// A project's watermarks: runs folded below `sealed_until`, days summed below
/// `daily_until`.
#[derive(sqlx::FromRow)]
struct Mark {
    sealed_until: i64,
    daily_until: i64,
}

/// The project's watermarks, its row created (at 0) when missing and locked.
async fn lock_mark(tx: &mut Tx, workspace: &str, project: &str) -> Result<Mark> {
    tx.execute(
        &Query::insert()
            .into_table(marks())
            .columns([col("workspace_id"), col("project_id"), col("sealed_until")])
            .values_panic([workspace.into(), project.into(), 0i64.into()])
            .on_conflict(
                OnConflict::columns([col("workspace_id"), col("project_id")])
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned(),
    )
    .await?;
    tx.fetch_optional(
        &Query::select()
            .columns([col("sealed_until"), col("daily_until")])
            .from(marks())
            .cond_where(of_project(workspace, project))
            .lock(LockType::Update)
            .to_owned(),
    )
    .await?
    .ok_or_else(|| agentry_core::Error::internal("rollup watermark vanished"))
}

/// Folds the project's runs of the hours from `from` towards `goal` into `run_rollups`:
/// at most about [`FOLD_RUNS`] runs, whole hours. Returns the runs folded and the hour
/// it stopped at.
async fn fold_hours(
    tx: &mut Tx,
    workspace: &str,
    project: &str,
    from: i64,
    goal: i64,
) -> Result<(u64, i64)> {
    let mut runs: Vec<RawRun> = tx
        .fetch_all(
            &window(workspace, project, from, goal)
                .limit(FOLD_RUNS as u64 + 1)
                .to_owned(),
        )
        .await?;
    let mut until = goal;
    if runs.len() > FOLD_RUNS {
        let first = floor_hour(runs[0].create_time);
        let cut = floor_hour(runs[FOLD_RUNS].create_time);
        if cut > first {
            runs.retain(|run| run.create_time < cut);
            until = cut;
        } else {
            until = first + HOUR;
            runs = tx
                .fetch_all(&window(workspace, project, from, until))
                .await?;
        }
    }
    let mut hours: BTreeMap<i64, Cells> = BTreeMap::new();
    for run in &runs {
        let cells = hours.entry(floor_hour(run.create_time)).or_default();
        fold_into(cells, std::slice::from_ref(run));
    }
    insert_rollups(tx, "run_rollups", workspace, project, &hours).await?;
    Ok((runs.len() as u64, until))
}

/// The project's runs created in [from, until), oldest first.
fn window(workspace: &str, project: &str, from: i64, until: i64) -> sea_query::SelectStatement {
    raw_runs()
        .cond_where(of_project(workspace, project))
        .and_where(Expr::col(Runs::CreateTime).gte(from))
        .and_where(Expr::col(Runs::CreateTime).lt(until))
        .order_by(Runs::CreateTime, Order::Asc)
        .to_owned()
}

/// Inserts `buckets`' cells into `table` (`run_rollups` or `run_rollups_daily`).
async fn insert_rollups(
    tx: &mut Tx,
    table: &str,
    workspace: &str,
    project: &str,
    buckets: &BTreeMap<i64, Cells>,
) -> Result<()> {
    let rows: Vec<_> = buckets
        .iter()
        .flat_map(|(bucket, cells)| cells.iter().map(move |(key, cell)| (*bucket, key, cell)))
        .collect();
    for chunk in rows.chunks(200) {
        let mut insert = Query::insert()
            .into_table(Alias::new(table))
            .columns(COLUMNS.map(col))
            .to_owned();
        for (bucket, (agent, status), cell) in chunk {
            insert.values_panic([
                workspace.into(),
                project.into(),
                (*bucket).into(),
                agent.as_str().into(),
                status.as_str().into(),
                cell.counts.runs.into(),
                cell.counts.input_tokens.into(),
                cell.counts.output_tokens.into(),
                cell.counts.cost_usd.into(),
                cell.counts.started.into(),
                cell.counts.ended.into(),
                cell.queue_wait.encode().into(),
                cell.run_time.encode().into(),
            ]);
        }
        tx.execute(&insert).await?;
    }
    Ok(())
}
