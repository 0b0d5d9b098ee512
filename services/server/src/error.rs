//! The server's side of the one error mapping ([`agentry_proto::status`]): statuses of
//! handler errors, logged where they say something is wrong with the server, and the
//! answer to tonic's own refusal of an oversized request.

use agentry_core::Error;
use agentry_proto::status;
use tonic::{Code, Status};

/// The status of a domain error; an unavailable dependency and an internal error are
/// logged (the latter's message is never sent).
pub fn to_status(error: Error) -> Status {
    match &error {
        Error::Unavailable { message } => tracing::warn!(%message, "dependency unavailable"),
        Error::Internal(message) => tracing::error!(%message, "internal error"),
        _ => {}
    }
    status::of(error)
}

/// The status of [`Error::Unavailable`] without its log line: for a server that is
/// going away (a stream ended by shutdown), which is no failing dependency.
pub fn unavailable(message: &str) -> Status {
    status::of(Error::Unavailable {
        message: message.to_owned(),
    })
}

/// Maps tonic's own refusal of a request over the message size limit (OUT_OF_RANGE
/// "decoded message length too large", no details) to what gRPC's convention and the
/// README promise: RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE` with the limit in the
/// ErrorInfo. tonic checks the length prefix before it buffers the message, so the
/// check stays where it is and only the answer changes; a response carrying any other
/// status passes untouched. Every refusal of tonic's is a trailers-only response whose
/// extensions hold its `Status`, which is what this looks at.
pub fn message_too_large<B: Default>(
    limit: usize,
) -> impl Fn(http::Response<B>) -> http::Response<B> + Clone + Send + Sync + 'static {
    const TONIC_MESSAGE: &str = "Error, decoded message length too large";
    move |response| {
        let refused = response.extensions().get::<Status>().is_some_and(|s| {
            s.code() == Code::OutOfRange
                && s.details().is_empty()
                && s.message().starts_with(TONIC_MESSAGE)
        });
        if !refused {
            return response;
        }
        too_large(limit).into_http()
    }
}

/// RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE`: a request over `limit` bytes.
pub fn too_large(limit: usize) -> Status {
    status::of(Error::MessageTooLarge { limit_bytes: limit })
}
