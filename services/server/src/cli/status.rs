//! Failures of client commands: one readable line on stderr (code, reason, message, field
//! violations) and an exit status per class of gRPC code, so that scripts can tell "not
//! found" from "not allowed" from "try again" without parsing text.
//!
//! | exit | meaning |
//! |------|---------|
//! | 0 | success (`runs follow`: the run SUCCEEDED) |
//! | 1 | local error: bad file, bad config, bad value |
//! | 2 | usage error (unknown flag, missing argument) |
//! | 3 | INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE |
//! | 4 | NOT_FOUND |
//! | 5 | ALREADY_EXISTS, ABORTED (a conflict: etag, version, request id) |
//! | 6 | UNAUTHENTICATED, PERMISSION_DENIED |
//! | 7 | RESOURCE_EXHAUSTED (quota, rate, size) |
//! | 8 | UNAVAILABLE, DEADLINE_EXCEEDED, a failed connection or TLS handshake |
//! | 9 | INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED, CANCELLED |
//! | 10 | `runs follow`: the run FAILED |
//! | 11 | `runs follow`: the run was CANCELLED |
//! | 12 | `runs follow`: the run TIMED_OUT |

use tonic::{Code, Status};
use tonic_types::StatusExt;

pub const LOCAL: i32 = 1;
pub const RUN_FAILED: i32 = 10;
pub const RUN_CANCELLED: i32 = 11;
pub const RUN_TIMED_OUT: i32 = 12;

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The server refused or failed the call.
    Status(Status),
    /// Something on this side: a file, a flag value, the config.
    Local(String),
    /// Not an error to report, only an exit status (a run's outcome).
    Exit(i32),
}

impl From<Status> for Failure {
    /// A call that never reached the server (refused connection, failed TLS handshake)
    /// comes back from tonic as UNKNOWN "transport error", CANCELLED or (a mutual-TLS
    /// refusal that arrives after the client's side of the handshake) INTERNAL "h2
    /// protocol error", made from a local error; it is reported as UNAVAILABLE,
    /// with the causes, so that scripts see "unreachable" (8), not "server bug" (9).
    fn from(status: Status) -> Self {
        use std::error::Error as _;
        // A status the server sent has no source; one made from a local error has.
        let local = status.source().is_some();
        if local
            && matches!(
                status.code(),
                Code::Unknown | Code::Cancelled | Code::Internal
            )
        {
            let mut message = String::from("cannot reach the server");
            let mut cause = status.source();
            while let Some(error) = cause {
                message.push_str(": ");
                message.push_str(&error.to_string());
                cause = error.source();
            }
            return Self::Status(Status::unavailable(message));
        }
        Self::Status(status)
    }
}

/// `fail!("…{x}…")`: a [`Failure::Local`].
macro_rules! fail {
    ($($arg:tt)*) => { $crate::cli::Failure::Local(format!($($arg)*)) };
}
pub(crate) use fail;

impl Failure {
    /// Prints the failure and returns the exit status.
    pub fn report(self) -> i32 {
        match self {
            Self::Status(status) => {
                eprintln!("error: {}", describe(&status));
                exit_code(status.code())
            }
            Self::Local(message) => {
                eprintln!("error: {message}");
                LOCAL
            }
            Self::Exit(code) => code,
        }
    }
}

pub fn exit_code(code: Code) -> i32 {
    match code {
        Code::Ok => 0,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 3,
        Code::NotFound => 4,
        Code::AlreadyExists | Code::Aborted => 5,
        Code::Unauthenticated | Code::PermissionDenied => 6,
        Code::ResourceExhausted => 7,
        Code::Unavailable | Code::DeadlineExceeded => 8,
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented | Code::Cancelled => {
            9
        }
    }
}

pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `NOT_FOUND RESOURCE_NOT_FOUND: workspaces/x not found`, then field and quota
/// violations and a retry delay when the status carries them; one line.
pub fn describe(status: &Status) -> String {
    let details = status.get_error_details();
    let mut line = code_name(status.code()).to_owned();
    if let Some(info) = details.error_info()
        && info.reason != code_name(status.code())
    {
        line.push(' ');
        line.push_str(&info.reason);
    }
    let message = status.message().replace(['\n', '\r'], " ");
    if !message.is_empty() {
        line.push_str(": ");
        line.push_str(&message);
    }
    let mut extra = Vec::new();
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            extra.push(format!("{}: {}", v.field, v.description));
        }
    }
    if let Some(quota) = details.quota_failure() {
        for v in &quota.violations {
            extra.push(format!("{}: {}", v.subject, v.description));
        }
    }
    // The message already quotes a lone violation.
    let quoted = extra.len() == 1 && message.contains(extra[0].as_str());
    if !extra.is_empty() && !quoted {
        line.push_str(" [");
        line.push_str(&extra.join("; "));
        line.push(']');
    }
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        line.push_str(&format!(" (retry in {:.1}s)", delay.as_secs_f64()));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn a_status_reads_as_one_line_with_reason_and_violations() {
        let mut details = ErrorDetails::with_error_info("INVALID_ARGUMENT", "agentry.dev", []);
        details.add_bad_request_violation("workspace_id", "not a valid id");
        details.add_bad_request_violation("workspace.labels", "too many");
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "workspace_id: not a valid id\n(2 problems)",
            details,
        );
        assert_eq!(
            describe(&status),
            "INVALID_ARGUMENT: workspace_id: not a valid id (2 problems) [workspace_id: not a valid id; workspace.labels: too many]"
        );
        let details = ErrorDetails::with_error_info("ETAG_MISMATCH", "agentry.dev", []);
        let status = Status::with_error_details(Code::Aborted, "stale etag", details);
        assert_eq!(describe(&status), "ABORTED ETAG_MISMATCH: stale etag");
        assert_eq!(exit_code(Code::Aborted), 5);
    }
}
