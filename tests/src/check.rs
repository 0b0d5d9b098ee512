//! Assertions on failed calls: the canonical code plus the `google.rpc.Status` details
//! the server promises (`ErrorInfo` with a stable reason in the `agentry.dev` domain,
//! `BadRequest` field violations, `QuotaFailure`).

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The error domain every `ErrorInfo` of the server carries.
pub const ERROR_DOMAIN: &str = "agentry.dev";

/// Asserts that `result` failed with `code` and an `ErrorInfo` of `reason` in the
/// `agentry.dev` domain; returns the status for further checks.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
) -> Status {
    let status = match result {
        Ok(value) => panic!("expected {code:?} {reason}, but the call succeeded with {value:?}"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        code,
        "wrong code for expected reason {reason}: {status:?}"
    );
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{code:?} without an ErrorInfo detail: {status:?}"));
    assert_eq!(info.reason, reason, "wrong ErrorInfo.reason: {status:?}");
    assert_eq!(
        info.domain, ERROR_DOMAIN,
        "wrong ErrorInfo.domain: {status:?}"
    );
    status
}

/// [`assert_status`] for INVALID_ARGUMENT that also requires a `BadRequest` violation of
/// `field`.
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(
    result: Result<T, Status>,
    reason: &str,
    field: &str,
) -> Status {
    let status = assert_status(result, Code::InvalidArgument, reason);
    let fields = violation_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "expected a field violation of {field:?}, got {fields:?}: {status:?}"
    );
    status
}

/// The `field` of every `BadRequest` violation.
pub fn violation_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Asserts RESOURCE_EXHAUSTED `QUOTA_EXCEEDED` with at least one `QuotaFailure` violation.
#[track_caller]
pub fn assert_quota_exceeded<T: std::fmt::Debug>(result: Result<T, Status>) -> Status {
    let status = assert_status(result, Code::ResourceExhausted, "QUOTA_EXCEEDED");
    let failure = status
        .get_details_quota_failure()
        .unwrap_or_else(|| panic!("QUOTA_EXCEEDED without a QuotaFailure detail: {status:?}"));
    assert!(
        !failure.violations.is_empty(),
        "QuotaFailure without violations: {status:?}"
    );
    status
}

/// The `ErrorInfo` metadata value `key`.
pub fn error_metadata(status: &Status, key: &str) -> Option<String> {
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get(key).cloned())
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
