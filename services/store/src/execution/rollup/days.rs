//! The daily level of the rollups: the roller sums each day whose hours are all sealed
//! from its hourly rows into `run_rollups_daily` (same columns, `bucket` the day's first
//! micro), in the transaction that advances the project's `daily_until` past it, so
//! GetRunStats reads one row per day and (agent, status) instead of 24. A day holds the
//! exact sums of its hours and the merge of their histograms, which is the histogram of
//! the day's runs (a key's count is a count of runs), so a day gives the same answer as
//! its hours.

use std::collections::BTreeMap;

use agentry_core::Result;
use sea_query::{Alias, Expr, Query};

use super::{Cells, DAY, Rolled, col, floor_day, insert_rollups, of_project};
use crate::db::Tx;

/// The most days one roll sums (a roll reads their hourly rows).
const ROLL_DAYS: i64 = 31;

/// Sums the project's days from `from` (day-aligned) up to `until` (at most
/// [`ROLL_DAYS`] of them, skipping days with no hourly row) into `run_rollups_daily`.
/// Returns the day it stopped at, the new `daily_until`.
pub(super) async fn roll(
    tx: &mut Tx,
    workspace: &str,
    project: &str,
    from: i64,
    until: i64,
) -> Result<i64> {
    if until <= from {
        return Ok(from);
    }
    let hours = |from: i64, until: i64| {
        Query::select()
            .from(Alias::new("run_rollups"))
            .cond_where(of_project(workspace, project))
            .and_where(Expr::col(col("bucket")).gte(from))
            .and_where(Expr::col(col("bucket")).lt(until))
            .to_owned()
    };
    let first: Option<(Option<i64>,)> = tx
        .fetch_optional(
            &hours(from, until)
                .expr(Expr::col(col("bucket")).min())
                .to_owned(),
        )
        .await?;
    let Some(first) = first.and_then(|(t,)| t) else {
        return Ok(until);
    };
    let from = floor_day(first);
    let until = until.min(from + ROLL_DAYS * DAY);
    let mut stmt = hours(from, until);
    for name in super::COLUMNS.iter().skip(2) {
        stmt.column(col(name));
    }
    let rows: Vec<Rolled> = tx.fetch_all(&stmt).await?;
    let mut days: BTreeMap<i64, Cells> = BTreeMap::new();
    for row in &rows {
        row.add_to(days.entry(floor_day(row.bucket)).or_default())?;
    }
    insert_rollups(tx, "run_rollups_daily", workspace, project, &days).await?;
    Ok(until)
}
