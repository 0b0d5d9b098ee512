//! Every reason an error carries, each with the one canonical code it travels with.

/// A canonical gRPC status code, named here so that the domain needs no transport crate;
/// the wire crate maps it one to one (`agentry_proto::status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Unavailable,
    Internal,
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal => $code:ident,)*) => {
        /// The stable UPPER_SNAKE reason of a `google.rpc.ErrorInfo`, which clients may
        /// branch on. Each reason has exactly one [`Code`]: [`Error::new`](super::Error::new)
        /// picks the error's kind from it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in the order of the README's error table.
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The reason as sent on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $wire,)*
                }
            }

            /// The one code this reason is sent with.
            pub const fn code(self) -> Code {
                match self {
                    $(Reason::$variant => Code::$code,)*
                }
            }
        }
    };
}

reasons! {
    /// Malformed input; the field violation names the field.
    InvalidArgument = "INVALID_ARGUMENT" => InvalidArgument,
    /// Bytes that do not decode as the request.
    MalformedRequest = "MALFORMED_REQUEST" => InvalidArgument,
    /// An instance config that its agent's JSON Schema refuses.
    InvalidConfig = "INVALID_CONFIG" => InvalidArgument,
    /// A `config_schema` that is no valid JSON Schema.
    InvalidSchema = "INVALID_SCHEMA" => InvalidArgument,
    InvalidPageToken = "INVALID_PAGE_TOKEN" => InvalidArgument,
    /// A `request_id` used before with another request.
    RequestIdReused = "REQUEST_ID_REUSED" => InvalidArgument,
    InvalidPatch = "INVALID_PATCH" => InvalidArgument,
    DocumentTooLarge = "DOCUMENT_TOO_LARGE" => InvalidArgument,
    MissingCredentials = "MISSING_CREDENTIALS" => Unauthenticated,
    InvalidApiKey = "INVALID_API_KEY" => Unauthenticated,
    ApiKeyRevoked = "API_KEY_REVOKED" => Unauthenticated,
    ApiKeyExpired = "API_KEY_EXPIRED" => Unauthenticated,
    /// A resource name in another workspace than the key's, decided before any lookup.
    WorkspaceMismatch = "WORKSPACE_MISMATCH" => PermissionDenied,
    RoleNotAllowed = "ROLE_NOT_ALLOWED" => PermissionDenied,
    ResourceNotFound = "RESOURCE_NOT_FOUND" => NotFound,
    ResourceAlreadyExists = "RESOURCE_ALREADY_EXISTS" => AlreadyExists,
    InvalidTransition = "INVALID_TRANSITION" => FailedPrecondition,
    HasChildren = "HAS_CHILDREN" => FailedPrecondition,
    InstanceTerminated = "INSTANCE_TERMINATED" => FailedPrecondition,
    AgentDisabled = "AGENT_DISABLED" => FailedPrecondition,
    PatchTestFailed = "PATCH_TEST_FAILED" => FailedPrecondition,
    ContextEmpty = "CONTEXT_EMPTY" => FailedPrecondition,
    SessionBusy = "SESSION_BUSY" => FailedPrecondition,
    StaleTask = "STALE_TASK" => FailedPrecondition,
    RunFinished = "RUN_FINISHED" => FailedPrecondition,
    ApprovalNotPending = "APPROVAL_NOT_PENDING" => FailedPrecondition,
    CancelRequested = "CANCEL_REQUESTED" => FailedPrecondition,
    EtagMismatch = "ETAG_MISMATCH" => Aborted,
    VersionConflict = "VERSION_CONFLICT" => Aborted,
    /// Reading, diffing, rolling back to or watching from a version below the retention
    /// floor: a position outside the stored range, as etcd's `ErrCompacted`.
    VersionCompacted = "VERSION_COMPACTED" => OutOfRange,
    /// A run stream starting past the end of the log.
    SequenceOutOfRange = "SEQUENCE_OUT_OF_RANGE" => OutOfRange,
    QuotaExceeded = "QUOTA_EXCEEDED" => ResourceExhausted,
    MessageTooLarge = "MESSAGE_TOO_LARGE" => ResourceExhausted,
    /// A request the server does not take in that form: a compressed HTTP/JSON body, a
    /// stream called in Connect's unary form.
    Unsupported = "UNSUPPORTED" => Unimplemented,
    Unavailable = "UNAVAILABLE" => Unavailable,
    Internal = "INTERNAL" => Internal,
}

impl From<Reason> for &'static str {
    fn from(reason: Reason) -> Self {
        reason.as_str()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_reason_is_named_once() {
        for (i, a) in Reason::ALL.iter().enumerate() {
            assert!(
                a.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{a:?}"
            );
            for b in &Reason::ALL[i + 1..] {
                assert_ne!(a.as_str(), b.as_str(), "{a:?} and {b:?}");
            }
        }
    }
}
