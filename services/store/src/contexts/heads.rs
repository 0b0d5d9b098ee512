//! Where a ReadContext lands: the context's head and floor, read for many concurrent
//! readers at once.
//!
//! Versions are immutable, so a caller may keep the documents it has read; what it
//! must never keep is the head. Every read therefore asks the database for the head,
//! but on Postgres concurrent reads share the asking: the lookups that are waiting are
//! answered together by one statement. A lookup joins only a batch whose statement
//! starts after the lookup was queued, so the head it gets was current at some moment
//! after the read arrived: a read that follows a write's response sees that write on
//! every replica (the same rule as etcd's ReadIndex, where many reads share one
//! confirmation).
//!
//! One statement runs at a time, on a connection of its own (outside the pool: sqlx's
//! acquire and release cost more than this statement). There is no task of its own
//! either: a lookup that finds no statement running leads; it yields to the scheduler
//! once, so that reads already runnable can queue, then takes every lookup queued so
//! far. Lookups that arrive meanwhile queue up, and a leader that finds the queue
//! non-empty when its statement returns hands it to a task that answers it until it is
//! empty. At one reader that is one statement per read with no extra hop; at 32 it is
//! one per batch. One statement at a time makes the largest batches, and the yield lets
//! reads that are already runnable join the first batch; `scripts/bench context` prints
//! what that gives (reads/s and server CPU per read at 1 and 32 clients, beside pgbench
//! running this statement once per read).
//! A leader whose caller goes away while it yields hands the queue on, like one whose
//! statement returned; one whose caller goes away mid-statement drops its batch's
//! replies, and those lookups queue again.

use std::{
    collections::HashMap,
    mem,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agentry_core::{Error, Result, names::ContextName, port::ContextHead};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;

use crate::db::{IDLE_BEFORE_PING, map_err};

/// Runs `$sql`, one of the lookups below, with the workspace, project and context ids
/// (one of each, or arrays of them) bound in that order: its rows, or the error.
macro_rules! lookup {
    ($conn:expr, $sql:expr, $workspace:expr, $project:expr, $context:expr) => {
        bounded(
            sqlx::query_as::<_, (i64, i64, i64, i64)>($sql)
                .bind($workspace)
                .bind($project)
                .bind($context)
                .fetch_all($conn),
        )
        .await
    };
}

/// Lookups one statement answers at most.
const MAX_BATCH: usize = 256;

type Key = (String, String, String);
type Answer = std::result::Result<Option<ContextHead>, Arc<Error>>;
type Batch = Vec<(Key, oneshot::Sender<Answer>)>;

#[derive(Default)]
struct Queue {
    waiting: Batch,
    /// A statement is running (its leader or hand-off task holds the turn).
    leading: bool,
    /// The lookups' own connection, while no statement is using it, and when it was
    /// last used.
    conn: Option<(PgConnection, Instant)>,
    /// The store was closed: no new connection, and a running statement's is dropped.
    closed: bool,
}

/// Shared by clones of the store.
#[derive(Clone)]
pub(crate) struct HeadBatcher {
    /// Where the connection's options come from.
    pool: PgPool,
    queue: Arc<Mutex<Queue>>,
}

impl HeadBatcher {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            queue: Arc::default(),
        }
    }

    /// The head of `name`, or `None` when no such context exists.
    pub(crate) async fn head(&self, name: &ContextName) -> Result<Option<ContextHead>> {
        let key = (
            name.workspace.clone(),
            name.project.clone(),
            name.context.clone(),
        );
        loop {
            let (reply, answer) = oneshot::channel();
            let lead = {
                let mut queue = self.lock();
                queue.waiting.push((key.clone(), reply));
                !mem::replace(&mut queue.leading, true)
            };
            if lead {
                let turn = Turn(self.clone());
                tokio::task::yield_now().await;
                let batch = take(&mut self.lock());
                self.answer(batch).await;
                drop(turn);
            }
            match answer.await {
                Ok(Ok(head)) => return Ok(head),
                Ok(Err(e)) => return Err(replicate(&e)),
                // Its leader went away before answering: queue again.
                Err(_) => continue,
            }
        }
    }

    /// Drops the connection (the pool's `close` does not know it).
    pub(crate) fn close(&self) {
        let mut queue = self.lock();
        queue.closed = true;
        queue.conn = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one batch with one statement.
    async fn answer(&self, batch: Batch) {
        let mut replies: HashMap<Key, Vec<oneshot::Sender<Answer>>> = HashMap::new();
        for (key, reply) in batch {
            replies.entry(key).or_default().push(reply);
        }
        let (keys, replies): (Vec<Key>, Vec<_>) = replies.into_iter().unzip();
        match self.lookup(keys).await {
            Ok(heads) => {
                for (waiters, head) in replies.into_iter().zip(heads) {
                    for reply in waiters {
                        let _ = reply.send(Ok(head));
                    }
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// The heads of `keys`, in their order.
    async fn lookup(&self, keys: Vec<Key>) -> Result<Vec<Option<ContextHead>>> {
        let (held, closed) = {
            let mut queue = self.lock();
            (queue.conn.take(), queue.closed)
        };
        // Pinged after a quiet spell, like the pool's connections (`db::IDLE_BEFORE_PING`).
        let held = match held {
            Some((mut conn, used)) if used.elapsed() >= IDLE_BEFORE_PING => {
                bounded(conn.ping()).await.ok().map(|()| conn)
            }
            held => held.map(|(conn, _)| conn),
        };
        let mut conn = match held {
            Some(conn) => conn,
            None if closed => {
                return Err(Error::Unavailable {
                    message: "the server is shutting down".into(),
                });
            }
            None => bounded(PgConnection::connect_with(&self.pool.connect_options())).await?,
        };
        let mut heads = vec![None; keys.len()];
        let rows = if let [(workspace, project, context)] = keys.as_slice() {
            lookup!(&mut conn, LOOKUP_ONE, workspace, project, context)
        } else {
            let mut workspaces = Vec::with_capacity(keys.len());
            let mut projects = Vec::with_capacity(keys.len());
            let mut contexts = Vec::with_capacity(keys.len());
            for (w, p, c) in keys {
                workspaces.push(w);
                projects.push(p);
                contexts.push(c);
            }
            lookup!(&mut conn, LOOKUP, workspaces, projects, contexts)
        };
        // A connection that failed or timed out a statement is not trusted again.
        let rows = rows?;
        let mut queue = self.lock();
        if !queue.closed {
            queue.conn = Some((conn, Instant::now()));
        }
        drop(queue);
        for (ordinal, create_time, head_version, floor_version) in rows {
            if let Some(slot) = usize::try_from(ordinal - 1)
                .ok()
                .and_then(|i| heads.get_mut(i))
            {
                *slot = Some(ContextHead {
                    create_time,
                    head_version,
                    floor_version,
                });
            }
        }
        Ok(heads)
    }
}

/// How long a connect or a lookup may take. Every read of this replica waits behind
/// the running lookup, so a connection that hangs (a lost peer without a reset) must not
/// hold them longer than a pooled acquire would (`acquire_timeout`).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(work: impl Future<Output = std::result::Result<T, sqlx::Error>>) -> Result<T> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, work).await {
        Ok(done) => done.map_err(map_err),
        Err(_) => Err(Error::Unavailable {
            message: "the database did not answer in time".into(),
        }),
    }
}

fn take(queue: &mut Queue) -> Batch {
    if queue.waiting.len() <= MAX_BATCH {
        mem::take(&mut queue.waiting)
    } else {
        queue.waiting.drain(..MAX_BATCH).collect()
    }
}

/// The right to run the statement. Dropping it (when the statement returned, or when the
/// leader's caller went away) either gives it up or, with lookups waiting, hands it to a
/// task that answers them.
struct Turn(HeadBatcher);

impl HeadBatcher {
    /// For the holder of the turn: the lookups queued since, or `None` (the turn given
    /// up) when there are none.
    fn next_batch(&self) -> Option<Batch> {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            queue.leading = false;
            None
        } else {
            Some(take(&mut queue))
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(batch) = self.0.next_batch() else {
            return;
        };
        let batcher = self.0.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    batcher.answer(batch).await;
                    while let Some(batch) = batcher.next_batch() {
                        batcher.answer(batch).await;
                    }
                });
            }
            // No runtime left to answer on: the waiters' replies drop with the batch.
            Err(_) => batcher.lock().leading = false,
        }
    }
}

fn replicate(e: &Error) -> Error {
    match e {
        Error::Unavailable { message } => Error::Unavailable {
            message: message.clone(),
        },
        other => Error::internal(other.to_string()),
    }
}

/// One context: the plain primary-key read (cheaper to plan than the join below).
const LOOKUP_ONE: &str = "SELECT 1::bigint, create_time, head_version, floor_version \
     FROM contexts WHERE workspace_id = $1 AND project_id = $2 AND context_id = $3";

const LOOKUP: &str = "SELECT k.i, c.create_time, c.head_version, c.floor_version \
     FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k (w, p, c, i) \
     JOIN contexts c ON c.workspace_id = k.w AND c.project_id = k.p AND c.context_id = k.c";
