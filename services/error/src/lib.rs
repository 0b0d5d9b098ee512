//! The one error type of every layer (domain, store, server, wire). Each variant maps to
//! exactly one canonical gRPC code (`agentry_proto::status`, an exhaustive match, no
//! catch-all), and every
//! variant carries a stable UPPER_SNAKE `reason` that clients may branch on: one of
//! [`Reason`], each of which has exactly one [`Code`].

use std::{borrow::Cow, collections::BTreeMap};

mod reason;

pub use reason::{Code, Reason};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One bad field of a request: a field path (`workspace.quotas.max_projects`, or a JSON
/// pointer inside a document) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// How much of a caller's input an error message quotes (see [`quote`]).
pub const QUOTE_BYTES: usize = 64;

/// At most `max_bytes` of `text`, cut at a character boundary and marked with `…` when
/// cut. Errors that echo input use it: a whole error status must stay well under the 8
/// KiB of metadata that gRPC's C core accepts without complaint (16 KiB is its hard
/// limit, past which a client sees RESOURCE_EXHAUSTED instead of the real error).
pub fn shorten(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let end = (0..=max_bytes)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    Cow::Owned(format!("{}…", &text[..end]))
}

/// A caller's `text` as an error message quotes it: in double quotes with control
/// characters escaped (`{:?}`), and at most [`QUOTE_BYTES`] of it.
pub fn quote(text: &str) -> String {
    format!("{:?}", shorten(text, QUOTE_BYTES))
}

/// A caller's `text` as a field path quotes it (a label key in `project.labels.{key}`):
/// at most [`QUOTE_BYTES`] of it, control characters escaped (`\u{0}`), no quotes.
pub fn excerpt(text: &str) -> String {
    let mut out = String::new();
    for ch in shorten(text, QUOTE_BYTES).chars() {
        if ch.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", ch as u32));
        } else {
            out.push(ch);
        }
    }
    out
}

/// A quota that a request would exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaViolation {
    /// What the quota applies to, e.g. `workspaces/acme/projects/web`.
    pub subject: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input. `reason` is `INVALID_ARGUMENT` unless something more specific
    /// applies (`INVALID_CONFIG`, `INVALID_SCHEMA`, `INVALID_PAGE_TOKEN`,
    /// `REQUEST_ID_REUSED`).
    #[error("{message}")]
    InvalidArgument {
        reason: &'static str,
        message: String,
        violations: Vec<FieldViolation>,
    },
    #[error("{resource} not found")]
    NotFound { resource: String },
    #[error("{resource} already exists")]
    AlreadyExists { resource: String },
    /// The system is not in a state that allows the call (`INVALID_TRANSITION`,
    /// `HAS_CHILDREN`, `INSTANCE_TERMINATED`, `AGENT_DISABLED`).
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
        metadata: BTreeMap<String, String>,
    },
    /// A concurrent writer won: etag or version mismatch (`ETAG_MISMATCH`).
    #[error("{message}")]
    Aborted {
        reason: &'static str,
        message: String,
        metadata: BTreeMap<String, String>,
    },
    /// A position outside what is stored, e.g. a compacted version (`VERSION_COMPACTED`).
    #[error("{message}")]
    OutOfRange {
        reason: &'static str,
        message: String,
        metadata: BTreeMap<String, String>,
    },
    #[error("{message}")]
    PermissionDenied {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    #[error("quota exceeded")]
    QuotaExceeded { violations: Vec<QuotaViolation> },
    /// A request over the server's message size limit (`MESSAGE_TOO_LARGE`).
    #[error("the request is larger than the server's limit of {limit_bytes} bytes")]
    MessageTooLarge { limit_bytes: usize },
    /// A request in a form the server does not take (`UNSUPPORTED`).
    #[error("{message}")]
    Unsupported { message: String },
    /// A dependency (the database) is unreachable or overloaded; worth retrying.
    #[error("{message}")]
    Unavailable { message: String },
    /// A bug or an unexpected storage failure. The message is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        let violation = FieldViolation::new(field, description);
        Self::InvalidArgument {
            reason: Reason::InvalidArgument.as_str(),
            message: format!("{}: {}", violation.field, violation.description),
            violations: vec![violation],
        }
    }

    pub fn invalid_many(
        reason: impl Into<&'static str>,
        message: impl Into<String>,
        violations: Vec<FieldViolation>,
    ) -> Self {
        Self::InvalidArgument {
            reason: reason.into(),
            message: message.into(),
            violations,
        }
    }

    pub fn not_found(resource: impl Into<String>) -> Self {
        Self::NotFound {
            resource: resource.into(),
        }
    }

    pub fn already_exists(resource: impl Into<String>) -> Self {
        Self::AlreadyExists {
            resource: resource.into(),
        }
    }

    pub fn precondition(reason: impl Into<&'static str>, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason: reason.into(),
            message: message.into(),
            metadata: BTreeMap::new(),
        }
    }

    pub fn etag_mismatch(current_etag: &str) -> Self {
        Self::with_metadata(
            Reason::EtagMismatch,
            "etag does not match the current one; read the resource and retry",
            [("current_etag", current_etag.to_owned())],
        )
    }

    /// An error of `reason`, of the kind its [`Reason::code`] says. For NOT_FOUND and
    /// ALREADY_EXISTS the message names the resource; a quota's is its one violation.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self::with_metadata(reason, message, [])
    }

    /// [`Error::new`] with ErrorInfo metadata, which FAILED_PRECONDITION, ABORTED and
    /// OUT_OF_RANGE carry (the other kinds have their own details and drop it).
    pub fn with_metadata<const N: usize>(
        reason: Reason,
        message: impl Into<String>,
        metadata: [(&str, String); N],
    ) -> Self {
        let message = message.into();
        let metadata = metadata
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        let wire = reason.as_str();
        match reason.code() {
            Code::InvalidArgument => Self::invalid_many(reason, message, Vec::new()),
            Code::NotFound => Self::not_found(message),
            Code::AlreadyExists => Self::already_exists(message),
            Code::PermissionDenied => Self::PermissionDenied {
                reason: wire,
                message,
            },
            Code::Unauthenticated => Self::Unauthenticated {
                reason: wire,
                message,
            },
            Code::ResourceExhausted => Self::QuotaExceeded {
                violations: vec![QuotaViolation {
                    subject: String::new(),
                    description: message,
                }],
            },
            Code::FailedPrecondition => Self::FailedPrecondition {
                reason: wire,
                message,
                metadata,
            },
            Code::Aborted => Self::Aborted {
                reason: wire,
                message,
                metadata,
            },
            Code::OutOfRange => Self::OutOfRange {
                reason: wire,
                message,
                metadata,
            },
            Code::Unimplemented => Self::Unsupported { message },
            Code::Unavailable => Self::Unavailable { message },
            Code::Internal => Self::Internal(message),
        }
    }

    /// The canonical code of this error.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::Aborted { .. } => Code::Aborted,
            Self::OutOfRange { .. } => Code::OutOfRange,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::Unauthenticated { .. } => Code::Unauthenticated,
            Self::QuotaExceeded { .. } | Self::MessageTooLarge { .. } => Code::ResourceExhausted,
            Self::Unsupported { .. } => Code::Unimplemented,
            Self::Unavailable { .. } => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::Internal(message.to_string())
    }

    /// The stable reason sent in `google.rpc.ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument { reason, .. }
            | Self::FailedPrecondition { reason, .. }
            | Self::Aborted { reason, .. }
            | Self::OutOfRange { reason, .. }
            | Self::PermissionDenied { reason, .. }
            | Self::Unauthenticated { reason, .. } => reason,
            Self::NotFound { .. } => Reason::ResourceNotFound.as_str(),
            Self::AlreadyExists { .. } => Reason::ResourceAlreadyExists.as_str(),
            Self::QuotaExceeded { .. } => Reason::QuotaExceeded.as_str(),
            Self::MessageTooLarge { .. } => Reason::MessageTooLarge.as_str(),
            Self::Unsupported { .. } => Reason::Unsupported.as_str(),
            Self::Unavailable { .. } => Reason::Unavailable.as_str(),
            Self::Internal(_) => Reason::Internal.as_str(),
        }
    }
}
