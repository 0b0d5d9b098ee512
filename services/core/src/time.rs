//! Timestamps are stored as microseconds since the Unix epoch (BIGINT in both databases),
//! so one rendered query serves Postgres and SQLite alike. Durations kept beside them
//! (lease lengths, timeouts, retry intervals) are counted in microseconds too, under a
//! name of their own.

use std::time::{SystemTime, UNIX_EPOCH};

/// An instant: microseconds since the Unix epoch.
pub type UnixMicros = i64;

/// A length of time in microseconds (a lease's, a timeout's, a retry interval's).
pub type DurationMicros = i64;

/// Bounds on an instant, each optional and exclusive: after `after`, before `before`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub after: Option<UnixMicros>,
    pub before: Option<UnixMicros>,
}

pub fn now_micros() -> UnixMicros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}
