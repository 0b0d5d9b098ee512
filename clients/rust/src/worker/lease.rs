//! A worker's hold on one attempt of a run, and the calls it makes under it.
//!
//! The lease lives in the server's database, not in a server process: a server that
//! restarts still honours it afterwards. So a worker that cannot reach the server must
//! not give up on the attempt, and must never report its own transport failure as the
//! handler's: the handler keeps running, its events stay buffered, and every call is
//! retried with jittered backoff and the same `request_id` (the server replays a call
//! that did arrive) until the lease the server last granted would have run out. Only
//! then is the attempt abandoned, with no FailTask: the server re-queues the run when it
//! sees the lapse.
//!
//! Transport failures: UNAVAILABLE (server gone, restarting, connection refused or
//! reset), DEADLINE_EXCEEDED (no answer in time), and INTERNAL, UNKNOWN or CANCELLED
//! without the ErrorInfo every error of the server carries (a stream reset by a dying
//! connection). Everything else is the server's answer.

use std::{
    future::Future,
    hash::{BuildHasher, Hasher},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use tonic::{Code, Response, Status};

use crate::{Error, ErrorKind};

/// Whether `error` is the transport's (retry the call) rather than the server's answer.
pub fn is_transient(error: &Error) -> bool {
    match error.code {
        Code::Unavailable | Code::DeadlineExceeded => true,
        Code::Internal | Code::Unknown | Code::Cancelled => error.reason().is_empty(),
        _ => false,
    }
}

/// The delay before retry `failures` (1-based): 0.05–0.1 s at first, doubling up to
/// 0.5–1 s, or the server's RetryInfo delay when it asks for longer.
pub(crate) fn backoff(failures: u32, error: Option<&Error>) -> Duration {
    let ceiling = 0.1 * 2f64.powi(failures.saturating_sub(1).min(10) as i32);
    let ceiling = ceiling.min(1.0);
    let jitter = (std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 1000) as f64
        / 1000.0;
    let delay = Duration::from_secs_f64(ceiling * (0.5 + jitter / 2.0));
    match error.and_then(|e| e.details.retry_delay) {
        Some(asked) if asked > delay => asked,
        _ => delay,
    }
}

/// One call attempt with a deadline; a late answer is DEADLINE_EXCEEDED.
pub(crate) async fn with_deadline<T>(
    deadline: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, Error> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(Status::deadline_exceeded("no answer within the call's deadline").into()),
    }
}

/// The local instant of a server timestamp (the clocks are assumed to agree; a skew only
/// moves the moment the worker gives up).
fn to_instant(expire_time: Option<&prost_types::Timestamp>) -> Instant {
    let Some(t) = expire_time else {
        return Instant::now();
    };
    let expire =
        SystemTime::UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
    match expire.duration_since(SystemTime::now()) {
        Ok(left) => Instant::now() + left,
        Err(_) => Instant::now(),
    }
}

/// The lease of one attempt: its run (for log lines), when it runs out, and calls made
/// under it.
pub(crate) struct Lease {
    pub run: String,
    pub call_timeout: Duration,
    expires: Mutex<Instant>,
}

impl Lease {
    pub fn new(
        run: String,
        expire_time: Option<&prost_types::Timestamp>,
        call_timeout: Duration,
    ) -> Self {
        Self {
            run,
            call_timeout,
            expires: Mutex::new(to_instant(expire_time)),
        }
    }

    /// Records a renewal (HeartbeatTask's answer).
    pub fn grant(&self, expire_time: Option<&prost_types::Timestamp>) {
        let granted = to_instant(expire_time);
        let mut expires = self.expires.lock().expect("lease");
        *expires = (*expires).max(granted);
    }

    /// How long until the lease runs out, as far as this worker knows.
    pub fn remaining(&self) -> Duration {
        self.expires
            .lock()
            .expect("lease")
            .saturating_duration_since(Instant::now())
    }

    /// `call()`, retried on transport failures until the lease runs out. `wait` is how
    /// long the server may hold the call by design (a heartbeat's wait); each attempt
    /// gets that plus `call_timeout`, never past the lease. The caller keeps the
    /// request (and its `request_id`) the same across attempts.
    pub async fn call<T, F, Fut>(&self, name: &str, wait: Duration, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut failures = 0;
        loop {
            let deadline = (wait + self.call_timeout)
                .min(self.remaining())
                .max(wait + Duration::from_millis(500));
            let error = match with_deadline(deadline, call()).await {
                Ok(answer) => return Ok(answer),
                Err(error) if is_transient(&error) => error,
                Err(error) => return Err(error),
            };
            failures += 1;
            let delay = backoff(failures, Some(&error));
            let left = self.remaining();
            if left <= delay {
                tracing::warn!(
                    run = %self.run, call = name, %error, "the server was out of reach until the lease ran out; abandoning the attempt"
                );
                return Err(Error {
                    kind: ErrorKind::Unavailable,
                    code: error.code,
                    message: format!(
                        "{name}: the server was out of reach until the lease ran out ({})",
                        error.message
                    ),
                    details: Box::new(crate::Details {
                        reason: LEASE_EXPIRED.into(),
                        ..Default::default()
                    }),
                });
            }
            if failures == 1 || failures % 10 == 0 {
                tracing::warn!(
                    run = %self.run, call = name, %error, attempt = failures + 1,
                    lease_left_secs = left.as_secs_f64(), "worker call failed; retrying"
                );
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// The reason of the error a worker call ends with when the lease ran out first.
pub const LEASE_EXPIRED: &str = "LEASE_EXPIRED";
