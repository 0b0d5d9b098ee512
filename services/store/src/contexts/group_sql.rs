//! The statements of a group commit (`group.rs`): each one serves every write of the
//! batch at once, with the writes' values bound as arrays and unnested.

use agentry_core::{
    Error, Result, absent::or_empty, model::ContextVersion, names::ContextName, port::Mutation,
    record::to_record,
};
use sqlx::{FromRow as _, postgres::PgRow};

use super::write::{Locked, locked_head};
use crate::{
    db::{Tx, map_err},
    mutation::StoredResult,
};

/// Stored results of the batch's request ids, by the ordinal of their pair in `$1`/`$2`.
const REPLAYS: &str = "SELECT k.i, s.method, s.request_hash, s.response \
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k (scope, rid, i) \
JOIN idempotency_keys s ON s.workspace_id = k.scope AND s.request_id = k.rid";

/// `write::LOCK` for many contexts: locks their rows in key order (so batches and single
/// writers, which lock one row, never wait for each other in a cycle) and reads, per
/// context by the ordinal of its key, what the write decides on.
const LOCK_ALL: &str = concat!(
    "SELECT k.i, c.workspace_id, c.project_id, c.context_id, c.owner, \
c.description, c.keep_last, c.head_version, c.floor_version, c.labels, c.create_time, \
c.update_time, (SELECT w.quotas FROM workspaces w WHERE w.workspace_id = c.workspace_id) AS quotas, ",
    locked_head!("k.patch"),
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[]) WITH ORDINALITY AS k (kw, kp, kc, patch, i) \
JOIN contexts c ON c.workspace_id = k.kw AND c.project_id = k.kp AND c.context_id = k.kc \
ORDER BY c.workspace_id, c.project_id, c.context_id FOR UPDATE OF c"
);

/// `write::APPEND` for many contexts, with the audit records and the stored results of
/// the batch (of its no-op writes too): documents, versions, heads, audit records,
/// idempotency records, one statement.
const STORE: &str = "WITH new AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], \
$4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::bigint[], $10::text[], \
$11::text[], $12::text[], $13::bigint[], $14::bigint[]) AS n (w, p, c, version, sha256, data, \
size_bytes, op, rollback_of, author, description, request_id, floor_version, create_time)), \
blob AS (INSERT INTO context_blobs (workspace_id, project_id, context_id, sha256, data, \
size_bytes, refs, create_time) SELECT w, p, c, sha256, data, size_bytes, 1, create_time FROM new \
ON CONFLICT (workspace_id, project_id, context_id, sha256) \
DO UPDATE SET refs = context_blobs.refs + 1), \
version AS (INSERT INTO context_versions (workspace_id, project_id, context_id, version, op, \
rollback_of, sha256, size_bytes, author, description, request_id, create_time) \
SELECT w, p, c, version, op, rollback_of, sha256, size_bytes, author, description, request_id, \
create_time FROM new), \
head AS (UPDATE contexts t SET head_version = n.version, head_sha256 = n.sha256, \
floor_version = n.floor_version, \
update_time = n.create_time FROM new n \
WHERE t.workspace_id = n.w AND t.project_id = n.p AND t.context_id = n.c), \
audit AS (INSERT INTO audit_log (workspace_id, audit_id, create_time, principal, method, \
resource, request_id, outcome) SELECT a.*, 'OK' FROM unnest($15::text[], $16::text[], \
$17::bigint[], $18::text[], $19::text[], $20::text[], $21::text[]) AS a) \
INSERT INTO idempotency_keys (workspace_id, request_id, method, request_hash, response, \
create_time) SELECT * FROM unnest($22::text[], $23::text[], $24::text[], $25::bytea[], \
$26::text[], $27::bigint[])";

/// `write::COMPACT` for many contexts, each with its floor (already stored).
const COMPACT_ALL: &str = "WITH k AS (SELECT * FROM unnest($1::text[], $2::text[], \
$3::text[], $4::bigint[]) AS k (w, p, c, floor_version)), \
gone AS (DELETE FROM context_versions v USING k WHERE v.workspace_id = k.w \
AND v.project_id = k.p AND v.context_id = k.c AND v.version < k.floor_version \
RETURNING v.workspace_id, v.project_id, v.context_id, v.sha256), \
released AS (SELECT b.workspace_id, b.project_id, b.context_id, b.sha256, \
b.refs - count(*) AS refs FROM gone g JOIN context_blobs b \
ON b.workspace_id = g.workspace_id AND b.project_id = g.project_id \
AND b.context_id = g.context_id AND b.sha256 = g.sha256 \
GROUP BY b.workspace_id, b.project_id, b.context_id, b.sha256, b.refs), \
kept AS (UPDATE context_blobs b SET refs = r.refs FROM released r \
WHERE b.workspace_id = r.workspace_id AND b.project_id = r.project_id \
AND b.context_id = r.context_id AND b.sha256 = r.sha256 AND r.refs > 0) \
DELETE FROM context_blobs b USING released r \
WHERE b.workspace_id = r.workspace_id AND b.project_id = r.project_id \
AND b.context_id = r.context_id AND b.sha256 = r.sha256 AND r.refs <= 0";

async fn fetch_all(tx: &mut Tx, sql: &str, query: PgQuery<'_>) -> Result<Vec<PgRow>> {
    let (conn, _span) = tx
        .postgres(sql)
        .ok_or_else(|| Error::internal("a Postgres statement on another database"))?;
    query.fetch_all(conn).await.map_err(map_err)
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The stored results of `keys` (scope, request id), by index into `keys`.
pub(super) async fn replays(
    tx: &mut Tx,
    keys: &[(String, String)],
) -> Result<Vec<(usize, StoredResult)>> {
    let (scopes, ids): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(s, r)| (s.as_str(), r.as_str())).unzip();
    let query = sqlx::query(REPLAYS).bind(scopes).bind(ids);
    let mut found = Vec::new();
    for row in fetch_all(tx, REPLAYS, query).await? {
        let (i,): (i64,) = sqlx::FromRow::from_row(&row).map_err(map_err)?;
        found.push((ordinal(i)?, StoredResult::from_row(&row).map_err(map_err)?));
    }
    Ok(found)
}

/// Locks `contexts` (with whether each write patches), in key order; what each holds,
/// by index into `contexts` (`None`: no such context).
pub(super) async fn lock_all(
    tx: &mut Tx,
    contexts: &[(&ContextName, bool)],
) -> Result<Vec<Option<Locked>>> {
    let patches: Vec<bool> = contexts.iter().map(|(_, patch)| *patch).collect();
    let query = keyed_all(LOCK_ALL, contexts.iter().map(|(name, _)| *name)).bind(patches);
    let mut locked: Vec<Option<Locked>> = contexts.iter().map(|_| None).collect();
    for row in fetch_all(tx, LOCK_ALL, query).await? {
        let (i,): (i64,) = sqlx::FromRow::from_row(&row).map_err(map_err)?;
        let slot = locked
            .get_mut(ordinal(i)?)
            .ok_or_else(|| Error::internal("a lock row out of range"))?;
        *slot = Some(Locked::from_row(&row).map_err(map_err)?);
    }
    Ok(locked)
}

/// `sql` with the contexts' keys bound as arrays `$1`, `$2`, `$3`.
fn keyed_all<'q>(sql: &'q str, names: impl Iterator<Item = &'q ContextName>) -> PgQuery<'q> {
    let mut keys: [Vec<&str>; 3] = Default::default();
    for name in names {
        keys[0].push(&name.workspace);
        keys[1].push(&name.project);
        keys[2].push(&name.context);
    }
    let [workspaces, projects, ids] = keys;
    sqlx::query(sql).bind(workspaces).bind(projects).bind(ids)
}

fn ordinal(i: i64) -> Result<usize> {
    usize::try_from(i - 1).map_err(|_| Error::internal("a row ordinal out of range"))
}

/// What a batch stores, column by column: new versions (with their documents and
/// floors), audit records and stored results.
#[derive(Default)]
pub(super) struct Rows {
    versions: [Vec<String>; 9],
    numbers: [Vec<i64>; 5],
    audits: [Vec<String>; 6],
    audit_times: Vec<i64>,
    keys: [Vec<String>; 4],
    hashes: Vec<Vec<u8>>,
    key_times: Vec<i64>,
    /// Contexts due for compaction, with their floors.
    pub(super) due: Vec<(ContextName, i64)>,
}

impl Rows {
    /// A new version of `name` holding `canonical`, with the floor it sets.
    pub(super) fn version(
        &mut self,
        name: &ContextName,
        version: &ContextVersion,
        canonical: String,
        floor: i64,
    ) {
        let texts = [
            name.workspace.clone(),
            name.project.clone(),
            name.context.clone(),
            version.sha256.clone(),
            canonical,
            version.op.as_str().to_owned(),
            version.author.clone(),
            version.description.clone(),
            or_empty(&version.request_id).to_owned(),
        ];
        for (column, value) in self.versions.iter_mut().zip(texts) {
            column.push(value);
        }
        let numbers = [
            version.version,
            version.size_bytes,
            version.rollback_of,
            floor,
            version.create_time,
        ];
        for (column, value) in self.numbers.iter_mut().zip(numbers) {
            column.push(value);
        }
    }

    /// `m`'s audit record (when it gets one) and stored result (when it has a request
    /// id), answering with `outcome`.
    pub(super) fn answered<T: serde::Serialize>(&mut self, m: &Mutation, outcome: &T, now: i64) {
        self.audit(m, now);
        if let Some(request_id) = &m.request_id {
            let texts = [
                or_empty(&m.scope).to_owned(),
                request_id.clone(),
                m.method.to_owned(),
                to_record(outcome),
            ];
            for (column, value) in self.keys.iter_mut().zip(texts) {
                column.push(value);
            }
            self.hashes.push(m.request_hash.clone());
            self.key_times.push(now);
        }
    }

    /// `m`'s audit record, when it gets one.
    pub(super) fn audit(&mut self, m: &Mutation, now: i64) {
        if m.audit {
            let texts = [
                m.workspace.clone(),
                uuid::Uuid::now_v7().to_string(),
                m.principal.clone(),
                m.method.to_owned(),
                m.resource.clone(),
                or_empty(&m.request_id).to_owned(),
            ];
            for (column, value) in self.audits.iter_mut().zip(texts) {
                column.push(value);
            }
            self.audit_times.push(now);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.versions[0].is_empty() && self.audit_times.is_empty() && self.key_times.is_empty()
    }

    /// Stores every row in one statement.
    pub(super) async fn store(self, tx: &mut Tx) -> Result<()> {
        let [w, p, c, sha256, data, op, author, description, request_id] = self.versions;
        let [version, size, rollback_of, floor, create_time] = self.numbers;
        let [
            a_workspace,
            a_id,
            a_principal,
            a_method,
            a_resource,
            a_request,
        ] = self.audits;
        let [k_scope, k_request, k_method, k_response] = self.keys;
        let query = sqlx::query(STORE)
            .bind(w)
            .bind(p)
            .bind(c)
            .bind(version)
            .bind(sha256)
            .bind(data)
            .bind(size)
            .bind(op)
            .bind(rollback_of)
            .bind(author)
            .bind(description)
            .bind(request_id)
            .bind(floor)
            .bind(create_time)
            .bind(a_workspace)
            .bind(a_id)
            .bind(self.audit_times)
            .bind(a_principal)
            .bind(a_method)
            .bind(a_resource)
            .bind(a_request)
            .bind(k_scope)
            .bind(k_request)
            .bind(k_method)
            .bind(self.hashes)
            .bind(k_response)
            .bind(self.key_times);
        fetch_all(tx, STORE, query).await?;
        Ok(())
    }
}

/// Compacts the contexts `due` below their floors, in one statement.
pub(super) async fn compact_all(tx: &mut Tx, due: &[(ContextName, i64)]) -> Result<()> {
    let floors: Vec<i64> = due.iter().map(|(_, floor)| *floor).collect();
    let query = keyed_all(COMPACT_ALL, due.iter().map(|(name, _)| name)).bind(floors);
    fetch_all(tx, COMPACT_ALL, query).await?;
    Ok(())
}
