//! The version log of a context: its rows, and appending to it (noop detection, blob
//! upsert, compaction) one statement at a time.

use std::collections::BTreeMap;

use agentry_core::{
    Error, FieldViolation, Reason, Result,
    absent::{non_empty, or_empty},
    document,
    model::{Context, ContextOp, ContextVersion},
    names::ContextName,
    time::{UnixMicros, now_micros},
};
use sea_query::{Expr, OnConflict, Query, SelectStatement};
use serde_json::Value;

use super::{
    compaction::{compact, compaction_due},
    where_context,
};
use crate::{
    db::Tx,
    rows::{columns, decode, insert_row, json, values},
    tables::{ContextBlobs, ContextVersions, Contexts},
};

pub(crate) struct Append {
    pub(crate) data: Value,
    pub(crate) op: ContextOp,
    pub(crate) rollback_of: i64,
    pub(crate) author: String,
    pub(crate) description: String,
    pub(crate) request_id: Option<String>,
    pub(crate) max_bytes: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct VersionRow {
    pub(super) version: i64,
    op: String,
    rollback_of: i64,
    sha256: String,
    size_bytes: i64,
    author: String,
    description: String,
    request_id: String,
    create_time: i64,
    #[sqlx(default)]
    data: Option<String>,
}

decode!(VersionRow => ContextVersion, |row| Ok(Self {
    op: ContextOp::parse(&row.op)
        .ok_or_else(|| Error::internal(format!("unknown context op {:?}", row.op)))?,
    version: row.version,
    rollback_of: row.rollback_of,
    sha256: row.sha256,
    size_bytes: row.size_bytes,
    author: row.author,
    description: row.description,
    request_id: non_empty(row.request_id),
    create_time: row.create_time,
    data: row.data.as_deref().map(|d| json("data", d)).transpose()?,
}));

pub(crate) fn where_versions<T: sea_query::ConditionalStatement>(stmt: &mut T, name: &ContextName) {
    stmt.and_where(
        Expr::col((ContextVersions::Table, ContextVersions::WorkspaceId))
            .eq(name.workspace.as_str()),
    )
    .and_where(
        Expr::col((ContextVersions::Table, ContextVersions::ProjectId)).eq(name.project.as_str()),
    )
    .and_where(
        Expr::col((ContextVersions::Table, ContextVersions::ContextId)).eq(name.context.as_str()),
    );
}

/// Version headers, and the document too when `full`.
pub(super) fn select_versions(name: &ContextName, full: bool) -> SelectStatement {
    let mut stmt = Query::select();
    stmt.columns([
        (ContextVersions::Table, ContextVersions::Version),
        (ContextVersions::Table, ContextVersions::Op),
        (ContextVersions::Table, ContextVersions::RollbackOf),
        (ContextVersions::Table, ContextVersions::Sha256),
        (ContextVersions::Table, ContextVersions::SizeBytes),
        (ContextVersions::Table, ContextVersions::Author),
        (ContextVersions::Table, ContextVersions::Description),
        (ContextVersions::Table, ContextVersions::RequestId),
        (ContextVersions::Table, ContextVersions::CreateTime),
    ])
    .from(ContextVersions::Table);
    if full {
        stmt.column((ContextBlobs::Table, ContextBlobs::Data))
            .inner_join(
                ContextBlobs::Table,
                Expr::col((ContextBlobs::Table, ContextBlobs::WorkspaceId))
                    .equals((ContextVersions::Table, ContextVersions::WorkspaceId))
                    .and(
                        Expr::col((ContextBlobs::Table, ContextBlobs::ProjectId))
                            .equals((ContextVersions::Table, ContextVersions::ProjectId)),
                    )
                    .and(
                        Expr::col((ContextBlobs::Table, ContextBlobs::ContextId))
                            .equals((ContextVersions::Table, ContextVersions::ContextId)),
                    )
                    .and(
                        Expr::col((ContextBlobs::Table, ContextBlobs::Sha256))
                            .equals((ContextVersions::Table, ContextVersions::Sha256)),
                    ),
            );
    }
    where_versions(&mut stmt, name);
    stmt
}

pub(super) fn one_version(name: &ContextName, version: i64, full: bool) -> SelectStatement {
    select_versions(name, full)
        .and_where(Expr::col((ContextVersions::Table, ContextVersions::Version)).eq(version))
        .to_owned()
}

pub(super) fn empty(name: &ContextName) -> Error {
    Error::precondition("CONTEXT_EMPTY", format!("{name} has no versions yet"))
}

/// OUT_OF_RANGE `VERSION_COMPACTED`: `version` lies below the retention `floor`.
pub(super) fn compacted(name: &ContextName, version: i64, floor: i64) -> Error {
    below_floor(format!("version {version} of {name} was compacted"), floor)
}

/// OUT_OF_RANGE `VERSION_COMPACTED` for a watcher: versions after `after` were compacted.
pub(super) fn compacted_after(name: &ContextName, after: i64, floor: i64) -> Error {
    below_floor(
        format!("versions after {after} of {name} were compacted"),
        floor,
    )
}

fn below_floor(lost: String, floor: i64) -> Error {
    Error::with_metadata(
        Reason::VersionCompacted,
        format!("{lost}; the oldest retained version is {floor}"),
        [("first_version", floor.to_string())],
    )
}

/// A retained version inside a transaction, with its document.
pub(super) async fn version_in_tx(
    tx: &mut Tx,
    name: &ContextName,
    context: &Context,
    version: i64,
) -> Result<ContextVersion> {
    if version < context.floor_version && version >= 1 && version <= context.head_version {
        return Err(compacted(name, version, context.floor_version));
    }
    let row: Option<VersionRow> = tx.fetch_optional(&one_version(name, version, true)).await?;
    row.ok_or_else(|| Error::not_found(format!("{name}/versions/{version}")))?
        .try_into()
}

pub(super) fn version_conflict(name: &ContextName, expected: i64, head: i64) -> Error {
    Error::Aborted {
        reason: "VERSION_CONFLICT",
        message: format!("expected version {expected} but the head of {name} is {head}"),
        metadata: BTreeMap::from([("current_version".to_owned(), head.to_string())]),
    }
}

/// The head document; an empty object before the first version.
pub(super) async fn head_document(
    tx: &mut Tx,
    name: &ContextName,
    context: &Context,
) -> Result<Value> {
    Ok(match context.head_version {
        0 => Value::Object(Default::default()),
        head => version_in_tx(tx, name, context, head)
            .await?
            .data
            .unwrap_or(Value::Null),
    })
}

/// A document ready to store: validated against the quota, in canonical JSON, hashed.
pub(super) struct Prepared {
    pub(super) canonical: String,
    pub(super) size: i64,
    pub(super) sha256: String,
}

impl Prepared {
    pub(super) fn new(data: &Value, max_bytes: i64) -> Result<Self> {
        let prepared = Self::of(data)?;
        prepared.within(max_bytes)?;
        Ok(prepared)
    }

    /// `data` in canonical JSON, hashed; its size is checked against a quota by
    /// [`Prepared::within`].
    pub(super) fn of(data: &Value) -> Result<Self> {
        if !data.is_object() {
            return Err(Error::invalid(
                "data",
                "a context document must be a JSON object",
            ));
        }
        let canonical = document::canonical_json(data);
        let size = canonical.len() as i64;
        let sha256 = document::sha256_hex(&canonical);
        Ok(Self {
            canonical,
            size,
            sha256,
        })
    }

    /// Fails with `DOCUMENT_TOO_LARGE` beyond `max_bytes` (quota max_context_bytes).
    pub(super) fn within(&self, max_bytes: i64) -> Result<()> {
        let size = self.size;
        if size > max_bytes {
            return Err(Error::invalid_many(
                "DOCUMENT_TOO_LARGE",
                format!("the document is {size} bytes of canonical JSON; the limit is {max_bytes}"),
                vec![FieldViolation::new(
                    "data",
                    format!("at most {max_bytes} bytes (quota max_context_bytes)"),
                )],
            ));
        }
        Ok(())
    }
}

/// Appends one version holding `write.data`, or returns the head with `noop = true`
/// when the document equals it. Raises the floor beyond `keep_last`, compacting when
/// due. The caller wakes watchers once the transaction has committed.
pub(crate) async fn append(
    tx: &mut Tx,
    name: &ContextName,
    context: &mut Context,
    write: Append,
) -> Result<(ContextVersion, bool)> {
    let Prepared {
        canonical,
        size,
        sha256,
    } = Prepared::new(&write.data, write.max_bytes)?;
    if context.head_version > 0 {
        let row: Option<VersionRow> = tx
            .fetch_optional(&one_version(name, context.head_version, false))
            .await?;
        let head: ContextVersion = row
            .ok_or_else(|| Error::internal("head version row is missing"))?
            .try_into()?;
        if head.sha256 == sha256 {
            return Ok((head, true));
        }
    }
    let now = now_micros();
    store_blob(tx, name, &sha256, canonical, size, now).await?;
    let version = ContextVersion {
        version: context.head_version + 1,
        op: write.op,
        rollback_of: write.rollback_of,
        sha256,
        size_bytes: size,
        author: write.author,
        description: write.description,
        request_id: write.request_id,
        create_time: now,
        data: None,
    };
    insert_version(tx, name, &version).await?;
    context.head_version = version.version;
    context.update_time = now;
    let keep_last = i64::from(context.keep_last.max(1));
    let floor = (context.head_version - keep_last + 1).max(context.floor_version);
    let mut update = Query::update()
        .table(Contexts::Table)
        .values([
            (Contexts::HeadVersion, context.head_version.into()),
            (Contexts::HeadSha256, version.sha256.as_str().into()),
            (Contexts::FloorVersion, floor.into()),
            (Contexts::UpdateTime, now.into()),
        ])
        .to_owned();
    where_context(&mut update, name);
    tx.execute(&update).await?;
    if floor > context.floor_version {
        let due = compaction_due(context.floor_version, floor);
        context.floor_version = floor;
        if due {
            compact(tx, name, floor).await?;
        }
    }
    Ok((version, false))
}

/// Stores `name`'s document `sha256`, or counts one more of its versions using it.
async fn store_blob(
    tx: &mut Tx,
    name: &ContextName,
    sha256: &str,
    canonical: String,
    size: i64,
    now: UnixMicros,
) -> Result<()> {
    let blob = insert_row(
        ContextBlobs::Table,
        columns!(ContextBlobs [
            WorkspaceId, ProjectId, ContextId, Sha256, Data, SizeBytes, Refs, CreateTime
        ]),
        [
            name.workspace.clone().into(),
            name.project.clone().into(),
            name.context.clone().into(),
            sha256.into(),
            canonical.into(),
            size.into(),
            1i64.into(),
            now.into(),
        ],
    )
    .on_conflict(
        OnConflict::columns([
            ContextBlobs::WorkspaceId,
            ContextBlobs::ProjectId,
            ContextBlobs::ContextId,
            ContextBlobs::Sha256,
        ])
        .value(
            ContextBlobs::Refs,
            Expr::col((ContextBlobs::Table, ContextBlobs::Refs)).add(1),
        )
        .to_owned(),
    )
    .to_owned();
    tx.execute(&blob).await?;
    Ok(())
}

/// Inserts the row of a new version of `name`.
async fn insert_version(tx: &mut Tx, name: &ContextName, version: &ContextVersion) -> Result<()> {
    let insert = insert_row(
        ContextVersions::Table,
        columns!(ContextVersions [
            WorkspaceId, ProjectId, ContextId, Version, Op, RollbackOf, Sha256, SizeBytes, Author,
            Description, RequestId, CreateTime
        ]),
        values![
            name.workspace,
            name.project,
            name.context,
            version.version,
            version.op.as_str(),
            version.rollback_of,
            version.sha256,
            version.size_bytes,
            version.author,
            version.description,
            or_empty(&version.request_id),
            version.create_time,
        ],
    );
    tx.execute(&insert).await?;
    Ok(())
}
