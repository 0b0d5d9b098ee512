//! Responses encoded ahead of time: the seam of ReadContext's cache, which keeps each
//! version's response encoded once and writes it out as it is. Requests decode as every
//! other request does ([`AgentryDecoder`]).

use std::marker::PhantomData;

use tonic::{
    Status,
    codec::{Codec, EncodeBuf, Encoder},
    codegen::Bytes,
};
use tonic_prost::ProstCodec;

use crate::codec::AgentryDecoder;

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
    U: prost::Message + prost::Name + Default + Send + 'static,
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
