//! The write protocol every mutating operation follows:
//!
//! 1. begin a transaction and look up the caller's `request_id`: a stored result is
//!    replayed (same method and request hash) or refused (`REQUEST_ID_REUSED`);
//! 2. perform the mutation;
//! 3. append the audit record and store the result under the `request_id`;
//! 4. commit — all of it or none of it.
//!
//! When two calls with one `request_id` race, the loser fails on a constraint; it then
//! finds the winner's stored result and replays it instead of failing.

pub(crate) use agentry_core::port::Mutation;
use agentry_core::{Error, Reason, Result, absent::or_empty, time::now_micros};
use sea_query::{Expr, Query};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    Store,
    db::Tx,
    record::{record, to_record},
    rows::{columns, insert_row, values},
    tables::{AuditLog, IdempotencyKeys},
};

columns!(
    /// The columns of a stored result, in the order inserts bind.
    STORED_COLUMNS: IdempotencyKeys [
        WorkspaceId, RequestId, Method, RequestHash, Response, CreateTime
    ]
);

pub(crate) enum Begun<T> {
    Replay(T),
    Fresh(Tx),
}

#[derive(sqlx::FromRow)]
pub(crate) struct StoredResult {
    method: String,
    request_hash: Vec<u8>,
    response: String,
}

fn lookup(m: &Mutation) -> sea_query::SelectStatement {
    Query::select()
        .columns([
            IdempotencyKeys::Method,
            IdempotencyKeys::RequestHash,
            IdempotencyKeys::Response,
        ])
        .from(IdempotencyKeys::Table)
        .and_where(Expr::col(IdempotencyKeys::WorkspaceId).eq(or_empty(&m.scope)))
        .and_where(Expr::col(IdempotencyKeys::RequestId).eq(or_empty(&m.request_id)))
        .to_owned()
}

pub(crate) fn replay<T: DeserializeOwned>(m: &Mutation, stored: StoredResult) -> Result<T> {
    if stored.method != m.method || stored.request_hash != m.request_hash {
        return Err(Error::invalid_many(
            Reason::RequestIdReused,
            format!(
                "request_id {:?} was already used for a different request",
                or_empty(&m.request_id)
            ),
            vec![agentry_core::FieldViolation::new(
                "request_id",
                "already used for a different request",
            )],
        ));
    }
    record("response", &stored.response)
}

impl Store {
    pub(crate) async fn begin_mutation<T: DeserializeOwned>(
        &self,
        m: &Mutation,
    ) -> Result<Begun<T>> {
        let mut tx = self.db.begin_as(m.method).await?;
        if m.request_id.is_some()
            && let Some(stored) = tx.fetch_optional::<StoredResult>(&lookup(m)).await?
        {
            return replay(m, stored).map(Begun::Replay);
        }
        Ok(Begun::Fresh(tx))
    }

    /// Commits a successful mutation with its audit record and stored result, or rolls
    /// back a failed one.
    pub(crate) async fn finish<T: Serialize + DeserializeOwned>(
        &self,
        tx: Tx,
        m: &Mutation,
        result: Result<T>,
    ) -> Result<T> {
        let outcome = match result {
            Ok(value) => self.commit_mutation(tx, m, &value).await.map(|()| value),
            Err(e) => tx.fail(e).await,
        };
        match outcome {
            Ok(value) => Ok(value),
            Err(e) => self.recover(m, e).await,
        }
    }

    async fn commit_mutation<T: Serialize>(
        &self,
        mut tx: Tx,
        m: &Mutation,
        value: &T,
    ) -> Result<()> {
        let now = now_micros();
        if m.audit {
            let audit = insert_row(
                AuditLog::Table,
                crate::audit::COLUMNS.into_iter().chain([AuditLog::Outcome]),
                values![
                    m.workspace,
                    uuid::Uuid::now_v7().to_string(),
                    now,
                    m.principal,
                    m.method,
                    m.resource,
                    or_empty(&m.request_id),
                    "OK",
                ],
            );
            tx.defer(&audit);
        }
        if let Some(request_id) = &m.request_id {
            let response = to_record(value);
            let stored = insert_row(
                IdempotencyKeys::Table,
                STORED_COLUMNS,
                values![
                    or_empty(&m.scope),
                    request_id,
                    m.method,
                    m.request_hash,
                    response,
                    now,
                ],
            );
            tx.defer(&stored);
        }
        tx.commit().await
    }

    /// After a failed attempt: if a concurrent call with the same `request_id` committed
    /// first, answer with its result.
    pub(crate) async fn recover<T: DeserializeOwned>(
        &self,
        m: &Mutation,
        error: Error,
    ) -> Result<T> {
        if m.request_id.is_none()
            || matches!(
                error,
                Error::InvalidArgument { .. } | Error::PermissionDenied { .. }
            )
        {
            return Err(error);
        }
        match self.db.fetch_optional::<StoredResult>(&lookup(m)).await {
            Ok(Some(stored)) => replay(m, stored),
            _ => Err(error),
        }
    }

    /// Forgets stored results older than `before` (micros); the reaper calls this.
    pub async fn purge_idempotency_keys(&self, before: i64) -> Result<u64> {
        let stmt = Query::delete()
            .from_table(IdempotencyKeys::Table)
            .and_where(Expr::col(IdempotencyKeys::CreateTime).lt(before))
            .to_owned();
        self.db.execute(&stmt).await
    }
}

/// Runs `$body` (an async block using `$tx: &mut Tx`) as a mutation described by `$m`.
macro_rules! mutate {
    ($store:expr, $m:expr, |$tx:ident| $body:expr) => {{
        let store = $store;
        let m = $m;
        match store.begin_mutation(m).await? {
            $crate::mutation::Begun::Replay(value) => Ok(value),
            $crate::mutation::Begun::Fresh(mut tx) => {
                let result = {
                    let $tx = &mut tx;
                    $body.await
                };
                store.finish(tx, m, result).await
            }
        }
    }};
}
pub(crate) use mutate;

/// [`mutate!`] for a mutation that collects the wake keys of what it changes in
/// `$wakes` (a [`Wakes`](crate::feed::Wakes)): the other replicas are NOTIFYed inside
/// the transaction, the waiters of this process once it has committed.
macro_rules! mutate_waking {
    ($store:expr, $m:expr, $wakes:ident, |$tx:ident| $body:expr) => {{
        let store = $store;
        let result = $crate::mutation::mutate!(store, $m, |tx| async {
            let value: agentry_core::Result<_> = {
                let $tx = &mut *tx;
                $body.await
            };
            let value = value?;
            $wakes.notify(tx, &store.replica).await?;
            Ok(value)
        });
        if result.is_ok() {
            store.wake(&$wakes);
        }
        result
    }};
}
pub(crate) use mutate_waking;

/// [`mutate!`] for a run change, whose wake keys `$body` collects in `$wakes` (new and
/// empty): once it has committed they wake this process's waiters and are announced to
/// the other replicas, batched (`feed::announce`).
macro_rules! mutate_announcing {
    ($store:expr, $m:expr, |$tx:ident, $wakes:ident| $body:expr) => {{
        let store = $store;
        let mut $wakes = $crate::feed::Wakes::default();
        let result = $crate::mutation::mutate!(store, $m, |$tx| $body);
        if result.is_ok() {
            store.wake_everywhere(&$wakes);
        }
        result
    }};
}
pub(crate) use mutate_announcing;
