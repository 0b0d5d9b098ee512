//! The two back ends behind one interface. Every statement is a sea-query builder, written
//! once and rendered here for the dialect at hand; rows decode through `sqlx::FromRow`
//! into types that both drivers can read.
//!
//! SQLite allows one writer at a time, so writes go through a single-connection pool and
//! reads through a separate pool (WAL mode lets them run beside the writer). On Postgres
//! one pool serves both, and writers that must serialize take row locks.
//!
//! Within a traced call, every transaction and every statement gets an OpenTelemetry
//! span with `db.system` and the statement's summary, such as `SELECT runs`: the
//! operation and its table, read from the rendered SQL, whose values are always bound
//! parameters, so no value can reach a span. Untraced, nothing is built.

use std::{panic::Location, str::FromStr, time::Duration};

use agentry_core::{Error, Result};
use sea_query::{PostgresQueryBuilder, QueryStatementWriter, SqliteQueryBuilder};
use sea_query_binder::SqlxBinder;
use sqlx::{
    FromRow, PgPool, Postgres, Sqlite, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};
mod batch;
mod render;
mod span;

use batch::Rendered;
pub(crate) use span::StatementSpan;
use span::{statement_span, transaction_span};

/// One statement on a pool or a transaction's connection of back end `$backend`
/// (`Postgres`, `Sqlite`): rendered for its dialect and run under a statement span (a
/// child of `$parent`, the transaction's, if any). `rows $fetch` decodes rows as `R`;
/// `execute` answers the number of rows affected.
macro_rules! run {
    (rows $fetch:ident, $backend:ident, $stmt:expr, $on:expr, $parent:expr) => {{
        let (sql, values) = run!(@render $backend, $stmt);
        let _span = statement_span(Backend::$backend, &sql, $parent);
        sqlx::query_as_with::<_, R, _>(&sql, values)
            .$fetch($on)
            .await
            .map_err(map_err)
    }};
    (execute, $backend:ident, $stmt:expr, $on:expr, $parent:expr) => {{
        let (sql, values) = run!(@render $backend, $stmt);
        let _span = statement_span(Backend::$backend, &sql, $parent);
        sqlx::query_with(&sql, values)
            .execute($on)
            .await
            .map(|done| done.rows_affected())
            .map_err(map_err)
    }};
    (@render Postgres, $stmt:expr) => {{
        let (sql, values) = render::build($stmt, PostgresQueryBuilder);
        (sql, sea_query_binder::SqlxValues(values))
    }};
    (@render Sqlite, $stmt:expr) => {{
        let (sql, values) = render::build($stmt, SqliteQueryBuilder);
        (sql, sea_query_binder::SqlxValues(values))
    }};
}

/// A row type both drivers can decode.
pub trait Record:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}
impl<T> Record for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

/// A statement sea-query can render and bind.
pub trait Statement: QueryStatementWriter + SqlxBinder {}
impl<T> Statement for T where T: QueryStatementWriter + SqlxBinder {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, Clone)]
pub(crate) enum Db {
    Postgres(PgPool),
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
}

/// How long closing the pools may take (see [`Db::close`]).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `application_name` of a replica's LISTEN connection.
pub const LISTENER_NAME: &str = "agentry feed";

/// A connection idle this long is pinged before use.
pub(crate) const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

impl Db {
    pub(crate) async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| Error::internal(format!("invalid database url: {e}")))?;
            // sqlx pings every connection before handing it out by default: a round
            // trip per statement or transaction. Ping only a connection that sat idle
            // (as HikariCP does): under load none has, and after a quiet spell, when
            // Postgres may have restarted, a dead one is replaced instead of failing a
            // call.
            let pool = PgPoolOptions::new()
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= IDLE_BEFORE_PING {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .max_connections(max_connections.max(2))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(map_connect)?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| Error::internal(format!("invalid database url: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.clone())
                .await
                .map_err(map_connect)?;
            let reader = SqlitePoolOptions::new()
                .max_connections(max_connections.clamp(1, 8))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.read_only(true))
                .await
                .map_err(map_connect)?;
            Ok(Self::Sqlite { writer, reader })
        } else {
            Err(Error::internal(
                "database url must start with postgres:// or sqlite:",
            ))
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite { .. } => Backend::Sqlite,
        }
    }

    pub(crate) async fn migrate(&self) -> Result<()> {
        let result = match self {
            Self::Postgres(pool) => PG_MIGRATOR.run(pool).await,
            Self::Sqlite { writer, .. } => SQLITE_MIGRATOR.run(writer).await,
        };
        result.map_err(|e| Error::internal(format!("migration failed: {e}")))
    }

    /// Begins a write transaction. Its span lasts until commit or rollback and is the
    /// parent of its statements' spans; it names the code that began it.
    #[track_caller]
    pub(crate) fn begin(&self) -> impl std::future::Future<Output = Result<Tx>> + Send + '_ {
        self.begin_as("")
    }

    /// [`Db::begin`] for a named operation (a mutation's method): the span is called
    /// `transaction {operation}`.
    #[track_caller]
    pub(crate) fn begin_as(
        &self,
        operation: &'static str,
    ) -> impl std::future::Future<Output = Result<Tx>> + Send + '_ {
        let span = transaction_span(self.backend(), operation, Location::caller());
        async move {
            let conn = match self {
                Self::Postgres(pool) => TxConn::Postgres(pool.begin().await.map_err(map_err)?),
                Self::Sqlite { writer, .. } => {
                    TxConn::Sqlite(writer.begin().await.map_err(map_err)?)
                }
            };
            Ok(Tx {
                conn,
                span,
                deferred: Vec::new(),
                deferred_rows: Vec::new(),
            })
        }
    }

    /// See [`Store::readiness`](crate::Store::readiness).
    pub(crate) async fn readiness(&self) -> std::result::Result<(), String> {
        let (applied, known) = match self {
            Self::Postgres(pool) => (
                sqlx::query_scalar::<_, i64>(APPLIED_MIGRATIONS)
                    .fetch_all(pool)
                    .await,
                &PG_MIGRATOR,
            ),
            Self::Sqlite { reader, .. } => (
                sqlx::query_scalar::<_, i64>(APPLIED_MIGRATIONS)
                    .fetch_all(reader)
                    .await,
                &SQLITE_MIGRATOR,
            ),
        };
        let applied = applied.map_err(|e| match e {
            sqlx::Error::Database(_) => "migrations are not applied".to_owned(),
            other => format!("the database is unreachable: {other}"),
        })?;
        let missing: Vec<String> = known
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| m.version.to_string())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("migrations not applied: {}", missing.join(", ")))
        }
    }

    pub(crate) fn pool_connections(&self) -> agentry_core::port::PoolConnections {
        fn of<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> agentry_core::port::PoolConnections {
            let (size, idle) = (u64::from(pool.size()), pool.num_idle() as u64);
            agentry_core::port::PoolConnections {
                active: size.saturating_sub(idle),
                idle,
                max: u64::from(pool.options().get_max_connections()),
            }
        }
        match self {
            Self::Postgres(pool) => of(pool),
            Self::Sqlite { writer, reader } => {
                let (w, r) = (of(writer), of(reader));
                agentry_core::port::PoolConnections {
                    active: w.active + r.active,
                    idle: w.idle + r.idle,
                    max: w.max + r.max,
                }
            }
        }
    }

    pub(crate) async fn fetch_optional<R: Record>(
        &self,
        stmt: &impl Statement,
    ) -> Result<Option<R>> {
        match self {
            Self::Postgres(pool) => run!(rows fetch_optional, Postgres, stmt, pool, None),
            Self::Sqlite { reader, .. } => run!(rows fetch_optional, Sqlite, stmt, reader, None),
        }
    }

    pub(crate) async fn fetch_all<R: Record>(&self, stmt: &impl Statement) -> Result<Vec<R>> {
        match self {
            Self::Postgres(pool) => run!(rows fetch_all, Postgres, stmt, pool, None),
            Self::Sqlite { reader, .. } => run!(rows fetch_all, Sqlite, stmt, reader, None),
        }
    }

    /// A statement outside any transaction (maintenance: the reaper, settings).
    pub(crate) async fn execute(&self, stmt: &impl Statement) -> Result<u64> {
        match self {
            Self::Postgres(pool) => run!(execute, Postgres, stmt, pool, None),
            Self::Sqlite { writer, .. } => run!(execute, Sqlite, stmt, writer, None),
        }
    }

    /// A LISTEN connection on `channel`, named [`LISTENER_NAME`] (Postgres).
    pub(crate) async fn listen(&self, channel: &str) -> Result<Option<sqlx::postgres::PgListener>> {
        match self {
            Self::Postgres(pool) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool)
                    .await
                    .map_err(map_connect)?;
                // Tells the connection apart in `pg_stat_activity`.
                sqlx::query("SELECT set_config('application_name', $1, false)")
                    .bind(LISTENER_NAME)
                    .execute(&mut listener)
                    .await
                    .map_err(map_err)?;
                listener.listen(channel).await.map_err(map_err)?;
                Ok(Some(listener))
            }
            Self::Sqlite { .. } => Ok(None),
        }
    }

    /// Closes the pools. Closing waits for every connection to be given back and closed
    /// cleanly, which a database that stopped answering never lets happen: after
    /// [`CLOSE_TIMEOUT`] the rest are abandoned, so that a stopping server still exits.
    pub(crate) async fn close(&self) {
        let close = async {
            match self {
                Self::Postgres(pool) => pool.close().await,
                Self::Sqlite { writer, reader } => {
                    reader.close().await;
                    writer.close().await;
                }
            }
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, close).await.is_err() {
            tracing::warn!(
                timeout_ms = CLOSE_TIMEOUT.as_millis() as u64,
                "database connections did not close in time; abandoned"
            );
        }
    }
}

/// An open write transaction on either back end. Dropping it rolls back.
pub(crate) struct Tx {
    conn: TxConn,
    /// The context of the transaction's span (empty when untraced), which ends when the
    /// transaction commits or is dropped.
    span: opentelemetry::Context,
    /// Writes [`Tx::defer`]red, sent before the next statement or the commit.
    deferred: Vec<Rendered>,
    /// The rows the deferred writes of [`Tx::defer_row`] touch.
    deferred_rows: Vec<String>,
}

enum TxConn {
    Postgres(sqlx::Transaction<'static, Postgres>),
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

impl Tx {
    pub(crate) fn backend(&self) -> Backend {
        match self.conn {
            TxConn::Postgres(_) => Backend::Postgres,
            TxConn::Sqlite(_) => Backend::Sqlite,
        }
    }

    pub(crate) async fn fetch_all<R: Record>(&mut self, stmt: &impl Statement) -> Result<Vec<R>> {
        self.flush().await?;
        let parent = Some(&self.span);
        match &mut self.conn {
            TxConn::Postgres(tx) => run!(rows fetch_all, Postgres, stmt, &mut **tx, parent),
            TxConn::Sqlite(tx) => run!(rows fetch_all, Sqlite, stmt, &mut **tx, parent),
        }
    }

    pub(crate) async fn execute(&mut self, stmt: &impl Statement) -> Result<u64> {
        self.flush().await?;
        let parent = Some(&self.span);
        match &mut self.conn {
            TxConn::Postgres(tx) => run!(execute, Postgres, stmt, &mut **tx, parent),
            TxConn::Sqlite(tx) => run!(execute, Sqlite, stmt, &mut **tx, parent),
        }
    }

    pub(crate) async fn fetch_optional<R: Record>(
        &mut self,
        stmt: &impl Statement,
    ) -> Result<Option<R>> {
        self.flush().await?;
        let parent = Some(&self.span);
        match &mut self.conn {
            TxConn::Postgres(tx) => run!(rows fetch_optional, Postgres, stmt, &mut **tx, parent),
            TxConn::Sqlite(tx) => run!(rows fetch_optional, Sqlite, stmt, &mut **tx, parent),
        }
    }

    /// Whether any row of `table` matches `condition`.
    pub(crate) async fn exists(
        &mut self,
        table: impl sea_query::IntoTableRef,
        condition: impl sea_query::IntoCondition,
    ) -> Result<bool> {
        let stmt = sea_query::Query::select()
            .expr(sea_query::Expr::val(1))
            .from(table)
            .cond_where(condition)
            .limit(1)
            .to_owned();
        Ok(self.fetch_optional::<(i32,)>(&stmt).await?.is_some())
    }

    /// The transaction's Postgres connection and a span for `sql`, for statements
    /// sea-query cannot build (data-modifying CTEs); `None` on SQLite. Deferred writes
    /// must have been flushed.
    pub(crate) fn postgres(
        &mut self,
        sql: &str,
    ) -> Option<(&mut sqlx::PgConnection, StatementSpan)> {
        debug_assert!(self.deferred.is_empty(), "flush deferred writes first");
        match &mut self.conn {
            TxConn::Postgres(tx) => {
                let span = statement_span(Backend::Postgres, sql, Some(&self.span));
                Some((&mut **tx, span))
            }
            TxConn::Sqlite(_) => None,
        }
    }

    /// On Postgres, sends COMMIT right behind the next statement, in the same round trip:
    /// for a transaction's last statement, whose result decides nothing (the
    /// transaction ends with it; [`Tx::commit`] then reads the COMMIT's answer).
    pub(crate) fn commit_behind_next(&mut self) {
        if let TxConn::Postgres(tx) = &mut self.conn {
            tx.commit_behind_next_query();
        }
    }

    /// Sends the deferred writes and commits; on Postgres the last of those writes and
    /// the COMMIT go in one round trip. A write that fails rolls back (and waits for it).
    pub(crate) async fn commit(mut self) -> Result<()> {
        if let Err(error) = self.flush_then(true).await {
            return self.fail(error).await;
        }
        let _span = self.span;
        match self.conn {
            TxConn::Postgres(tx) => tx.commit().await.map_err(map_err),
            TxConn::Sqlite(tx) => tx.commit().await.map_err(map_err),
        }
    }

    /// Rolls back and waits for it, so that the transaction's row locks are gone when
    /// the caller answers: a dropped transaction leaves its ROLLBACK queued on the
    /// connection until the pool next touches it, and meanwhile a SKIP LOCKED reader
    /// (the reaper, a claim) passes over the rows it locked. A failed rollback is left
    /// to the pool, which discards the connection.
    pub(crate) async fn rollback(self) {
        let _span = self.span;
        let result = match self.conn {
            TxConn::Postgres(tx) => tx.rollback().await,
            TxConn::Sqlite(tx) => tx.rollback().await,
        };
        if let Err(error) = result {
            tracing::debug!(%error, "rollback failed; the pool discards the connection");
        }
    }

    /// [`Tx::rollback`], then `error`: for an early return out of a transaction.
    pub(crate) async fn fail<T>(self, error: Error) -> Result<T> {
        self.rollback().await;
        Err(error)
    }
}

fn map_connect(e: sqlx::Error) -> Error {
    Error::Unavailable {
        message: format!("cannot connect to the database: {e}"),
    }
}

/// Maps driver errors by kind. A unique violation becomes `AlreadyExists` with a
/// placeholder resource that the caller names with [`named`].
pub(crate) fn map_err(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::already_exists(String::new())
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => Error::Unavailable {
            message: "the database is unavailable".into(),
        },
        sqlx::Error::Database(db) if is_busy(db.as_ref()) => Error::Unavailable {
            message: "the database is busy".into(),
        },
        other => Error::internal(other),
    }
}

fn is_busy(db: &dyn sqlx::error::DatabaseError) -> bool {
    // SQLITE_BUSY / SQLITE_LOCKED; Postgres: serialization failure, deadlock, too many connections.
    matches!(
        db.code().as_deref(),
        Some("5" | "6" | "517" | "40001" | "40P01" | "53300" | "57P01")
    )
}

/// Names the resource of an `AlreadyExists` raised by a unique constraint.
pub(crate) fn named(e: Error, resource: impl std::fmt::Display) -> Error {
    match e {
        Error::AlreadyExists { .. } => Error::already_exists(resource.to_string()),
        other => other,
    }
}

const APPLIED_MIGRATIONS: &str = "SELECT version FROM _sqlx_migrations WHERE success";
