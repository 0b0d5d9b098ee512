//! The protobuf codec of every agentry service: prost's, with the decoding side
//! answering for the caller's bad input:
//!
//! - a request holding U+0000 in any string field (a name, a message's content, a key or
//!   a string inside a `Struct` document …) is INVALID_ARGUMENT with a field violation
//!   naming the field path, before any handler runs: Postgres stores no NUL in text or
//!   JSON, and refusing it here on every back end keeps SQLite and Postgres alike. The
//!   walk that looks for it ([`crate::scan`]) is generated from the descriptor set, so
//!   a field added tomorrow is covered, and it only runs on requests that contain a zero
//!   byte at all (a varint, a length or a text holding zero; rare outside numbers);
//! - a request that cannot be decoded is INVALID_ARGUMENT `MALFORMED_REQUEST`, not the
//!   INTERNAL that gRPC's convention gives it, with a message saying what is wrong and
//!   where (truncated, invalid UTF-8, nested deeper than prost's limit of 100 messages,
//!   which is about 32 levels of a JSON document in a `Struct`).
//!
//! Responses (what a client decodes) are never refused for their text: the rule is the
//! server's, for requests, the messages some method takes as input.

use agentry_error::{Error, FieldViolation, Reason};
use prost::bytes::Buf as _;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::scan::{self, Fault, Problem};

#[derive(Debug, Clone, Default)]
pub struct AgentryCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for AgentryCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + prost::Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = AgentryDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        AgentryDecoder(self.0.decoder())
    }
}

pub struct AgentryDecoder<U>(pub(crate) ProstDecoder<U>);

impl<U: prost::Message + prost::Name + Default> Decoder for AgentryDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        // tonic hands over one contiguous buffer; the copy is for any other `Buf`.
        let decoded = if buf.chunk().len() == len {
            let decoded = decode(buf.chunk());
            buf.advance(len);
            decoded
        } else {
            decode(&buf.copy_to_bytes(len))
        };
        decoded.map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Decodes `bytes` as a `U`, refusing a request that holds U+0000 in a string field and
/// explaining bytes that do not decode.
pub fn decode<U: prost::Message + prost::Name + Default>(bytes: &[u8]) -> Result<U, Status> {
    let message = || scan::schema().message(U::PACKAGE, U::NAME);
    // No zero byte, no NUL: most requests skip the walk.
    if bytes.contains(&0)
        && let Some(message) = message().filter(|m| m.is_request)
    {
        scan::schema()
            .check(message, bytes, true)
            .map_err(refusal)?;
    }
    U::decode(bytes).map_err(|error| {
        let found = message().and_then(|m| scan::schema().check(m, bytes, false).err());
        match found {
            Some(fault) => refusal(fault),
            None => malformed(
                format!(
                    "the request could not be decoded: {}",
                    scan::printable(&error.to_string())
                ),
                None,
            ),
        }
    })
}

fn refusal(fault: Fault) -> Status {
    let Fault { problem, path } = fault;
    let subject = if path.is_empty() {
        "the request"
    } else {
        &path
    };
    let description = problem.describe();
    let field = (!path.is_empty()).then(|| (path.clone(), description));
    match problem {
        Problem::Nul => invalid(
            Reason::InvalidArgument,
            format!("{subject} {description}"),
            field,
        ),
        _ => malformed(
            format!("the request could not be decoded: {subject} {description}"),
            field,
        ),
    }
}

fn malformed(message: String, field: Option<(String, &str)>) -> Status {
    invalid(Reason::MalformedRequest, message, field)
}

/// INVALID_ARGUMENT of `reason`, through the one mapping ([`crate::status`]).
fn invalid(reason: Reason, message: String, field: Option<(String, &str)>) -> Status {
    let violations = field
        .map(|(field, description)| FieldViolation::new(field, description))
        .into_iter()
        .collect();
    crate::status::of(Error::invalid_many(reason, message, violations))
}
