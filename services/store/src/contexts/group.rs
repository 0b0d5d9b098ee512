//! Group commit of context writes (Postgres): concurrent WriteContext and
//! RollbackContext calls share one transaction, and each of its statements serves all
//! of them.
//!
//! A committer task per store (started by the first write) takes the writes queued on
//! its channel: whatever is there, at most [`MAX_BATCH`], at most one per context and
//! one per request id (later ones wait for the next batch). It never waits for more to
//! arrive, so a lone writer's batch is just its own write. One batch is one
//! transaction:
//!
//! 1. the stored results of the batch's request ids (only when some write carries one):
//!    a write with one replays it and leaves the batch;
//! 2. one statement locks every context of the batch in key order (so it never waits in
//!    a cycle with another batch or a single writer) and reads their heads, quotas, head
//!    hashes and, for patches, head documents;
//! 3. each write is decided in Rust on what its context holds (`write::plan`: CAS,
//!    patch, quota, no-op, version number, floor); a write whose own check fails fails
//!    alone;
//! 4. one statement stores every document, version, head, audit record and stored
//!    result; one more compacts the contexts whose floor crossed a compaction batch;
//! 5. COMMIT, sent behind the STORE when nothing is due for compaction; then each
//!    caller gets its answer and the written contexts' watchers are woken
//!    (`wake_everywhere`).
//!
//! A statement that fails (anything but a write's own check) rolls the batch back and
//! re-runs each of its writes on the single-write path, in a transaction of its own, so
//! one bad write never fails the others. A failed COMMIT cannot be re-run (it may have
//! committed): its writes fail, and those with a request id look for their stored
//! result first, as every mutation does.
//!
//! Up to [`IN_FLIGHT`] batches commit at once, so that the next batch forms while one
//! waits for its commit to be flushed.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, OnceLock},
    time::Instant,
};

use agentry_core::{
    Error, Result,
    model::WriteOutcome,
    names::ContextName,
    port::{ContextWrite, Mutation},
    time::now_micros,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{
    context_key,
    group_sql::{Rows, compact_all, lock_all, replays},
    write::{Plan, is_patch, plan},
};
use crate::{Store, feed::Wakes, mutation::replay};

/// Writes one transaction carries at most.
const MAX_BATCH: usize = 64;
/// Batches committing at once.
const IN_FLIGHT: usize = 2;

/// The store's committer: its channel, once the first write has started it.
#[derive(Clone, Default)]
pub(crate) struct GroupCommit(Arc<OnceLock<mpsc::UnboundedSender<Pending>>>);

/// A write waiting for its batch.
struct Pending {
    m: Mutation,
    name: ContextName,
    write: ContextWrite,
    reply: oneshot::Sender<Result<WriteOutcome>>,
}

impl Pending {
    fn request_key(&self) -> Option<(String, String)> {
        let request_id = self.m.request_id.clone()?;
        Some((self.m.scope.clone().unwrap_or_default(), request_id))
    }
}

impl Store {
    /// A write committed in a batch with the other writes queued beside it.
    pub(super) async fn write_grouped(
        &self,
        m: &Mutation,
        name: &ContextName,
        write: ContextWrite,
    ) -> Result<WriteOutcome> {
        let Some(group) = &self.group else {
            return self.write_single(m, name, &write).await;
        };
        let sender = group.0.get_or_init(|| self.start_committer());
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            m: m.clone(),
            name: name.clone(),
            write,
            reply,
        };
        if let Err(mpsc::error::SendError(pending)) = sender.send(pending) {
            return self.write_single(m, name, &pending.write).await;
        }
        answer.await.map_err(|_| Error::Unavailable {
            message: "the write's batch was abandoned".into(),
        })?
    }

    fn start_committer(&self) -> mpsc::UnboundedSender<Pending> {
        let (sender, receiver) = mpsc::unbounded_channel();
        // The committer's own handle has no committer: the task ends once every other
        // handle (and with them the sender) is gone.
        let store = Self {
            group: None,
            ..self.clone()
        };
        tokio::spawn(committer(store, receiver));
        sender
    }
}

async fn committer(store: Store, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held = VecDeque::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.pop_front() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let batch = form(first, &mut held, &mut receiver);
        let store = store.clone();
        tokio::spawn(async move {
            store.commit_batch(batch).await;
            drop(slot);
        });
    }
}

/// A batch led by `first`: the held writes and then the queued ones, as many as fit,
/// skipping (and holding, in order) those whose context or request id it has already.
fn form(
    first: Pending,
    held: &mut VecDeque<Pending>,
    receiver: &mut mpsc::UnboundedReceiver<Pending>,
) -> Vec<Pending> {
    let mut contexts = HashSet::new();
    let mut requests = HashSet::new();
    let mut batch = Vec::new();
    let mut later = VecDeque::new();
    let mut next = Some(first);
    while let Some(pending) = next {
        let context = pending.name.to_string();
        let request = pending.request_key();
        let clash =
            contexts.contains(&context) || request.as_ref().is_some_and(|r| requests.contains(r));
        if clash {
            later.push_back(pending);
        } else {
            contexts.insert(context);
            requests.extend(request);
            batch.push(pending);
        }
        if batch.len() >= MAX_BATCH {
            break;
        }
        next = held.pop_front().or_else(|| receiver.try_recv().ok());
    }
    later.append(held);
    *held = later;
    batch
}

/// How a batch ended.
enum Ended {
    /// Committed (or, with nothing to store, rolled back): each write's answer.
    Done(Vec<Result<WriteOutcome>>),
    /// A statement failed before COMMIT: nothing was stored.
    RolledBack(Error),
    /// COMMIT failed: whether anything was stored is unknown.
    Unknown(Error),
}

impl Store {
    async fn commit_batch(&self, batch: Vec<Pending>) {
        match self.run_batch(&batch).await {
            Ended::Done(answers) => {
                let mut wakes = Wakes::default();
                for (pending, answer) in batch.iter().zip(&answers) {
                    if answer.as_ref().is_ok_and(|outcome| !outcome.noop) {
                        wakes.push(context_key(&pending.name));
                    }
                }
                self.wake_everywhere(&wakes);
                for (pending, answer) in batch.into_iter().zip(answers) {
                    let answer = match answer {
                        Err(e) => self.recover(&pending.m, e).await,
                        ok => ok,
                    };
                    let _ = pending.reply.send(answer);
                }
            }
            Ended::RolledBack(e) => {
                tracing::debug!(error = %e, writes = batch.len(), "a context write batch failed; its writes run one by one");
                for pending in batch {
                    let store = self.clone();
                    tokio::spawn(async move {
                        let answer = store
                            .write_single(&pending.m, &pending.name, &pending.write)
                            .await;
                        let _ = pending.reply.send(answer);
                    });
                }
            }
            Ended::Unknown(e) => {
                for pending in batch {
                    let answer = self.recover(&pending.m, copy(&e)).await;
                    let _ = pending.reply.send(answer);
                }
            }
        }
    }

    /// The batch's transaction.
    async fn run_batch(&self, batch: &[Pending]) -> Ended {
        let began = Instant::now();
        let mut tx = match self.db.begin_as("WriteContext").await {
            Ok(tx) => tx,
            Err(e) => return Ended::RolledBack(e),
        };
        let mut answers: Vec<Option<Result<WriteOutcome>>> = batch.iter().map(|_| None).collect();
        let mut rows = Rows::default();
        if let Err(e) = decide_all(&mut tx, batch, &mut answers, &mut rows).await {
            return Ended::RolledBack(e);
        }
        let due = std::mem::take(&mut rows.due);
        if rows.is_empty() {
            // Only failures and replays: nothing to commit (and no flush to wait for).
            drop(tx);
            return Ended::Done(answered(answers));
        }
        let decided = Instant::now();
        if due.is_empty() {
            // STORE is the batch's last statement: its COMMIT goes with it.
            tx.commit_behind_next();
        }
        if let Err(e) = rows.store(&mut tx).await {
            return Ended::RolledBack(e);
        }
        if !due.is_empty()
            && let Err(e) = compact_all(&mut tx, &due).await
        {
            return Ended::RolledBack(e);
        }
        let stored = Instant::now();
        if let Err(e) = tx.commit().await {
            return Ended::Unknown(e);
        }
        crate::observe::context_batch_committed(
            batch.len(),
            decided - began,
            stored - decided,
            stored.elapsed(),
        );
        Ended::Done(answered(answers))
    }
}

fn answered(answers: Vec<Option<Result<WriteOutcome>>>) -> Vec<Result<WriteOutcome>> {
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(Error::internal("a write of the batch was skipped"))))
        .collect()
}

/// Replays the writes whose request id has a stored result, then locks the contexts
/// of the others and decides each, collecting what to store in `rows`. An error is a
/// statement's: the batch is rolled back.
async fn decide_all(
    tx: &mut crate::db::Tx,
    batch: &[Pending],
    answers: &mut [Option<Result<WriteOutcome>>],
    rows: &mut Rows,
) -> Result<()> {
    let keyed: Vec<(usize, (String, String))> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.request_key().map(|key| (i, key)))
        .collect();
    if !keyed.is_empty() {
        let keys: Vec<(String, String)> = keyed.iter().map(|(_, key)| key.clone()).collect();
        for (k, stored) in replays(tx, &keys).await? {
            let i = keyed[k].0;
            answers[i] = Some(replay(&batch[i].m, stored));
        }
    }
    let open: Vec<usize> = (0..batch.len()).filter(|&i| answers[i].is_none()).collect();
    if open.is_empty() {
        return Ok(());
    }
    let contexts: Vec<(&ContextName, bool)> = open
        .iter()
        .map(|&i| (&batch[i].name, is_patch(&batch[i].write)))
        .collect();
    let locked = lock_all(tx, &contexts).await?;
    for (i, locked) in open.into_iter().zip(locked) {
        let Pending { m, name, write, .. } = &batch[i];
        let now = now_micros();
        let outcome = match plan(tx, m, name, write, locked).await {
            Ok(Plan::Noop(version)) => WriteOutcome {
                version,
                noop: true,
            },
            Ok(Plan::Append {
                version,
                canonical,
                floor,
                compact,
            }) => {
                rows.version(name, &version, canonical, floor);
                if compact {
                    rows.due.push((name.clone(), floor));
                }
                WriteOutcome {
                    version,
                    noop: false,
                }
            }
            Err(e) if statement_failed(&e) => return Err(e),
            Err(e) => {
                answers[i] = Some(Err(e));
                continue;
            }
        };
        rows.answered(m, &outcome, now);
        answers[i] = Some(Ok(outcome));
    }
    Ok(())
}

/// Whether `e` is a failed statement (which leaves the transaction unusable) rather
/// than a write's own check failing.
fn statement_failed(e: &Error) -> bool {
    matches!(
        e,
        Error::Internal(_) | Error::Unavailable { .. } | Error::AlreadyExists { .. }
    )
}

fn copy(e: &Error) -> Error {
    match e {
        Error::Unavailable { message } => Error::Unavailable {
            message: message.clone(),
        },
        other => Error::internal(other.to_string()),
    }
}
