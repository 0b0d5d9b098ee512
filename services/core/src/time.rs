//! Timestamps are stored as microseconds since the Unix epoch (BIGINT in both databases),
//! so one rendered query serves Postgres and SQLite alike.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}
