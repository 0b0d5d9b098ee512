//! WriteContext and RollbackContext.
//!
//! On Postgres a write that appends a version is, besides BEGIN and COMMIT, two
//! statements, three when it compacts (once every `COMPACTION_BATCH` versions): one
//! locks the context row and reads what the write decides on (head, quota, the head's
//! hash, and for a patch the head document); one data-modifying CTE stores the
//! document, the version, the new head and the audit record; one deletes what fell
//! below the retention floor and releases its documents. Watchers on other replicas
//! are told after commit (`feed::Announcer`). On SQLite the same steps run as
//! separate statements (`versions::append`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use agentry_core::{
    Error, Result,
    absent::or_empty,
    document,
    model::{Context, ContextOp, ContextVersion, Quotas, WriteOutcome},
    names::ContextName,
    port::{ContextChange, ContextStore, ContextWrite, ContextWrites},
    time::now_micros,
};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::{FromRow as _, postgres::PgRow};

use super::{
    ContextRow,
    compaction::compaction_due,
    context_key,
    group_sql::Rows,
    lock_context,
    versions::{
        Append, Prepared, VersionRow, append, head_document, one_version, version_conflict,
        version_in_tx,
    },
};
use crate::{
    Store,
    db::{Backend, Tx, map_err},
    feed::Wakes,
    mutation::{Mutation, mutate},
    rows::json,
    workspaces::read_workspace,
};

/// Context writes in flight in this process, by context: a write that finds another
/// one of its context running checks its CAS before queueing for the row lock.
#[derive(Clone, Default)]
pub(crate) struct Writers(Arc<Mutex<HashMap<String, usize>>>);

/// One write in flight; leaves the count when dropped.
struct Writing {
    writers: Writers,
    key: String,
}

impl Writers {
    /// Counts a write of `name` in; whether another one was in flight.
    fn enter(&self, name: &ContextName) -> (Writing, bool) {
        let key = name.to_string();
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.clone()).or_default();
        *count += 1;
        let contended = *count > 1;
        let writing = Writing {
            writers: self.clone(),
            key,
        };
        (writing, contended)
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut counts = self.writers.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The head as the locking reads (`LOCK`, `group_sql::LOCK_ALL`) return it: the locked
/// row's head hash, followed by the head document when `$patch` (an SQL boolean), as
/// `sha256[ document]`; NULL without versions, or when the document is not visible.
macro_rules! locked_head {
    ($patch:literal) => {
        concat!(
            "CASE WHEN c.head_sha256 <> '' THEN c.head_sha256 || CASE WHEN ",
            $patch,
            " THEN ' ' || (SELECT b.data FROM context_blobs b \
WHERE b.workspace_id = c.workspace_id AND b.project_id = c.project_id \
AND b.context_id = c.context_id AND b.sha256 = c.head_sha256) ELSE '' END END AS head"
        )
    };
}
pub(super) use locked_head;

/// Locks the context row and reads the quotas and the head (with its document when
/// `$4`; see [`locked_head`]).
const LOCK: &str = concat!(
    "SELECT c.workspace_id, c.project_id, c.context_id, c.owner, c.description, \
c.keep_last, c.head_version, c.floor_version, c.labels, c.create_time, c.update_time, \
(SELECT w.quotas FROM workspaces w WHERE w.workspace_id = c.workspace_id) AS quotas, ",
    locked_head!("$4"),
    " FROM contexts c WHERE c.workspace_id = $1 AND c.project_id = $2 AND c.context_id = $3 \
FOR UPDATE OF c"
);

/// Stores the document (or counts one more use of it), the version and the new head,
/// and the audit record when `$18`.
const APPEND: &str = "WITH blob AS (\
INSERT INTO context_blobs (workspace_id, project_id, context_id, sha256, data, size_bytes, \
refs, create_time) VALUES ($1, $2, $3, $5, $6, $7, 1, $8) \
ON CONFLICT (workspace_id, project_id, context_id, sha256) \
DO UPDATE SET refs = context_blobs.refs + 1), \
version AS (INSERT INTO context_versions (workspace_id, project_id, context_id, version, op, \
rollback_of, sha256, size_bytes, author, description, request_id, create_time) \
VALUES ($1, $2, $3, $4, $9, $10, $5, $7, $11, $12, $13, $8)), \
head AS (UPDATE contexts SET head_version = $4, head_sha256 = $5, floor_version = $14, \
update_time = $8 \
WHERE workspace_id = $1 AND project_id = $2 AND context_id = $3) \
INSERT INTO audit_log (workspace_id, audit_id, create_time, principal, method, resource, \
request_id, outcome) SELECT $15, $16, $8, $11, $17, $19, $13, 'OK' WHERE $18";

/// Deletes the versions below the floor `$4` (already stored on the context row, which
/// is what lets the trigger allow it) and releases their documents. The blob rows need
/// no lock of their own: a context's blobs change only under its row lock, which the
/// writer holds (DeleteContext takes it too; a forced DeleteProject deletes the
/// contexts, so it waits for that lock before it can commit).
const COMPACT: &str = "WITH gone AS (\
DELETE FROM context_versions WHERE workspace_id = $1 AND project_id = $2 \
AND context_id = $3 AND version < $4 RETURNING sha256), \
released AS (SELECT b.sha256, b.refs - count(*) AS refs FROM gone g JOIN context_blobs b \
ON b.workspace_id = $1 AND b.project_id = $2 AND b.context_id = $3 AND b.sha256 = g.sha256 \
GROUP BY b.sha256, b.refs), \
kept AS (UPDATE context_blobs b SET refs = r.refs FROM released r \
WHERE b.workspace_id = $1 AND b.project_id = $2 AND b.context_id = $3 \
AND b.sha256 = r.sha256 AND r.refs > 0) \
DELETE FROM context_blobs b USING released r \
WHERE b.workspace_id = $1 AND b.project_id = $2 AND b.context_id = $3 \
AND b.sha256 = r.sha256 AND r.refs <= 0";

#[derive(sqlx::FromRow)]
pub(super) struct Locked {
    #[sqlx(flatten)]
    context: ContextRow,
    quotas: String,
    head: Option<String>,
}

/// The head version's hash, and its document when asked for, as the lock read them.
struct Head {
    sha256: String,
    document: Option<Value>,
}

/// The head as `LOCK` read it. Its hash comes from the locked row (a statement that
/// waited for the lock sees the row as its holder left it); its document from
/// `context_blobs` under the statement's own older snapshot, which may not hold the
/// blob the lock holder wrote: then `None`, and the caller reads the head again.
fn head_of(head: Option<&str>, with_document: bool) -> Result<Option<Head>> {
    let Some(head) = head else {
        return Ok(None);
    };
    let (sha256, document) = match head.split_once(' ') {
        Some((sha256, document)) => (sha256, Some(document)),
        None => (head, None),
    };
    let document = match (with_document, document) {
        (true, Some(text)) => Some(json("data", text)?),
        (true, None) => return Ok(None),
        (false, _) => None,
    };
    Ok(Some(Head {
        sha256: sha256.to_owned(),
        document,
    }))
}

/// The document a change makes of the head (`head`: the head document, when known).
async fn changed_document(
    tx: &mut Tx,
    name: &ContextName,
    context: &Context,
    change: &ContextChange,
    head: Option<Value>,
) -> Result<(Value, ContextOp, i64)> {
    let head = match (head, change) {
        (Some(doc), _) => doc,
        (None, ContextChange::MergePatch(_) | ContextChange::JsonPatch(_)) => {
            head_document(tx, name, context).await?
        }
        (None, _) => Value::Null,
    };
    Ok(match change {
        ContextChange::Replace(data) => (data.clone(), ContextOp::Replace, 0),
        ContextChange::MergePatch(patch) => {
            let mut doc = head;
            agentry_core::json::merge_patch(&mut doc, patch);
            (doc, ContextOp::MergePatch, 0)
        }
        ContextChange::JsonPatch(ops) => {
            (document::apply_patch(&head, ops)?, ContextOp::JsonPatch, 0)
        }
        ContextChange::Rollback(target) => {
            let target_version = version_in_tx(tx, name, context, *target).await?;
            (
                target_version.data.unwrap_or(Value::Null),
                ContextOp::Rollback,
                *target,
            )
        }
    })
}

fn check_expected(name: &ContextName, write: &ContextWrite, context: &Context) -> Result<()> {
    match write.expected_version {
        Some(expected) if expected != context.head_version => {
            Err(version_conflict(name, expected, context.head_version))
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl ContextWrites for Store {
    async fn write_context(
        &self,
        m: &Mutation,
        name: &ContextName,
        write: ContextWrite,
    ) -> Result<WriteOutcome> {
        let (_writing, contended) = self.writers.enter(name);
        // A stale CAS fails here without queueing for the row lock: under contention most
        // attempts are stale, and waiting for the lock only to fail slows every writer.
        // Calls with a request_id take the locked path, which can replay a stored result.
        if let Some(expected) = write.expected_version
            && contended
            && m.request_id.is_none()
        {
            let current = self.get_context(name).await?;
            if current.head_version != expected {
                return Err(version_conflict(name, expected, current.head_version));
            }
        }
        if self.group.is_some() {
            return self.write_grouped(m, name, write).await;
        }
        self.write_single(m, name, &write).await
    }
}

impl Store {
    /// One write in a transaction of its own; wakes the context's watchers once it has
    /// committed a new version.
    pub(super) async fn write_single(
        &self,
        m: &Mutation,
        name: &ContextName,
        write: &ContextWrite,
    ) -> Result<WriteOutcome> {
        let outcome = if self.backend() == Backend::Postgres {
            // The audit record is written with the version, in the same statement.
            let unaudited = Mutation {
                audit: false,
                ..m.clone()
            };
            mutate!(self, &unaudited, |tx| write_postgres(tx, m, name, write))?
        } else {
            mutate!(self, m, |tx| write_generic(tx, m, name, write))?
        };
        if !outcome.noop {
            self.wake_everywhere(&Wakes::of(context_key(name)));
        }
        Ok(outcome)
    }
}

async fn write_generic(
    tx: &mut Tx,
    m: &Mutation,
    name: &ContextName,
    write: &ContextWrite,
) -> Result<WriteOutcome> {
    let mut context = lock_context(tx, name).await?;
    check_expected(name, write, &context)?;
    let (data, op, rollback_of) = changed_document(tx, name, &context, &write.change, None).await?;
    let workspace = read_workspace(tx, &name.workspace).await?;
    let record = Append {
        data,
        op,
        rollback_of,
        author: m.principal.clone(),
        description: write.description.clone(),
        request_id: m.request_id.clone(),
        max_bytes: workspace.quotas.max_context_bytes,
    };
    let (version, noop) = append(tx, name, &mut context, record).await?;
    Ok(WriteOutcome { version, noop })
}

/// What a write does to its context, decided under the context's row lock.
pub(super) enum Plan {
    /// The document equals the head: nothing is appended.
    Noop(ContextVersion),
    /// A new version: its row, its document in canonical JSON, the new floor, and
    /// whether the floor's move makes compaction due.
    Append {
        version: ContextVersion,
        canonical: String,
        floor: i64,
        compact: bool,
    },
}

/// Whether the write needs the head document (a patch applies to it).
pub(super) fn is_patch(write: &ContextWrite) -> bool {
    matches!(
        write.change,
        ContextChange::MergePatch(_) | ContextChange::JsonPatch(_)
    )
}

async fn write_postgres(
    tx: &mut Tx,
    m: &Mutation,
    name: &ContextName,
    write: &ContextWrite,
) -> Result<WriteOutcome> {
    let query = keyed(LOCK, name).bind(is_patch(write));
    let locked = match statement(tx, LOCK, query).await? {
        Some(row) => Some(Locked::from_row(&row).map_err(map_err)?),
        None => None,
    };
    match plan(tx, m, name, write, locked).await? {
        Plan::Noop(version) => {
            // Nothing to append: the audit record goes alone.
            let mut rows = Rows::default();
            rows.audit(m, now_micros());
            rows.store(tx).await?;
            Ok(WriteOutcome {
                version,
                noop: true,
            })
        }
        Plan::Append {
            version,
            canonical,
            floor,
            compact: due,
        } => {
            store_version(tx, m, name, &version, canonical, floor).await?;
            if due {
                compact(tx, name, floor).await?;
            }
            Ok(WriteOutcome {
                version,
                noop: false,
            })
        }
    }
}

/// Decides a write on its context as `LOCK` (or the batch's lock) read it (`None`: no
/// such context). Reads more only when the lock's snapshot cannot tell: the head after a
/// wait for the lock, a rollback's target.
pub(super) async fn plan(
    tx: &mut Tx,
    m: &Mutation,
    name: &ContextName,
    write: &ContextWrite,
    locked: Option<Locked>,
) -> Result<Plan> {
    let locked = locked.ok_or_else(|| Error::not_found(name.to_string()))?;
    let context: Context = locked.context.try_into()?;
    check_expected(name, write, &context)?;
    let head = head_of(locked.head.as_deref(), is_patch(write))?;
    let (head_sha256, head_document) = match head {
        Some(head) => (Some(head.sha256), head.document),
        None => (None, None),
    };
    let (data, op, rollback_of) =
        changed_document(tx, name, &context, &write.change, head_document).await?;
    let quotas: Quotas = json("quotas", &locked.quotas)?;
    let prepared = Prepared::new(&data, quotas.max_context_bytes)?;
    if context.head_version > 0 {
        let head_sha256 = match head_sha256 {
            Some(sha256) => sha256,
            None => head_version(tx, name, &context).await?.sha256,
        };
        if head_sha256 == prepared.sha256 {
            return Ok(Plan::Noop(head_version(tx, name, &context).await?));
        }
    }
    let version = ContextVersion {
        version: context.head_version + 1,
        op,
        rollback_of,
        sha256: prepared.sha256.clone(),
        size_bytes: prepared.size,
        author: m.principal.clone(),
        description: write.description.clone(),
        request_id: m.request_id.clone(),
        create_time: now_micros(),
        data: None,
    };
    let keep_last = i64::from(context.keep_last.max(1));
    let floor = (version.version - keep_last + 1).max(context.floor_version);
    Ok(Plan::Append {
        version,
        canonical: prepared.canonical,
        compact: compaction_due(context.floor_version, floor),
        floor,
    })
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// `sql` with the context's key bound as `$1`, `$2`, `$3`.
fn keyed<'q>(sql: &'q str, name: &'q ContextName) -> PgQuery<'q> {
    sqlx::query(sql)
        .bind(name.workspace.as_str())
        .bind(name.project.as_str())
        .bind(name.context.as_str())
}

/// Runs `query` (whose text is `sql`) in the transaction; its row, if it returns one.
async fn statement(tx: &mut Tx, sql: &str, query: PgQuery<'_>) -> Result<Option<PgRow>> {
    let (conn, _span) = tx
        .postgres(sql)
        .ok_or_else(|| Error::internal("a Postgres statement on another database"))?;
    query.fetch_optional(conn).await.map_err(map_err)
}

async fn head_version(
    tx: &mut Tx,
    name: &ContextName,
    context: &Context,
) -> Result<ContextVersion> {
    let row: Option<VersionRow> = tx
        .fetch_optional(&one_version(name, context.head_version, false))
        .await?;
    row.ok_or_else(|| Error::internal("head version row is missing"))?
        .try_into()
}

async fn store_version(
    tx: &mut Tx,
    m: &Mutation,
    name: &ContextName,
    version: &ContextVersion,
    canonical: String,
    floor: i64,
) -> Result<()> {
    let query = keyed(APPEND, name)
        .bind(version.version)
        .bind(version.sha256.as_str())
        .bind(canonical)
        .bind(version.size_bytes)
        .bind(version.create_time)
        .bind(version.op.as_str())
        .bind(version.rollback_of)
        .bind(version.author.as_str())
        .bind(version.description.as_str())
        .bind(or_empty(&version.request_id))
        .bind(floor)
        .bind(m.workspace.as_str())
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(m.method)
        .bind(m.audit)
        .bind(m.resource.as_str());
    statement(tx, APPEND, query).await?;
    Ok(())
}

async fn compact(tx: &mut Tx, name: &ContextName, floor: i64) -> Result<()> {
    statement(tx, COMPACT, keyed(COMPACT, name).bind(floor)).await?;
    Ok(())
}
