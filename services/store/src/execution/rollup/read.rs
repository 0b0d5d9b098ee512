//! GetRunStats from the rollups: the summed days fully inside the window and the other
//! sealed hours fully inside it, read from `run_rollups_daily` and `run_rollups` in one
//! statement together with the watermark, plus an exact scan of the rest of the window
//! (the partial hours at its edges and everything from the watermark on, finished or
//! not). Counts and sums are exactly those of a scan of the whole window; percentiles
//! come from the merged histograms, within 1 %.

use agentry_core::{Result, names::ProjectName, time::UnixMicros};
use sea_query::{Alias, Expr, JoinType, Query, SelectStatement, UnionType};

use super::{Cells, DAY, HOUR, RawRun, Rolled, col, floor_day, floor_hour, fold_into, raw_runs};
use crate::{
    Store,
    rows::{InProject, ProjectKeyed},
    tables::Runs,
};

#[derive(sqlx::FromRow)]
struct RollupRow {
    #[sqlx(flatten)]
    row: Rolled,
    sealed_until: i64,
}

/// The first bucket of `size` at or after `t`.
fn ceil(t: i64, size: i64) -> i64 {
    t.div_euclid(size) * size + if t.rem_euclid(size) == 0 { 0 } else { size }
}

/// The rows of `table` of the project in [first, last) below the watermark, with it.
fn rollups(
    table: &str,
    (workspace, project): (&str, &str),
    (first, last): (i64, i64),
) -> SelectStatement {
    let (r, m) = (Alias::new("r"), Alias::new("m"));
    let mut stmt = Query::select();
    for name in super::COLUMNS.iter().skip(2) {
        stmt.column((r.clone(), col(name)));
    }
    stmt.column((m.clone(), col("sealed_until")))
        .from_as(Alias::new(table), r.clone())
        .join_as(
            JoinType::InnerJoin,
            super::marks(),
            m.clone(),
            Expr::cust("m.workspace_id = r.workspace_id AND m.project_id = r.project_id"),
        )
        .and_where(Expr::col((r.clone(), col("workspace_id"))).eq(workspace))
        .and_where(Expr::col((r.clone(), col("project_id"))).eq(project))
        .and_where(Expr::col((r.clone(), col("bucket"))).gte(first))
        .and_where(Expr::col((r, col("bucket"))).lt(last))
        .and_where(Expr::cust("r.bucket < m.sealed_until"))
        .to_owned()
}

impl Store {
    /// The window's figures by (agent, status) from the sealed days and hours inside it
    /// and an exact scan of the rest; `None` when no sealed hour with runs lies inside it
    /// (the caller then scans the whole window, exactly).
    pub(crate) async fn rolled_cells(
        &self,
        project: &ProjectName,
        start: UnixMicros,
        end: UnixMicros,
    ) -> Result<Option<Cells>> {
        let first = ceil(start, HOUR);
        let last = floor_hour(end);
        if first >= last {
            return Ok(None);
        }
        // The days of [first, last) are read from their sums where summed (below
        // daily_until, all their hours sealed), and their hours are left out; the
        // other hours are read as they are.
        let (day_first, day_last) = (ceil(first, DAY), floor_day(last));
        let summed = format!(
            "r.bucket < m.daily_until AND (r.bucket / {DAY}) * {DAY} + {DAY} <= m.sealed_until"
        );
        let ids = project.ids();
        let mut stmt = rollups("run_rollups", ids, (first, last));
        stmt.and_where(Expr::cust(format!(
            "NOT (r.bucket >= {day_first} AND r.bucket < {day_last} AND {summed})"
        )))
        .union(
            UnionType::All,
            rollups("run_rollups_daily", ids, (day_first, day_last))
                .and_where(Expr::cust(&summed))
                .to_owned(),
        );
        let rows: Vec<RollupRow> = self.db.fetch_all(&stmt).await?;
        let Some(sealed_until) = rows.first().map(|row| row.sealed_until) else {
            return Ok(None);
        };
        let mut cells = Cells::new();
        for row in &rows {
            row.row.add_to(&mut cells)?;
        }
        // Everything of the window outside [first, sealed): the leading partial hour,
        // and from the watermark (or the trailing partial hour) to the end; two ranges
        // of `runs_by_project`, whatever the planner knows of the table (as one
        // condition with OR, an unanalyzed table was read through another index).
        let sealed = last.min(sealed_until);
        let range = |from: i64, until: i64| {
            raw_runs()
                .cond_where(Runs::in_project(project))
                .and_where(Expr::col(Runs::CreateTime).gte(from))
                .and_where(Expr::col(Runs::CreateTime).lt(until))
                .to_owned()
        };
        let rest = range(start, first)
            .union(UnionType::All, range(sealed, end))
            .to_owned();
        let scanned: Vec<RawRun> = self.db.fetch_all(&rest).await?;
        fold_into(&mut cells, &scanned);
        Ok(Some(cells))
    }
}
