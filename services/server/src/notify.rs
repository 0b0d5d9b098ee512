//! Change wake-ups for streams. Storage is the truth; a notification only says "look
//! again". Writes on this replica publish after they commit; Postgres `LISTEN/NOTIFY`
//! carries writes of other replicas (the NOTIFY is sent inside the writing transaction,
//! so it arrives only if the write committed). Watchers also poll on a timer, so a lost
//! notification costs latency, never a version.

use std::time::Duration;

use agentry_store::Store;
use tokio::sync::{broadcast, watch};

/// Fan-out of changed keys (`workspace/project/context`).
#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<String>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(4096).0,
        }
    }
}

impl Hub {
    pub fn publish(&self, key: String) {
        let _ = self.sender.send(key);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.sender.subscribe()
    }
}

/// Forwards Postgres notifications on `channel` into the hub until `stop`.
pub async fn forward_postgres(
    store: Store,
    channel: &'static str,
    hub: Hub,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut listener = match store.listen(channel).await {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, channel, "cannot LISTEN; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        loop {
            tokio::select! {
                received = listener.recv() => match received {
                    Ok(notification) => {
                        // `{replica} {key}`, or a bare key: skip what this replica sent.
                        let payload = notification.payload();
                        match payload.split_once(' ') {
                            Some((from, _)) if from == store.replica_id() => {}
                            Some((_, key)) => hub.publish(key.to_owned()),
                            None => hub.publish(payload.to_owned()),
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, channel, "LISTEN connection lost; reconnecting");
                        break;
                    }
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// How a wait for a wake-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// `key` changed, wake-ups were lost, or the timer fired: look at storage again.
    Look,
    /// The server is shutting down.
    Stopping,
    /// The client went away.
    Gone,
}

/// Waits until `key` changes, `limit` passes, the server stops or `closed` resolves (the
/// client went away).
pub async fn wait_for_change(
    wakeups: &mut broadcast::Receiver<String>,
    key: &str,
    limit: Duration,
    stopping: &mut watch::Receiver<bool>,
    closed: impl std::future::Future<Output = ()>,
) -> Woken {
    use broadcast::error::RecvError;
    let timer = tokio::time::sleep(limit);
    tokio::pin!(timer);
    tokio::pin!(closed);
    loop {
        tokio::select! {
            received = wakeups.recv() => match received {
                Ok(changed) if changed == key => return Woken::Look,
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => return Woken::Look,
                Err(RecvError::Closed) => return Woken::Stopping,
            },
            _ = &mut timer => return Woken::Look,
            _ = stopping.wait_for(|stop| *stop) => return Woken::Stopping,
            _ = &mut closed => return Woken::Gone,
        }
    }
}

/// For a server stream between reads of storage: waits like [`wait_for_change`] and
/// says whether to look again. When the server shuts down first, the stream ends with
/// UNAVAILABLE, so that clients reconnect (to another replica) and resume with
/// `resume = cursor`, rather than taking a clean end for the end of the history.
pub async fn stream_wait<T>(
    sender: &tokio::sync::mpsc::Sender<Result<T, tonic::Status>>,
    wakeups: &mut broadcast::Receiver<String>,
    key: &str,
    limit: Duration,
    stopping: &mut watch::Receiver<bool>,
    (resume, cursor): (&str, i64),
) -> bool {
    match wait_for_change(wakeups, key, limit, stopping, sender.closed()).await {
        Woken::Look => true,
        Woken::Gone => false,
        Woken::Stopping => {
            let status = tonic::Status::unavailable(format!(
                "the server is shutting down; reconnect and resume with {resume} = {cursor}"
            ));
            let _ = sender.send(Err(status)).await;
            false
        }
    }
}
