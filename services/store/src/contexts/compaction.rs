//! Retention compaction. Every write that moves a context's retention floor records it
//! on the context row, which is what reads go by ([`retained`]); the rows below it are
//! deleted in batches, once the floor crosses a multiple of [`COMPACTION_BATCH`], so
//! that most writes delete nothing. A context therefore stores at most
//! `keep_last + COMPACTION_BATCH - 1` versions.

use agentry_core::{
    Result,
    names::{ContextName, ProjectName},
};
use sea_query::{Alias, Cond, Condition, Expr, Func, Query, SimpleExpr};

use super::{versions::where_versions, where_context};
use crate::{
    db::Tx,
    rows::ProjectKeyed,
    tables::{ContextBlobs, ContextVersions, Contexts},
};

/// Compaction deletes the versions below the floor once the floor crosses a multiple of
/// this many versions.
pub const COMPACTION_BATCH: i64 = 16;

/// Whether raising the floor from `old` to `new` deletes what lies below it now.
pub(super) fn compaction_due(old: i64, new: i64) -> bool {
    new.div_euclid(COMPACTION_BATCH) > old.div_euclid(COMPACTION_BATCH)
}

/// Only versions at or above `name`'s floor: the stored ones below it await the next
/// batch of compaction and are gone for every reader.
pub(super) fn retained<T: sea_query::ConditionalStatement>(stmt: &mut T, name: &ContextName) {
    let mut floor = Query::select()
        .column(Contexts::FloorVersion)
        .from(Contexts::Table)
        .to_owned();
    where_context(&mut floor, name);
    stmt.and_where(
        Expr::col((ContextVersions::Table, ContextVersions::Version)).gte(SimpleExpr::SubQuery(
            None,
            Box::new(floor.into_sub_query_statement()),
        )),
    );
}

/// Deletes the versions below `floor` (already recorded on the context row, which is
/// what lets the trigger allow it) and releases their blobs.
pub(super) async fn compact(tx: &mut Tx, name: &ContextName, floor: i64) -> Result<()> {
    let released = blobs_below(tx, name, floor).await?;
    let mut delete = Query::delete()
        .from_table(ContextVersions::Table)
        .and_where(Expr::col(ContextVersions::Version).lt(floor))
        .to_owned();
    where_versions(&mut delete, name);
    tx.execute(&delete).await?;
    release_blobs(tx, name, released).await
}

#[derive(sqlx::FromRow)]
struct BlobUse {
    sha256: String,
    n: i64,
}

/// How many versions of `name` below `below` use each blob.
async fn blobs_below(tx: &mut Tx, name: &ContextName, below: i64) -> Result<Vec<BlobUse>> {
    let mut stmt = Query::select()
        .column(ContextVersions::Sha256)
        .expr_as(
            Func::count(Expr::col(ContextVersions::Version)),
            Alias::new("n"),
        )
        .from(ContextVersions::Table)
        .and_where(Expr::col(ContextVersions::Version).lt(below))
        .group_by_col(ContextVersions::Sha256)
        .to_owned();
    where_versions(&mut stmt, name);
    tx.fetch_all(&stmt).await
}

/// Drops references of `name`'s versions to its blobs and deletes the blobs nothing
/// references any more.
async fn release_blobs(tx: &mut Tx, name: &ContextName, released: Vec<BlobUse>) -> Result<()> {
    for BlobUse { sha256, n } in released {
        let by_key = of_context(name).add(Expr::col(ContextBlobs::Sha256).eq(sha256.as_str()));
        tx.execute(
            &Query::update()
                .table(ContextBlobs::Table)
                .value(ContextBlobs::Refs, Expr::col(ContextBlobs::Refs).sub(n))
                .cond_where(by_key.clone())
                .to_owned(),
        )
        .await?;
        tx.execute(
            &Query::delete()
                .from_table(ContextBlobs::Table)
                .cond_where(by_key.add(Expr::col(ContextBlobs::Refs).lte(0)))
                .to_owned(),
        )
        .await?;
    }
    Ok(())
}

/// The blobs of one context.
fn of_context(name: &ContextName) -> Condition {
    Cond::all()
        .add(ContextBlobs::in_project(name))
        .add(Expr::col(ContextBlobs::ContextId).eq(name.context.as_str()))
}

/// Deletes every blob of a context that is being deleted (blobs belong to one context).
pub(crate) async fn delete_blobs(tx: &mut Tx, name: &ContextName) -> Result<()> {
    let delete = Query::delete()
        .from_table(ContextBlobs::Table)
        .cond_where(of_context(name))
        .to_owned();
    tx.execute(&delete).await.map(drop)
}

/// Deletes every blob of the contexts of a project that is being deleted.
pub(crate) async fn delete_project_blobs(tx: &mut Tx, project: &ProjectName) -> Result<()> {
    let delete = Query::delete()
        .from_table(ContextBlobs::Table)
        .cond_where(ContextBlobs::in_project(project))
        .to_owned();
    tx.execute(&delete).await.map(drop)
}
