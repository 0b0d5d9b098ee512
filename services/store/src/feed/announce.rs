//! Wake-ups for the other replicas sent after commit, batched across writers.
//!
//! A NOTIFY inside a transaction takes a database-wide lock at commit and holds it
//! through the commit's WAL flush, so concurrent notifying writers commit one after
//! another. Writers that announce instead hand their keys to one task, which sends
//! whatever has queued up meanwhile in one autocommit statement, one at a time: the
//! writers' own commits share WAL flushes, and the lock is taken once per batch.
//! The keys leave only after their transactions committed, so a replica woken by them
//! finds the change in storage. A batch that cannot be sent is retried; one lost all
//! the same (the process died first) is what the listener's safety net is for on
//! the replicas whose connections it concerns. While no other replica listens, keys are
//! held instead of sent (`company`).

use std::{sync::Arc, time::Duration};

use agentry_core::wake::WakeKey;
use tokio::sync::mpsc;

use super::{company::Company, notify_statement};
use crate::db::Db;

/// Attempts at sending one batch.
const ATTEMPTS: u32 = 3;

/// Shared by clones of the store; the task ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Announcer {
    sender: mpsc::UnboundedSender<WakeKey>,
    pub(super) company: Arc<Company>,
}

impl Announcer {
    pub(crate) fn start(db: Db, replica: String) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(db, replica, receiver));
        Self {
            sender,
            company: Arc::default(),
        }
    }

    /// The keys of a committed change: held while this replica is alone, else sent.
    pub(crate) fn announce(&self, keys: &[WakeKey]) {
        if !self.company.hold(keys) {
            self.send(keys);
        }
    }

    /// Sends `keys` to the other replicas.
    pub(super) fn send(&self, keys: &[WakeKey]) {
        for key in keys {
            // The task is gone only when the store is.
            let _ = self.sender.send(key.clone());
        }
    }
}

async fn send_loop(db: Db, replica: String, mut receiver: mpsc::UnboundedReceiver<WakeKey>) {
    let mut batch: Vec<WakeKey> = Vec::new();
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while let Ok(key) = receiver.try_recv() {
            if !batch.contains(&key) {
                batch.push(key);
            }
        }
        let statement = notify_statement(&replica, &batch);
        for attempt in 1..=ATTEMPTS {
            match db.execute(&statement).await {
                Ok(_) => break,
                Err(error) if attempt == ATTEMPTS => {
                    tracing::warn!(%error, keys = batch.len(), "cannot announce committed changes to the other replicas");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await,
            }
        }
        batch.clear();
    }
}
