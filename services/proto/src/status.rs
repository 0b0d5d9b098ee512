//! The one mapping from errors to gRPC statuses: an exhaustive match, so that a new
//! error variant forces a decision here. Every status the server sends is made here: the
//! handlers' (through the server's `error::to_status`, which also logs), the codec's
//! refusals of undecodable requests, the HTTP/JSON gateway's. Every status carries a `google.rpc.ErrorInfo`
//! (stable reason, domain `agentry.dev`), plus `BadRequest`, `QuotaFailure` or
//! `RetryInfo` where they apply. An internal error's message is never shown.
//!
//! Errors echo input (a label key, a path, a name), and every client must be able to
//! read them: gRPC's C core (Python, C++, Ruby, PHP clients) refuses a response whose
//! metadata passes 16 KiB, and may from 8 KiB, and then reports RESOURCE_EXHAUSTED
//! instead of the real error. The sites that quote input cut it short
//! (`agentry_core::error::quote`); here, as a net under all of them, every text of a
//! status is cut to a fixed size and the number of violations is bounded, so that a
//! whole status (message and encoded details) stays under about 4 KiB whatever the
//! input (`a_status_stays_small_whatever_it_echoes` below).

use std::{collections::HashMap, time::Duration};

use agentry_error::{Error, shorten};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub const DOMAIN: &str = "agentry.dev";

/// Bytes of a status message; of a field violation's field and description; of an
/// ErrorInfo metadata value.
const MAX_MESSAGE: usize = 256;
const MAX_FIELD: usize = 96;
const MAX_DESCRIPTION: usize = 128;
const MAX_METADATA_VALUE: usize = 128;
/// Field and quota violations sent; the message says how many more there were.
const MAX_VIOLATIONS: usize = 8;

/// The status of an error (logging is the caller's: see the server's `error::to_status`).
pub fn of(error: Error) -> Status {
    let reason = error.reason();
    let code = grpc_code(error.code());
    let mut details = ErrorDetails::new();
    let mut metadata = HashMap::new();
    let message = match error {
        Error::InvalidArgument {
            message,
            violations,
            ..
        } => bad_request(&mut details, message, violations),
        Error::NotFound { resource } => {
            let message = format!("{} not found", shorten(&resource, MAX_METADATA_VALUE));
            metadata.insert("resource".to_owned(), resource);
            message
        }
        Error::AlreadyExists { resource } => {
            let message = format!("{} already exists", shorten(&resource, MAX_METADATA_VALUE));
            metadata.insert("resource".to_owned(), resource);
            message
        }
        Error::FailedPrecondition {
            message,
            metadata: extra,
            ..
        }
        | Error::Aborted {
            message,
            metadata: extra,
            ..
        }
        | Error::OutOfRange {
            message,
            metadata: extra,
            ..
        } => {
            metadata.extend(extra);
            message
        }
        Error::PermissionDenied { message, .. } | Error::Unauthenticated { message, .. } => message,
        Error::QuotaExceeded { violations } => quota_failure(&mut details, violations),
        Error::MessageTooLarge { limit_bytes } => {
            metadata.insert("limit_bytes".to_owned(), limit_bytes.to_string());
            error.to_string()
        }
        Error::Unsupported { message } => message,
        Error::Unavailable { message } => {
            details.set_retry_info(Some(Duration::from_secs(1)));
            message
        }
        Error::Internal(_) => "internal error".to_owned(),
    };
    let metadata = metadata
        .into_iter()
        .map(|(key, value)| (key, shorten(&value, MAX_METADATA_VALUE).into_owned()))
        .collect::<HashMap<_, _>>();
    details.set_error_info(reason, DOMAIN, metadata);
    Status::with_error_details(code, shorten(&message, MAX_MESSAGE), details)
}

/// The gRPC code of a domain code: one to one.
pub fn grpc_code(code: agentry_error::Code) -> Code {
    use agentry_error::Code as C;
    match code {
        C::InvalidArgument => Code::InvalidArgument,
        C::NotFound => Code::NotFound,
        C::AlreadyExists => Code::AlreadyExists,
        C::PermissionDenied => Code::PermissionDenied,
        C::Unauthenticated => Code::Unauthenticated,
        C::ResourceExhausted => Code::ResourceExhausted,
        C::FailedPrecondition => Code::FailedPrecondition,
        C::Aborted => Code::Aborted,
        C::OutOfRange => Code::OutOfRange,
        C::Unimplemented => Code::Unimplemented,
        C::Unavailable => Code::Unavailable,
        C::Internal => Code::Internal,
    }
}

/// Adds the `BadRequest` of an INVALID_ARGUMENT; its message.
fn bad_request(
    details: &mut ErrorDetails,
    message: String,
    violations: Vec<agentry_error::FieldViolation>,
) -> String {
    let message = with_more(message, violations.len());
    for v in violations.into_iter().take(MAX_VIOLATIONS) {
        details.add_bad_request_violation(
            shorten(&v.field, MAX_FIELD),
            shorten(&v.description, MAX_DESCRIPTION),
        );
    }
    message
}

/// Adds the `QuotaFailure` and `RetryInfo` of a RESOURCE_EXHAUSTED; its message (the
/// first violation's).
fn quota_failure(
    details: &mut ErrorDetails,
    violations: Vec<agentry_error::QuotaViolation>,
) -> String {
    let message = violations
        .first()
        .map(|v| v.description.clone())
        .unwrap_or_else(|| "quota exceeded".into());
    let message = with_more(message, violations.len());
    for v in violations.into_iter().take(MAX_VIOLATIONS) {
        details.add_quota_failure_violation(
            shorten(&v.subject, MAX_FIELD),
            shorten(&v.description, MAX_DESCRIPTION),
        );
    }
    details.set_retry_info(Some(Duration::from_secs(5)));
    message
}

/// `message`, saying how many violations were left out of the details.
fn with_more(message: String, violations: usize) -> String {
    match violations.checked_sub(MAX_VIOLATIONS) {
        Some(more) if more > 0 => {
            format!("{} (and {more} more)", shorten(&message, MAX_MESSAGE - 32))
        }
        _ => message,
    }
}

/// What a status costs a client on the wire, before any other metadata: its message as
/// `grpc-message` percent-encodes it (every byte outside printable ASCII is three), its
/// details as `grpc-status-details-bin` base64-encodes them.
pub fn wire_bytes(status: &Status) -> usize {
    let message: usize = status
        .message()
        .bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                1
            } else {
                3
            }
        })
        .sum();
    message + status.details().len().div_ceil(3) * 4
}

#[cfg(test)]
mod tests {
    use agentry_error::{FieldViolation, QuotaViolation, Reason};

    use super::*;

    #[test]
    fn a_status_stays_small_whatever_it_echoes() {
        // Worst case: four-byte characters everywhere, too many violations.
        let huge = "😀".repeat(10_000);
        let violations = (0..50)
            .map(|_| FieldViolation::new(huge.clone(), huge.clone()))
            .collect();
        let status = of(Error::invalid_many(
            "INVALID_CONFIG",
            huge.clone(),
            violations,
        ));
        assert!(wire_bytes(&status) < 4096, "{} bytes", wire_bytes(&status));
        assert!(
            status.message().ends_with("(and 42 more)"),
            "{}",
            status.message()
        );
        assert_eq!(
            status
                .get_details_bad_request()
                .map(|b| b.field_violations.len()),
            Some(MAX_VIOLATIONS)
        );

        let quota = Error::QuotaExceeded {
            violations: (0..50)
                .map(|_| QuotaViolation {
                    subject: huge.clone(),
                    description: huge.clone(),
                })
                .collect(),
        };
        assert!(wire_bytes(&of(quota)) < 4096);

        let mut error = Error::precondition("HAS_CHILDREN", huge.clone());
        if let Error::FailedPrecondition { metadata, .. } = &mut error {
            for key in ["a", "b", "c", "d"] {
                metadata.insert(key.into(), huge.clone());
            }
        }
        assert!(wire_bytes(&of(error)) < 4096);
        assert!(wire_bytes(&of(Error::not_found(huge))) < 4096);
    }

    #[test]
    fn every_reason_is_sent_with_its_one_code() {
        for &reason in Reason::ALL {
            let status = of(Error::new(reason, "resource"));
            assert_eq!(status.code(), grpc_code(reason.code()), "{reason:?}");
            let info = status.get_details_error_info().expect("an ErrorInfo");
            let expected = match reason.code() {
                // The kind's own reason: one per code.
                agentry_error::Code::NotFound => Reason::ResourceNotFound,
                agentry_error::Code::AlreadyExists => Reason::ResourceAlreadyExists,
                agentry_error::Code::ResourceExhausted => Reason::QuotaExceeded,
                _ => reason,
            };
            assert_eq!(info.reason, expected.as_str());
        }
        let too_large = of(Error::MessageTooLarge { limit_bytes: 1 });
        assert_eq!(too_large.code(), grpc_code(Reason::MessageTooLarge.code()));
        let info = too_large.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, Reason::MessageTooLarge.as_str());
        assert_eq!(info.metadata["limit_bytes"], "1");
    }

    #[test]
    fn short_errors_pass_unchanged() {
        let status = of(Error::invalid("project.labels.Key", "label keys are short"));
        assert_eq!(status.message(), "project.labels.Key: label keys are short");
        let fields = status
            .get_details_bad_request()
            .expect("a BadRequest")
            .field_violations;
        assert_eq!(fields[0].field, "project.labels.Key");
        assert_eq!(fields[0].description, "label keys are short");
    }
}
