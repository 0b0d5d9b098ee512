//! Agentry's storage. Each operation is one transaction that performs the mutation,
//! appends its audit record and stores its result under the caller's `request_id`, so
//! a crash never leaves one without the others and a retry replays the first answer.
//!
//! Queries are sea-query builders written once and rendered for Postgres or SQLite
//! (see [`db`]); the operations themselves live in one module per resource.

mod agents;
mod api_keys;
mod audit;
mod contexts;
mod db;
mod execution;
mod feed;
mod instances;
mod mutation;
mod observe;
mod port;
mod projects;
use agentry_core::record;
mod rows;
mod settings;
mod tables;
mod workspaces;

// The commands and results are core's (`agentry_core::port`, the port this store
// implements); re-exported for the store's own callers and tests.
pub use agentry_core::port::{
    AuditFilter, AuditRecord, ChangeFeed, Claim, ContextChange, ContextHead, ContextWrite,
    KeyRecord, Mutation, NewApiKey, NewContext, NewProject, NewWorkspace, PageRequest, Percentiles,
    PoolConnections, ProjectPatch, ReapLimits, ReapReport, RunReaper, RunStatsGroup, Subscription,
    VersionFilter, WorkspacePatch,
};
pub use agents::{AgentPatch, NewAgent};
pub use contexts::COMPACTION_BATCH;
pub use db::{Backend, LISTENER_NAME};
pub use execution::{EventInput, NewRun, NewSession, RunFilter};
pub use feed::FEED_CHANNEL;
pub use instances::{InstanceFilter, InstancePatch, NewInstance};
pub use observe::CONTEXT_BATCH_PHASES;

use agentry_core::Result;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: db::Db,
    /// This process's waiters, woken after the changes they wait for commit.
    feed: std::sync::Arc<agentry_core::port::Registry>,
    /// This process among the replicas: NOTIFY payloads carry it, so a replica can skip
    /// the notifications it sent itself.
    replica: String,
    /// Head lookups shared by concurrent ReadContext calls (Postgres only).
    heads: Option<contexts::HeadBatcher>,
    /// Sends committed context changes to the other replicas (Postgres only).
    announcer: Option<feed::Announcer>,
    /// Context writes in flight in this process.
    writers: contexts::Writers,
    /// Workspaces whose queues held a run at their latest first claim (a guess).
    backlogs: execution::Backlogs,
    /// Commits concurrent context writes together (Postgres only; `None` also in the
    /// committer's own handle).
    group: Option<contexts::GroupCommit>,
}

impl Store {
    /// Connects to `postgres://…` or `sqlite:…` (the file is created when missing).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let db = db::Db::connect(url, max_connections).await?;
        let replica = uuid::Uuid::now_v7().simple().to_string();
        let (heads, announcer, group) = match &db {
            db::Db::Postgres(pool) => (
                Some(contexts::HeadBatcher::new(pool.clone())),
                Some(feed::Announcer::start(db.clone(), replica.clone())),
                Some(contexts::GroupCommit::default()),
            ),
            db::Db::Sqlite { .. } => (None, None, None),
        };
        Ok(Self {
            db,
            heads,
            announcer,
            writers: Default::default(),
            backlogs: Default::default(),
            group,
            feed: Default::default(),
            replica,
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        self.db.migrate().await
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    pub async fn close(&self) {
        if let Some(heads) = &self.heads {
            heads.close();
        }
        self.db.close().await
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// Splits `size + 1` fetched rows into a page and the cursor of its last row.
pub(crate) fn paginate<T>(
    mut rows: Vec<T>,
    size: usize,
    cursor: impl Fn(&T) -> String,
) -> agentry_core::model::Page<T> {
    let more = rows.len() > size;
    rows.truncate(size);
    let cursors: Vec<String> = rows.iter().map(cursor).collect();
    agentry_core::model::Page {
        next_cursor: cursors.last().filter(|_| more).cloned(),
        items: rows,
        cursors,
    }
}

/// One page of a list keyed by one text column: the rows of `stmt` after `page.after` in
/// ascending `key` order (one more than the page holds, to know whether another
/// follows), decoded, each with the cursor `cursor` names it by.
pub(crate) async fn keyset_page<R, T>(
    db: &db::Db,
    mut stmt: sea_query::SelectStatement,
    key: impl sea_query::IntoColumnRef + Clone,
    page: &PageRequest,
    cursor: impl Fn(&T) -> String,
) -> Result<agentry_core::model::Page<T>>
where
    R: db::Record,
    T: TryFrom<R, Error = agentry_core::Error>,
{
    use sea_query::{Expr, Order};
    if let Some(after) = &page.after {
        stmt.and_where(Expr::col(key.clone()).gt(after.as_str()));
    }
    stmt.order_by(key, Order::Asc);
    fetch_page::<R, T>(db, stmt, page.size, cursor).await
}

/// One page of the rows of `stmt`, already ordered and after the cursor: one more row
/// than the page holds is fetched, to know whether another follows.
pub(crate) async fn fetch_page<R, T>(
    db: &db::Db,
    mut stmt: sea_query::SelectStatement,
    size: usize,
    cursor: impl Fn(&T) -> String,
) -> Result<agentry_core::model::Page<T>>
where
    R: db::Record,
    T: TryFrom<R, Error = agentry_core::Error>,
{
    stmt.limit(size as u64 + 1);
    let rows: Vec<R> = db.fetch_all(&stmt).await?;
    Ok(paginate(rows::decode_all(rows)?, size, cursor))
}
