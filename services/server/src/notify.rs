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
                    Ok(notification) => hub.publish(notification.payload().to_owned()),
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

/// Waits until `key` changes (or wake-ups were lost, which counts as a change), `limit`
/// passes, the server stops or `closed` resolves (the client went away). Returns whether
/// the caller should look at storage again; false means stop.
pub async fn wait_for_change(
    wakeups: &mut broadcast::Receiver<String>,
    key: &str,
    limit: Duration,
    stopping: &mut watch::Receiver<bool>,
    closed: impl std::future::Future<Output = ()>,
) -> bool {
    use broadcast::error::RecvError;
    let timer = tokio::time::sleep(limit);
    tokio::pin!(timer);
    tokio::pin!(closed);
    loop {
        tokio::select! {
            received = wakeups.recv() => match received {
                Ok(changed) if changed == key => return true,
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => return true,
                Err(RecvError::Closed) => return false,
            },
            _ = &mut timer => return true,
            _ = stopping.wait_for(|stop| *stop) => return false,
            _ = &mut closed => return false,
        }
    }
}
