//! The one mapping from domain errors to gRPC statuses: an exhaustive match, so that a
//! new error variant forces a decision here. Every status carries a `google.rpc.ErrorInfo`
//! (stable reason, domain `agentry.dev`), plus `BadRequest`, `QuotaFailure` or
//! `RetryInfo` where they apply. Internal errors are logged and never shown.

use std::{collections::HashMap, time::Duration};

use agentry_core::Error;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub const DOMAIN: &str = "agentry.dev";

pub fn to_status(error: Error) -> Status {
    let reason = error.reason();
    let mut details = ErrorDetails::new();
    let mut metadata = HashMap::new();
    let (code, message) = match error {
        Error::InvalidArgument {
            message,
            violations,
            ..
        } => {
            for v in violations {
                details.add_bad_request_violation(v.field, v.description);
            }
            (Code::InvalidArgument, message)
        }
        Error::NotFound { resource } => {
            let message = format!("{resource} not found");
            metadata.insert("resource".to_owned(), resource);
            (Code::NotFound, message)
        }
        Error::AlreadyExists { resource } => {
            let message = format!("{resource} already exists");
            metadata.insert("resource".to_owned(), resource);
            (Code::AlreadyExists, message)
        }
        Error::FailedPrecondition {
            message,
            metadata: extra,
            ..
        } => {
            metadata.extend(extra);
            (Code::FailedPrecondition, message)
        }
        Error::Aborted {
            message,
            metadata: extra,
            ..
        } => {
            metadata.extend(extra);
            (Code::Aborted, message)
        }
        Error::OutOfRange {
            message,
            metadata: extra,
            ..
        } => {
            metadata.extend(extra);
            (Code::OutOfRange, message)
        }
        Error::PermissionDenied { message, .. } => (Code::PermissionDenied, message),
        Error::Unauthenticated { message, .. } => (Code::Unauthenticated, message),
        Error::QuotaExceeded { violations } => {
            let message = violations
                .first()
                .map(|v| v.description.clone())
                .unwrap_or_else(|| "quota exceeded".into());
            for v in violations {
                details.add_quota_failure_violation(v.subject, v.description);
            }
            details.set_retry_info(Some(Duration::from_secs(5)));
            (Code::ResourceExhausted, message)
        }
        Error::Unavailable { message } => {
            tracing::warn!(%message, "dependency unavailable");
            details.set_retry_info(Some(Duration::from_secs(1)));
            (Code::Unavailable, message)
        }
        Error::Internal(message) => {
            tracing::error!(%message, "internal error");
            (Code::Internal, "internal error".to_owned())
        }
    };
    details.set_error_info(reason, DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}
