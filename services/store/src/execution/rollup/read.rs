//! GetRunStats from the rollups: the sealed hours fully inside the window, read from
//! `run_rollups` in one statement together with the watermark, plus an exact scan of
//! the rest of the window (the partial hours at its edges and everything from the
//! watermark on, finished or not). Counts and sums are exactly those of a scan of the
//! whole window; percentiles come from the merged histograms, within 1 %.

use agentry_core::{Result, names::ProjectName, time::UnixMicros};
use sea_query::{Alias, Condition, Expr, JoinType, Query};

use super::super::stats::CountRow;
use super::{Cell, Cells, HOUR, RawRun, col, floor_hour, fold_into, raw_runs};
use crate::{
    Store,
    rows::{InProject, ProjectKeyed},
    tables::Runs,
};

#[derive(sqlx::FromRow)]
struct RollupRow {
    #[sqlx(flatten)]
    counts: CountRow,
    queue_wait: String,
    run_time: String,
    sealed_until: i64,
}

impl RollupRow {
    /// Adds this row's figures to `cell`.
    fn add_to(&self, cell: &mut Cell) -> Result<()> {
        cell.counts.add(&self.counts);
        cell.queue_wait
            .merge_encoded(&self.queue_wait)
            .and_then(|()| cell.run_time.merge_encoded(&self.run_time))
            .ok_or_else(|| agentry_core::Error::internal("undecodable run rollup histogram"))
    }
}

impl Store {
    /// The window's figures by (agent, status) from the sealed hours inside it and an
    /// exact scan of the rest; `None` when no sealed hour with runs lies inside it (the
    /// caller then scans the whole window, exactly).
    pub(crate) async fn rolled_cells(
        &self,
        project: &ProjectName,
        start: UnixMicros,
        end: UnixMicros,
    ) -> Result<Option<Cells>> {
        let first = floor_hour(start) + if start.rem_euclid(HOUR) == 0 { 0 } else { HOUR };
        let last = floor_hour(end);
        if first >= last {
            return Ok(None);
        }
        let (workspace, project_id) = project.ids();
        let r = Alias::new("r");
        let m = Alias::new("m");
        let mut stmt = Query::select();
        for name in super::COLUMNS.iter().skip(3) {
            stmt.column((r.clone(), col(name)));
        }
        stmt.column((m.clone(), col("sealed_until")))
            .from_as(Alias::new("run_rollups"), r.clone())
            .join_as(
                JoinType::InnerJoin,
                super::marks(),
                m.clone(),
                Expr::cust("m.workspace_id = r.workspace_id AND m.project_id = r.project_id"),
            )
            .and_where(Expr::col((r.clone(), col("workspace_id"))).eq(workspace))
            .and_where(Expr::col((r.clone(), col("project_id"))).eq(project_id))
            .and_where(Expr::col((r.clone(), col("bucket"))).gte(first))
            .and_where(Expr::col((r.clone(), col("bucket"))).lt(last))
            .and_where(Expr::cust("r.bucket < m.sealed_until"));
        let rows: Vec<RollupRow> = self.db.fetch_all(&stmt).await?;
        let Some(sealed_until) = rows.first().map(|row| row.sealed_until) else {
            return Ok(None);
        };
        let mut cells = Cells::new();
        for row in &rows {
            let key = (row.counts.agent_id.clone(), row.counts.status.clone());
            row.add_to(
                cells
                    .entry(key)
                    .or_insert_with(|| Cell::of(&row.counts.agent_id, &row.counts.status)),
            )?;
        }
        // Everything of the window outside [first, sealed): the leading partial hour,
        // and from the watermark (or the trailing partial hour) to the end.
        let sealed = last.min(sealed_until);
        let rest = raw_runs()
            .cond_where(Runs::in_project(project))
            .cond_where(
                Condition::any()
                    .add(
                        Condition::all()
                            .add(Expr::col(Runs::CreateTime).gte(start))
                            .add(Expr::col(Runs::CreateTime).lt(first)),
                    )
                    .add(
                        Condition::all()
                            .add(Expr::col(Runs::CreateTime).gte(sealed))
                            .add(Expr::col(Runs::CreateTime).lt(end)),
                    ),
            )
            .to_owned();
        let scanned: Vec<RawRun> = self.db.fetch_all(&rest).await?;
        fold_into(&mut cells, &scanned);
        Ok(Some(cells))
    }
}
