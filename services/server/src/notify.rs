//! Waiting for changes. Storage is the truth; a wake-up from the store's change feed
//! (`agentry_core::port::ChangeFeed`) only says "look again". A waiter subscribes to the keys
//! it follows before its first look, so a change committed between a look and the wait
//! still wakes it; it reads storage only when woken (the feed wakes every waiter once
//! when it may have lost wake-ups), never on a timer of its own.
//!
//! [`Follower`] is the serving loop every server stream shares: each of its waits (a read
//! of storage, the pause after a failed one, the wait for a wake-up) ends at once when the
//! client leaves or the server stops, so no task outlives its listener, and a database
//! outage is ridden out with backoff for a bounded time, not forever.

use std::time::{Duration, Instant};

use agentry_core::{Error, Result, port::Subscription};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::to_status;

/// How a wait for a wake-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A followed key changed (or the feed may have lost wake-ups): look at storage.
    Look,
    /// The time allowed for the wait ran out.
    TimedOut,
    /// The server is shutting down.
    Stopping,
    /// The client went away.
    Gone,
}

/// Waits until a key of `changes` changes, `limit` passes (`None`: no limit), the server
/// stops or `closed` resolves (the client went away).
pub async fn wait_for_change(
    changes: &Subscription,
    limit: Option<Duration>,
    stopping: &mut watch::Receiver<bool>,
    closed: impl std::future::Future<Output = ()>,
) -> Woken {
    let timer = async {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = changes.changed() => Woken::Look,
        () = timer => Woken::TimedOut,
        _ = stopping.wait_for(|stop| *stop) => Woken::Stopping,
        () = closed => Woken::Gone,
    }
}

/// Resolves when the server starts shutting down (or its stop flag is gone).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Runs `work` unless the server has been shutting down for `grace` first (`None`).
/// Dropping `work` must be safe: store calls are transactions that roll back when
/// dropped. A grace lets a call that is useful even to a stopping server (a lease
/// renewal) finish while the database answers, and still not hold the drain when it
/// does not.
pub async fn unless_stopped<T>(
    stopping: &watch::Receiver<bool>,
    grace: Duration,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut stopping = stopping.clone();
    let stopped_for_grace = async {
        stopped(&mut stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        done = work => Some(done),
        () = stopped_for_grace => None,
    }
}

/// How long a stream rides out a database that keeps failing before it gives up with
/// UNAVAILABLE (and RetryInfo), telling the client where to resume. Long enough for a
/// Postgres restart or failover; short enough that a stream never spins for the life of
/// the process on an outage nobody is waiting out.
pub const STREAM_OUTAGE_LIMIT: Duration = Duration::from_secs(30);
/// The first pause after a failed read; it doubles up to [`RETRY_PAUSE_MAX`] (each
/// pause drawn between half and all of it, so that streams do not retry in step).
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(100);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

/// What a read of storage for a stream came to.
pub enum Read<R> {
    Got(R),
    /// The database is unavailable; the pause is over: read again.
    Again,
    /// The stream is over (the client left, the server stops, or an error was sent).
    Ended,
}

/// The serving task of one server stream: where items go, the server's stop flag and
/// the state of a database outage. Every wait of the task — a read of storage, the pause
/// after a failed one, the wait for a wake-up — ends at once when the client leaves
/// (quietly) or the server stops (UNAVAILABLE: reconnect and resume with `resume`, which
/// a clean end would hide: it reads as the end of the history).
pub struct Follower<T> {
    sender: mpsc::Sender<Result<T, tonic::Status>>,
    stopping: watch::Receiver<bool>,
    /// The request field a client resumes with, e.g. `after_sequence`.
    resume: &'static str,
    outage_limit: Duration,
    /// Since when reads fail, and the next pause.
    outage: Option<(Instant, Duration)>,
}

impl<T> Follower<T> {
    pub fn new(
        sender: mpsc::Sender<Result<T, tonic::Status>>,
        stopping: watch::Receiver<bool>,
        resume: &'static str,
    ) -> Self {
        Self {
            sender,
            stopping,
            resume,
            outage_limit: STREAM_OUTAGE_LIMIT,
            outage: None,
        }
    }

    #[cfg(test)]
    fn with_outage_limit(mut self, limit: Duration) -> Self {
        self.outage_limit = limit;
        self
    }

    /// Sends an item; false when the client went away.
    pub async fn send(&self, item: T) -> bool {
        self.sender.send(Ok(item)).await.is_ok()
    }

    /// Ends the stream with `error`.
    pub async fn fail(&self, error: Error) {
        let _ = self.sender.send(Err(to_status(error))).await;
    }

    async fn end_stopping(&self, cursor: i64) {
        let status = crate::error::unavailable(&format!(
            "the server is shutting down; reconnect and resume with {} = {cursor}",
            self.resume
        ));
        let _ = self.sender.send(Err(status)).await;
    }

    /// Reads storage with `read`, the client's position being `cursor`. While the
    /// database is unavailable, it pauses (bounded, jittered backoff) and says
    /// [`Read::Again`]; after [`STREAM_OUTAGE_LIMIT`] of failures it ends the stream. Any
    /// other error ends the stream with that error.
    pub async fn read<R>(
        &mut self,
        cursor: i64,
        read: impl std::future::Future<Output = Result<R>>,
    ) -> Read<R> {
        let began = Instant::now();
        let result = tokio::select! {
            result = read => result,
            () = self.sender.closed() => return Read::Ended,
            () = stopped(&mut self.stopping) => {
                self.end_stopping(cursor).await;
                return Read::Ended;
            }
        };
        let message = match result {
            Ok(found) => {
                self.outage = None;
                return Read::Got(found);
            }
            Err(Error::Unavailable { message }) => message,
            Err(error) => {
                self.fail(error).await;
                return Read::Ended;
            }
        };
        // The outage began when the first failing read did (a read may take a while to
        // fail: connecting to a database that is down times out).
        let (since, next) = self.outage.get_or_insert((began, RETRY_PAUSE_FIRST));
        let failing = since.elapsed();
        if failing >= self.outage_limit {
            tracing::warn!(
                failing_ms = failing.as_millis() as u64,
                %message,
                "ending a stream: the database stayed unavailable"
            );
            self.fail(Error::Unavailable {
                message: format!(
                    "the database has been unavailable for {} s; reconnect and resume with {} = {cursor}",
                    failing.as_secs(),
                    self.resume
                ),
            })
            .await;
            return Read::Ended;
        }
        let pause = jittered(*next);
        *next = (*next * 2).min(RETRY_PAUSE_MAX);
        tokio::select! {
            () = tokio::time::sleep(pause) => Read::Again,
            () = self.sender.closed() => Read::Ended,
            () = stopped(&mut self.stopping) => {
                self.end_stopping(cursor).await;
                Read::Ended
            }
        }
    }

    /// Waits for a change of a followed key; false when the stream is over.
    pub async fn wait(&mut self, changes: &Subscription, cursor: i64) -> bool {
        let closed = self.sender.closed();
        match wait_for_change(changes, None, &mut self.stopping, closed).await {
            Woken::Look | Woken::TimedOut => true,
            Woken::Gone => false,
            Woken::Stopping => {
                self.end_stopping(cursor).await;
                false
            }
        }
    }
}

/// What a server stream answers: the items a [`Follower`] sends.
pub type Replies<T> = ReceiverStream<Result<T, tonic::Status>>;

/// A server stream: `serve` runs in a task of its own with a [`Follower`] (clients resume
/// with the request field `resume`); the stream yields what it sends, `buffer` items
/// ahead of the client at most.
pub fn follow<T, F>(
    stopping: &watch::Receiver<bool>,
    resume: &'static str,
    buffer: usize,
    serve: impl FnOnce(Follower<T>) -> F,
) -> Replies<T>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(buffer);
    tokio::spawn(serve(Follower::new(sender, stopping.clone(), resume)));
    ReceiverStream::new(receiver)
}

/// Between half and all of `pause`.
fn jittered(pause: Duration) -> Duration {
    use std::hash::BuildHasher;
    // A fresh RandomState is randomly keyed: enough spread without a dependency.
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let half = pause / 2;
    half + Duration::from_nanos(random % (half.as_nanos() as u64 + 1))
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use tonic_types::StatusExt;

    use super::*;

    type Item = Result<u32, tonic::Status>;

    fn serving(limit: Duration) -> (Follower<u32>, mpsc::Receiver<Item>, watch::Sender<bool>) {
        let (sender, receiver) = mpsc::channel(4);
        let (stop, stopping) = watch::channel(false);
        let follower = Follower::new(sender, stopping, "after_sequence").with_outage_limit(limit);
        (follower, receiver, stop)
    }

    fn down() -> Result<u32> {
        Err(Error::Unavailable {
            message: "the database is unavailable".into(),
        })
    }

    #[tokio::test]
    async fn an_outage_past_the_limit_ends_the_stream_with_unavailable_and_retry_info() {
        let (mut follower, mut received, _stop) = serving(Duration::from_millis(300));
        let started = Instant::now();
        let mut reads = 0;
        loop {
            match follower.read(7, async { down() }).await {
                Read::Again => reads += 1,
                Read::Ended => break,
                Read::Got(_) => unreachable!(),
            }
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
        assert!(took < Duration::from_secs(3), "gave up after {took:?}");
        assert!(
            (2..=10).contains(&reads),
            "{reads} reads: backoff, not a spin"
        );
        let status = received.recv().await.expect("a status").unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains("resume with after_sequence = 7"),
            "{status:?}"
        );
        assert!(status.get_details_retry_info().is_some(), "{status:?}");
    }

    #[tokio::test]
    async fn a_successful_read_ends_the_outage() {
        let (mut follower, _received, _stop) = serving(Duration::from_millis(200));
        assert!(matches!(
            follower.read(0, async { down() }).await,
            Read::Again
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(matches!(
            follower.read(0, async { Ok(1) }).await,
            Read::Got(1)
        ));
        // A new outage starts its own clock.
        assert!(matches!(
            follower.read(0, async { down() }).await,
            Read::Again
        ));
    }

    #[tokio::test]
    async fn a_client_that_leaves_ends_any_wait_at_once() {
        // During a read that never answers (a stalled database).
        let (mut follower, received, _stop) = serving(STREAM_OUTAGE_LIMIT);
        let reading = tokio::spawn(async move {
            matches!(
                follower.read(0, pending::<Result<u32>>()).await,
                Read::Ended
            )
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(received);
        let ended = tokio::time::timeout(Duration::from_secs(1), reading).await;
        assert!(ended.expect("the read ends").unwrap());

        // During the pause after a failed read.
        let (mut follower, received, _stop) = serving(STREAM_OUTAGE_LIMIT);
        follower.outage = Some((Instant::now(), Duration::from_secs(60)));
        let pausing =
            tokio::spawn(
                async move { matches!(follower.read(0, async { down() }).await, Read::Ended) },
            );
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(received);
        let ended = tokio::time::timeout(Duration::from_secs(1), pausing).await;
        assert!(ended.expect("the pause ends").unwrap());
    }

    #[tokio::test]
    async fn a_stopping_server_ends_any_wait_with_unavailable() {
        let (mut follower, mut received, stop) = serving(STREAM_OUTAGE_LIMIT);
        let reading = tokio::spawn(async move {
            matches!(
                follower.read(3, pending::<Result<u32>>()).await,
                Read::Ended
            )
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(1), reading).await;
        assert!(ended.expect("the read ends").unwrap());
        let status = received.recv().await.expect("a status").unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains("after_sequence = 3"),
            "{status:?}"
        );
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "UNAVAILABLE");
        assert!(status.get_details_retry_info().is_some(), "{status:?}");
    }

    #[tokio::test]
    async fn pauses_are_jittered_within_half_and_all_of_the_step() {
        let step = Duration::from_millis(100);
        let pauses: Vec<Duration> = (0..50).map(|_| jittered(step)).collect();
        assert!(pauses.iter().all(|p| *p >= step / 2 && *p <= step));
        let distinct: std::collections::BTreeSet<_> = pauses.iter().collect();
        assert!(distinct.len() > 10, "{pauses:?}");
    }
}
