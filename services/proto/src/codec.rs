//! The protobuf codec of every agentry service: prost's, except that a request that
//! cannot be decoded (malformed bytes, nesting beyond prost's recursion limit of 100,
//! which is about 32 levels of a JSON document in a `Struct`) is INVALID_ARGUMENT with an
//! ErrorInfo, not the INTERNAL that gRPC's convention gives it: the caller sent bad
//! input and should be told so.

use std::marker::PhantomData;

use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::Bytes,
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, Clone, Default)]
pub struct AgentryCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for AgentryCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
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

pub struct AgentryDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for AgentryDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            let mut details = ErrorDetails::new();
            details.set_error_info(
                "MALFORMED_REQUEST",
                "agentry.dev",
                std::collections::HashMap::new(),
            );
            Status::with_error_details(
                Code::InvalidArgument,
                format!(
                    "the request could not be decoded ({}); documents may nest at most 32 levels",
                    status.message()
                ),
                details,
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// For a method whose responses are encoded ahead of time (kept encoded in a cache): the
/// response is a message's encoding, written as it is, and requests decode as with
/// [`AgentryCodec`].
#[derive(Debug, Clone)]
pub struct EncodedCodec<U>(PhantomData<fn() -> U>);

impl<U> Default for EncodedCodec<U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<U> Codec for EncodedCodec<U>
where
    U: prost::Message + Default + Send + 'static,
{
    type Encode = Bytes;
    type Decode = U;
    type Encoder = EncodedEncoder;
    type Decoder = AgentryDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        AgentryDecoder(ProstCodec::<U, U>::default().decoder())
    }
}

/// Writes an encoded message as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use prost::bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}
