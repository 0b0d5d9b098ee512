//! Typed errors from `google.rpc.Status` details.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// What went wrong, by canonical code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    /// A compare-and-swap or etag lost to a concurrent writer (ABORTED).
    Conflict,
    OutOfRange,
    QuotaExceeded,
    Unavailable,
    DeadlineExceeded,
    Cancelled,
    Internal,
    /// Raised by this crate before any call (a bad endpoint or key).
    Local,
    Other,
}

/// A failed call, with the details the server attached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?} ({}): {message}", details.reason)]
pub struct Error {
    pub kind: ErrorKind,
    pub code: Code,
    pub message: String,
    pub details: Box<Details>,
}

/// The `google.rpc` details of an error.
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// The ErrorInfo reason, e.g. `VERSION_CONFLICT`, `STALE_TASK`, `SESSION_BUSY`.
    pub reason: String,
    /// The ErrorInfo metadata, e.g. `current_version`.
    pub metadata: HashMap<String, String>,
    /// BadRequest field violations: (field, description).
    pub field_violations: Vec<(String, String)>,
    /// QuotaFailure violations: (subject, description).
    pub quota_violations: Vec<(String, String)>,
    /// RetryInfo: how long to wait before retrying.
    pub retry_delay: Option<Duration>,
}

impl Error {
    pub(crate) fn local(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Local,
            code: Code::InvalidArgument,
            message: message.into(),
            details: Box::default(),
        }
    }

    /// The ErrorInfo reason, e.g. `VERSION_CONFLICT`.
    pub fn reason(&self) -> &str {
        &self.details.reason
    }

    /// The head version a VERSION_CONFLICT reports.
    pub fn current_version(&self) -> Option<i64> {
        self.details.metadata.get("current_version")?.parse().ok()
    }

    /// Whether the same call may succeed when retried unchanged.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let kind = match status.code() {
            Code::InvalidArgument => ErrorKind::InvalidArgument,
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists => ErrorKind::AlreadyExists,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            Code::FailedPrecondition => ErrorKind::FailedPrecondition,
            Code::Aborted => ErrorKind::Conflict,
            Code::OutOfRange => ErrorKind::OutOfRange,
            Code::ResourceExhausted => ErrorKind::QuotaExceeded,
            Code::Unavailable => ErrorKind::Unavailable,
            Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
            Code::Cancelled => ErrorKind::Cancelled,
            Code::Internal => ErrorKind::Internal,
            _ => ErrorKind::Other,
        };
        let details = status.get_error_details();
        let (reason, metadata) = details
            .error_info()
            .map(|info| (info.reason.clone(), info.metadata.clone()))
            .unwrap_or_default();
        let details = Details {
            reason,
            metadata,
            field_violations: details
                .bad_request()
                .map(|b| {
                    b.field_violations
                        .iter()
                        .map(|v| (v.field.clone(), v.description.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            quota_violations: details
                .quota_failure()
                .map(|q| {
                    q.violations
                        .iter()
                        .map(|v| (v.subject.clone(), v.description.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            retry_delay: details.retry_info().and_then(|r| r.retry_delay),
        };
        Self {
            kind,
            code: status.code(),
            message: status.message().to_owned(),
            details: Box::new(details),
        }
    }
}
