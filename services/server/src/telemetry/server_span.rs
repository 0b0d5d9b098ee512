//! A call's server span, built without the SDK: its ids, its caller's trace context
//! and its start time are all it holds while the call runs, and it is encoded into
//! OTLP protobuf straight into the export queue when the call ends ([`ServerSpan::end`]).
//! The SDK's span took a builder, a vector of attributes cloned per call, a sampler, an
//! id generator, a mutex to set the status code under and a conversion at its end: a
//! few thousand instructions per call on the cores that serve calls. The bytes are
//! those the SDK's span encodes to (a test compares them).
//!
//! The call runs in this span's trace ([`agentry_core::trace`]): the store's spans find
//! their parent there.

use std::{
    cell::Cell,
    collections::hash_map::RandomState,
    hash::{BuildHasher as _, Hasher as _},
    str::FromStr as _,
    sync::LazyLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agentry_core::trace::TraceParent;
use opentelemetry::{
    KeyValue, Value,
    trace::{TraceFlags, TraceId, TraceState},
};

use super::encode::{self, CONTEXT_HAS_IS_REMOTE, CONTEXT_IS_REMOTE};

/// `Span.kind` SPAN_KIND_SERVER.
const KIND_SERVER: u64 = 2;

/// A caller's W3C trace context (`traceparent`, `tracestate`).
#[derive(Debug, PartialEq)]
pub struct Caller {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
    pub trace_state: TraceState,
}

impl Caller {
    /// The trace id, as the log line shows it.
    pub fn trace_id(&self) -> String {
        TraceId::from_bytes(self.trace_id).to_string()
    }

    /// The caller's context from its `traceparent` (and `tracestate`) header values, when
    /// valid by the W3C Trace Context rules; an invalid one is ignored, as the
    /// specification asks.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let version = u8::from_str_radix(hex_field(version, 2)?, 16).ok()?;
        // Version 00 has exactly four fields; later versions may add more.
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let trace_id = u128::from_str_radix(hex_field(trace, 32)?, 16).ok()?;
        let span_id = u64::from_str_radix(hex_field(span, 16)?, 16).ok()?;
        let flags = u8::from_str_radix(hex_field(flags, 2)?, 16).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        let trace_state = tracestate
            .and_then(|state| TraceState::from_str(state).ok())
            .unwrap_or_default();
        Some(Self {
            trace_id: trace_id.to_be_bytes(),
            span_id: span_id.to_be_bytes(),
            sampled: flags & 1 == 1,
            trace_state,
        })
    }
}

/// `field` when it is `len` lowercase hex digits.
fn hex_field(field: &str, len: usize) -> Option<&str> {
    (field.len() == len
        && field
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(field)
}

/// What every span of one method shares, encoded once: its name, its kind and its RPC
/// attributes (fields 5, 6 and 9 of a `Span`), copied into each span as they are.
pub struct MethodSpan {
    /// Fields 5 and 6: the name and SPAN_KIND_SERVER.
    name_and_kind: Vec<u8>,
    /// The attributes, each a field 9.
    encoded_attributes: Vec<u8>,
}

impl MethodSpan {
    pub fn new(name: &str, attributes: &[KeyValue]) -> Self {
        let mut name_and_kind = Vec::new();
        encode::string(5, name, &mut name_and_kind);
        encode::varint(6, KIND_SERVER, &mut name_and_kind);
        let mut encoded_attributes = Vec::new();
        encode::attributes(9, attributes, &mut encoded_attributes);
        Self {
            name_and_kind,
            encoded_attributes,
        }
    }
}

/// `rpc.grpc.status_code` as a `Span.attributes` field, for each code (0 to 16), encoded
/// once.
static STATUS_CODES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    (0..17)
        .map(|code| {
            let mut buf = Vec::new();
            status_code(code, &mut buf);
            buf
        })
        .collect()
});

fn status_code(code: i64, buf: &mut Vec<u8>) {
    encode::nested(9, buf, |buf| {
        encode::key_value("rpc.grpc.status_code", &Value::I64(code), buf)
    });
}

/// A call's span while the call runs.
pub struct ServerSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// The caller's span, when the call continues the caller's trace.
    parent: Option<[u8; 8]>,
    trace_state: TraceState,
    /// Its name and the RPC attributes known when the call starts.
    method: &'static MethodSpan,
    start: SystemTime,
}

impl ServerSpan {
    /// A sampled span of `method`, in the caller's trace or in a new one.
    pub fn start(method: &'static MethodSpan, caller: Option<Caller>) -> Self {
        let (trace_id, parent, trace_state) = match caller {
            Some(caller) => (caller.trace_id, Some(caller.span_id), caller.trace_state),
            None => (new_trace_id(), None, TraceState::default()),
        };
        Self {
            trace_id,
            span_id: nonzero_random().to_be_bytes(),
            parent,
            trace_state,
            method,
            start: SystemTime::now(),
        }
    }

    /// The trace the call runs in: this span, for the store's spans to take as their
    /// parent.
    pub fn parent(&self) -> TraceParent {
        let state = self.trace_state.header();
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.span_id,
            trace_state: (!state.is_empty()).then(|| state.into()),
        }
    }

    /// The trace id, as the log line shows it.
    pub fn trace_id(&self) -> String {
        TraceId::from_bytes(self.trace_id).to_string()
    }

    /// Appends the finished span, `elapsed` after its start, as a `ScopeSpans.spans`
    /// field: with `rpc.grpc.status_code`, and an error status with `error` when the
    /// call failed.
    pub fn end(&self, elapsed: Duration, code: i64, error: Option<&str>, buf: &mut Vec<u8>) {
        let start = nanos(self.start);
        let end = start.saturating_add(elapsed.as_nanos() as u64);
        encode::nested_in::<2>(2, buf, |buf| {
            encode::bytes(1, &self.trace_id, buf);
            encode::bytes(2, &self.span_id, buf);
            encode::string(3, &self.trace_state.header(), buf);
            if let Some(parent) = &self.parent {
                encode::bytes(4, parent, buf);
            }
            buf.extend_from_slice(&self.method.name_and_kind);
            encode::fixed64(7, start, buf);
            encode::fixed64(8, end, buf);
            buf.extend_from_slice(&self.method.encoded_attributes);
            match STATUS_CODES.get(code as usize) {
                Some(encoded) => buf.extend_from_slice(encoded),
                None => status_code(code, buf),
            }
            encode::nested(15, buf, |buf| {
                if let Some(error) = error {
                    encode::string(2, error, buf);
                    encode::varint(3, 2, buf);
                }
            });
            let mut flags = u32::from(TraceFlags::SAMPLED.to_u8()) | CONTEXT_HAS_IS_REMOTE;
            if self.parent.is_some() {
                flags |= CONTEXT_IS_REMOTE;
            }
            encode::fixed32(16, flags, buf);
        });
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn new_trace_id() -> [u8; 16] {
    let high = u128::from(random());
    let low = u128::from(nonzero_random());
    ((high << 64) | low).to_be_bytes()
}

fn nonzero_random() -> u64 {
    loop {
        let value = random();
        if value != 0 {
            return value;
        }
    }
}

/// A draw of a per-thread splitmix64 generator seeded from the OS (through
/// `RandomState`): ids need to be unique, not secret.
pub(super) fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish());
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

#[cfg(test)]
mod tests;
