//! Reading versions back: the target of a read, one version, lists and watch batches.

use agentry_core::{
    Error, Result,
    model::{ContextVersion, Page},
    names::ContextName,
    port::{ContextHead, ContextReads, ContextStore, VersionFilter, VersionsAfter},
    time::UnixMicros,
};
use async_trait::async_trait;
use sea_query::{Alias, Expr, Func, Order, Query};

use super::{
    compaction::retained,
    versions::{
        VersionRow, compacted, compacted_after, empty, one_version, select_versions, where_versions,
    },
    where_context,
};
use crate::{
    PageRequest, Store, paginate,
    rows::within,
    tables::{ContextBlobs, ContextVersions, Contexts},
};

#[async_trait]
impl ContextReads for Store {
    async fn context_read_target(
        &self,
        name: &ContextName,
        version: Option<i64>,
    ) -> Result<(ContextHead, i64)> {
        let head = match &self.heads {
            Some(batcher) => batcher
                .head(name)
                .await?
                .ok_or_else(|| Error::not_found(name.to_string()))?,
            None => {
                let context = self.get_context(name).await?;
                ContextHead {
                    create_time: context.create_time,
                    head_version: context.head_version,
                    floor_version: context.floor_version,
                }
            }
        };
        let target = match version {
            None if head.head_version == 0 => return Err(empty(name)),
            None => head.head_version,
            Some(v) if v > head.head_version => {
                return Err(Error::not_found(format!("{name}/versions/{v}")));
            }
            Some(v) if v < head.floor_version => {
                return Err(compacted(name, v, head.floor_version));
            }
            Some(v) => v,
        };
        Ok((head, target))
    }

    async fn context_version_of(
        &self,
        name: &ContextName,
        create_time: UnixMicros,
        version: i64,
    ) -> Result<Option<ContextVersion>> {
        let mut same_context = Query::select()
            .expr(Expr::val(1))
            .from(Contexts::Table)
            .and_where(Expr::col(Contexts::CreateTime).eq(create_time))
            .to_owned();
        where_context(&mut same_context, name);
        let stmt = one_version(name, version, true)
            .and_where(Expr::exists(same_context))
            .to_owned();
        self.db
            .fetch_optional::<VersionRow>(&stmt)
            .await?
            .map(ContextVersion::try_from)
            .transpose()
    }

    async fn read_context(&self, name: &ContextName, version: i64) -> Result<ContextVersion> {
        let mut stmt = select_versions(name, true)
            .and_where(Expr::col((ContextVersions::Table, ContextVersions::Version)).eq(version))
            .to_owned();
        retained(&mut stmt, name);
        if let Some(row) = self.db.fetch_optional::<VersionRow>(&stmt).await? {
            return row.try_into();
        }
        let context = self.get_context(name).await?;
        if version < context.floor_version && version <= context.head_version {
            return Err(compacted(name, version, context.floor_version));
        }
        Err(Error::not_found(format!("{name}/versions/{version}")))
    }

    async fn list_context_versions(
        &self,
        name: &ContextName,
        filter: &VersionFilter,
        page: &PageRequest,
    ) -> Result<Page<ContextVersion>> {
        self.get_context(name).await?;
        let mut stmt = select_versions(name, filter.full);
        retained(&mut stmt, name);
        let col = |c| Expr::col((ContextVersions::Table, c));
        if let Some(author) = &filter.author {
            stmt.and_where(col(ContextVersions::Author).eq(author.as_str()));
        }
        if let Some(op) = filter.op {
            stmt.and_where(col(ContextVersions::Op).eq(op.as_str()));
        }
        let created = (ContextVersions::Table, ContextVersions::CreateTime);
        within(&mut stmt, created, filter.created);
        if let Some(after) = &page.after {
            let after: i64 = after
                .parse()
                .map_err(|_| Error::internal("version cursor is not a number"))?;
            stmt.and_where(col(ContextVersions::Version).lt(after));
        }
        stmt.order_by(
            (ContextVersions::Table, ContextVersions::Version),
            Order::Desc,
        )
        .limit(page.size as u64 + 1);
        let rows: Vec<VersionRow> = self.db.fetch_all(&stmt).await?;
        let items = rows
            .into_iter()
            .map(ContextVersion::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, page.size, |v| v.version.to_string()))
    }

    async fn context_versions_after(
        &self,
        name: &ContextName,
        batch: VersionsAfter,
    ) -> Result<Vec<ContextVersion>> {
        let VersionsAfter { after, limit, full } = batch;
        let mut stmt = select_versions(name, full);
        retained(&mut stmt, name);
        stmt.and_where(Expr::col((ContextVersions::Table, ContextVersions::Version)).gt(after))
            .order_by(
                (ContextVersions::Table, ContextVersions::Version),
                Order::Asc,
            )
            .limit(limit);
        let rows: Vec<VersionRow> = self.db.fetch_all(&stmt).await?;
        // Versions are gapless, so a first row past `after + 1` means compaction removed
        // what the caller has not seen: say so rather than skip it. With no rows, the
        // context row tells (read after the versions, so a compaction racing the read
        // shows up in the floor).
        let floor = match rows.first() {
            Some(first) if Some(first.version) == after.checked_add(1) => {
                return rows.into_iter().map(ContextVersion::try_from).collect();
            }
            Some(first) => first.version,
            None => {
                let context = self.get_context(name).await?;
                if after.saturating_add(1) >= context.floor_version || after >= context.head_version
                {
                    return Ok(Vec::new());
                }
                context.floor_version
            }
        };
        Err(compacted_after(name, after, floor))
    }
}

impl Store {
    /// The numbers of the versions `name` stores, ascending: the retained ones and those
    /// below the floor that compaction has not deleted yet (for tests).
    pub async fn context_stored_versions(&self, name: &ContextName) -> Result<Vec<i64>> {
        #[derive(sqlx::FromRow)]
        struct Stored {
            version: i64,
        }
        let mut stmt = Query::select()
            .column(ContextVersions::Version)
            .from(ContextVersions::Table)
            .order_by(ContextVersions::Version, Order::Asc)
            .to_owned();
        where_versions(&mut stmt, name);
        let rows: Vec<Stored> = self.db.fetch_all(&stmt).await?;
        Ok(rows.into_iter().map(|r| r.version).collect())
    }

    /// The head hash the context row of `name` records, which writes read instead of
    /// the head version's row (for tests: it must equal that row's).
    pub async fn context_row_head_sha256(&self, name: &ContextName) -> Result<String> {
        let mut stmt = Query::select()
            .column(Contexts::HeadSha256)
            .from(Contexts::Table)
            .to_owned();
        super::where_context(&mut stmt, name);
        let row: Option<(String,)> = self.db.fetch_optional(&stmt).await?;
        row.map(|(sha256,)| sha256)
            .ok_or_else(|| agentry_core::Error::not_found(name.to_string()))
    }

    /// Stored blobs of a workspace (for storage accounting and tests).
    pub async fn context_blob_stats(&self, workspace: &str) -> Result<(i64, i64)> {
        #[derive(sqlx::FromRow)]
        struct Stats {
            blobs: i64,
            bytes: Option<i64>,
        }
        let stmt = Query::select()
            .expr_as(
                Func::count(Expr::col(ContextBlobs::Sha256)),
                Alias::new("blobs"),
            )
            .expr_as(
                Expr::cust("CAST(SUM(size_bytes) AS BIGINT)"),
                Alias::new("bytes"),
            )
            .from(ContextBlobs::Table)
            .and_where(Expr::col(ContextBlobs::WorkspaceId).eq(workspace))
            .to_owned();
        let stats: Option<Stats> = self.db.fetch_optional(&stmt).await?;
        Ok(stats
            .map(|s| (s.blobs, s.bytes.unwrap_or(0)))
            .unwrap_or((0, 0)))
    }
}
