//! Timestamps are stored as microseconds since the Unix epoch (BIGINT in both databases),
//! so one rendered query serves Postgres and SQLite alike.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Bounds on an instant, each optional and exclusive: after `after`, before `before`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub after: Option<Micros>,
    pub before: Option<Micros>,
}

pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}
