//! OTLP protobuf written straight from the SDK's span data: a finished span becomes the
//! bytes of one `Span` message (opentelemetry/proto/trace/v1/trace.proto) with no
//! intermediate structs, and a batch of such spans becomes an `ExportTraceServiceRequest`
//! around them, whose resource and scopes are encoded once per batch. The fields are
//! those `opentelemetry_proto`'s conversion fills, with proto3's defaults left out as
//! prost leaves them out.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{SpanContext, SpanId, SpanKind, Status},
};
use opentelemetry_sdk::{Resource, trace::SpanData};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// `Span.flags`: the W3C trace flags, and whether the parent's remoteness is known (always)
/// and true.
pub(super) const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
pub(super) const CONTEXT_IS_REMOTE: u32 = 0x200;

/// Appends `ScopeSpans.spans` field 2: one `Span` message.
pub fn span(data: &SpanData, buf: &mut Vec<u8>) {
    // A span takes 128 bytes or more: room for a two-byte length.
    nested_in::<2>(2, buf, |buf| span_fields(data, buf));
}

fn span_fields(data: &SpanData, buf: &mut Vec<u8>) {
    context_ids(&data.span_context, buf);
    if data.parent_span_id != SpanId::INVALID {
        bytes(4, &data.parent_span_id.to_bytes(), buf);
    }
    string(5, &data.name, buf);
    varint(6, u64::from(kind(&data.span_kind)), buf);
    fixed64(7, nanos(data.start_time), buf);
    fixed64(8, nanos(data.end_time), buf);
    attributes(9, &data.attributes, buf);
    varint(10, u64::from(data.dropped_attributes_count), buf);
    for event in data.events.iter() {
        nested(11, buf, |buf| {
            fixed64(1, nanos(event.timestamp), buf);
            string(2, &event.name, buf);
            attributes(3, &event.attributes, buf);
            varint(4, u64::from(event.dropped_attributes_count), buf);
        });
    }
    varint(12, u64::from(data.events.dropped_count), buf);
    for link in data.links.iter() {
        nested(13, buf, |buf| {
            context_ids(&link.span_context, buf);
            attributes(4, &link.attributes, buf);
            varint(5, u64::from(link.dropped_attributes_count), buf);
            fixed32(
                6,
                flags(&link.span_context, link.span_context.is_remote()),
                buf,
            );
        });
    }
    varint(14, u64::from(data.links.dropped_count), buf);
    nested(15, buf, |buf| match &data.status {
        Status::Unset => {}
        Status::Ok => varint(3, 1, buf),
        Status::Error { description } => {
            string(2, description, buf);
            varint(3, 2, buf);
        }
    });
    fixed32(
        16,
        flags(&data.span_context, data.parent_span_is_remote),
        buf,
    );
}

/// Fields 1-3 of a `Span` and of a `Link`: trace id, span id, trace state.
fn context_ids(context: &SpanContext, buf: &mut Vec<u8>) {
    bytes(1, &context.trace_id().to_bytes(), buf);
    bytes(2, &context.span_id().to_bytes(), buf);
    let state = context.trace_state().header();
    string(3, &state, buf);
}

fn flags(context: &SpanContext, remote: bool) -> u32 {
    let mut flags = u32::from(context.trace_flags().to_u8()) | CONTEXT_HAS_IS_REMOTE;
    if remote {
        flags |= CONTEXT_IS_REMOTE;
    }
    flags
}

fn kind(kind: &SpanKind) -> u32 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The `Resource` message (attributes in the resource's order).
pub fn resource(resource: &Resource) -> Vec<u8> {
    let mut buf = Vec::new();
    for (key, value) in resource.iter() {
        nested(1, &mut buf, |buf| key_value(key.as_str(), value, buf));
    }
    buf
}

/// The `InstrumentationScope` message.
fn scope(scope: &InstrumentationScope, buf: &mut Vec<u8>) {
    string(1, scope.name(), buf);
    string(2, scope.version().unwrap_or_default(), buf);
    for kv in scope.attributes() {
        nested(3, buf, |buf| key_value(kv.key.as_str(), &kv.value, buf));
    }
}

/// An `ExportTraceServiceRequest` of one resource (`resource`, encoded by [`resource`],
/// and its schema URL) whose spans, grouped by scope, are already encoded by [`span`].
pub fn request<'a>(
    resource: &[u8],
    resource_schema: Option<&str>,
    scopes: impl IntoIterator<Item = (&'a InstrumentationScope, &'a [u8])>,
) -> Vec<u8> {
    let scopes: Vec<_> = scopes.into_iter().collect();
    let size = resource.len() + scopes.iter().map(|(_, s)| s.len() + 64).sum::<usize>();
    let mut buf = Vec::with_capacity(size + 64);
    nested(1, &mut buf, |buf| {
        nested(1, buf, |buf| buf.extend_from_slice(resource));
        for (instrumentation, spans) in scopes {
            nested(2, buf, |buf| {
                nested(1, buf, |buf| scope(instrumentation, buf));
                buf.extend_from_slice(spans);
                string(3, instrumentation.schema_url().unwrap_or_default(), buf);
            });
        }
        string(3, resource_schema.unwrap_or_default(), buf);
    });
    buf
}

pub(super) fn attributes(tag: u32, attributes: &[KeyValue], buf: &mut Vec<u8>) {
    for kv in attributes {
        nested(tag, buf, |buf| key_value(kv.key.as_str(), &kv.value, buf));
    }
}

/// A `KeyValue` message's fields.
pub(super) fn key_value(key: &str, value: &Value, buf: &mut Vec<u8>) {
    string(1, key, buf);
    if let Value::String(s) = value {
        // The usual value, its length known in advance.
        let s = s.as_str().as_bytes();
        key_byte(2, WireType::LengthDelimited, buf);
        length(1 + varint_len(s.len()) + s.len(), buf);
        delimited(1, s, buf);
    } else {
        nested(2, buf, |buf| any_value(value, buf));
    }
}

/// An `AnyValue` message's fields: its one value, written even when it is the default.
fn any_value(value: &Value, buf: &mut Vec<u8>) {
    match value {
        Value::String(s) => delimited(1, s.as_str().as_bytes(), buf),
        Value::Bool(b) => always_varint(2, u64::from(*b), buf),
        Value::I64(n) => always_varint(3, *n as u64, buf),
        Value::F64(x) => {
            key_byte(4, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&x.to_le_bytes());
        }
        Value::Array(array) => nested(5, buf, |buf| array_values(array, buf)),
        other => delimited(1, other.as_str().as_bytes(), buf),
    }
}

/// An `ArrayValue` message's fields: each element an `AnyValue`.
fn array_values(array: &Array, buf: &mut Vec<u8>) {
    fn each<T>(values: &[T], buf: &mut Vec<u8>, value: impl Fn(&T) -> Value) {
        for v in values {
            nested(1, buf, |buf| any_value(&value(v), buf));
        }
    }
    match array {
        Array::Bool(values) => each(values, buf, |v| Value::Bool(*v)),
        Array::I64(values) => each(values, buf, |v| Value::I64(*v)),
        Array::F64(values) => each(values, buf, |v| Value::F64(*v)),
        Array::String(values) => each(values, buf, |v| Value::String(v.clone())),
        _ => {}
    }
}

/// A length-delimited field whose contents `write` appends: one byte is kept for the
/// length, and the contents move only in the rare case that it needs more.
pub(super) fn nested(tag: u32, buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    nested_in::<1>(tag, buf, write);
}

/// [`nested`] with `N` bytes kept for the length.
pub(super) fn nested_in<const N: usize>(
    tag: u32,
    buf: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>),
) {
    key_byte(tag, WireType::LengthDelimited, buf);
    let at = buf.len();
    buf.extend_from_slice(&[0; N]);
    write(buf);
    let len = buf.len() - at - N;
    if varint_len(len) == N {
        encode_varint(len as u64, &mut &mut buf[at..at + N]);
    } else {
        let mut prefix = Vec::with_capacity(10);
        encode_varint(len as u64, &mut prefix);
        buf.splice(at..at + N, prefix);
    }
}

/// A field's key: one byte for the tags used here (under 16).
#[inline]
fn key_byte(tag: u32, wire: WireType, buf: &mut Vec<u8>) {
    if tag < 16 {
        buf.push(((tag << 3) | wire as u32) as u8);
    } else {
        encode_key(tag, wire, buf);
    }
}

#[inline]
fn length(len: usize, buf: &mut Vec<u8>) {
    if len < 0x80 {
        buf.push(len as u8);
    } else {
        encode_varint(len as u64, buf);
    }
}

#[inline]
fn varint_len(value: usize) -> usize {
    encoded_len_varint(value as u64)
}

fn delimited(tag: u32, value: &[u8], buf: &mut Vec<u8>) {
    key_byte(tag, WireType::LengthDelimited, buf);
    length(value.len(), buf);
    buf.extend_from_slice(value);
}

pub(super) fn bytes(tag: u32, value: &[u8], buf: &mut Vec<u8>) {
    if !value.is_empty() {
        delimited(tag, value, buf);
    }
}

pub(super) fn string(tag: u32, value: &str, buf: &mut Vec<u8>) {
    bytes(tag, value.as_bytes(), buf);
}

fn always_varint(tag: u32, value: u64, buf: &mut Vec<u8>) {
    key_byte(tag, WireType::Varint, buf);
    if value < 0x80 {
        buf.push(value as u8);
    } else {
        encode_varint(value, buf);
    }
}

pub(super) fn varint(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        always_varint(tag, value, buf);
    }
}

pub(super) fn fixed64(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        key_byte(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

pub(super) fn fixed32(tag: u32, value: u32, buf: &mut Vec<u8>) {
    if value != 0 {
        key_byte(tag, WireType::ThirtyTwoBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::{
        StringValue,
        trace::{Event, Link, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_proto::{
        tonic::{collector::trace::v1::ExportTraceServiceRequest, trace::v1::ScopeSpans},
        transform::{
            common::tonic::ResourceAttributesWithSchema,
            trace::tonic::group_spans_by_resource_and_scope,
        },
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use super::*;

    fn every_kind_of_value() -> Vec<KeyValue> {
        vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("empty", ""),
            KeyValue::new("code.lineno", 42_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("negative", -7_i64),
            KeyValue::new("yes", true),
            KeyValue::new("no", false),
            KeyValue::new("ratio", 0.25),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -2, 0]))),
            KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, 0.0]))),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec![StringValue::from("a"), "".into()])),
            ),
            KeyValue::new("long", "x".repeat(300)),
        ]
    }

    fn context(trace: u128, span: u64, remote: bool, state: TraceState) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            state,
        )
    }

    fn span_data(parent: u64, status: Status, kind: SpanKind) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_764_547_200_123_456_789);
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "retry",
            start + Duration::from_micros(5),
            every_kind_of_value(),
            1,
        ));
        events.dropped_count = 2;
        let mut links = SpanLinks::default();
        let state = TraceState::from_key_value([("vendor", "value")]).unwrap();
        links.links.push(Link::new(
            context(7, 8, true, state.clone()),
            vec![KeyValue::new("link", 1_i64)],
            3,
        ));
        links.dropped_count = 4;
        SpanData {
            span_context: context(
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                0x00f0_67aa,
                false,
                state,
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: parent != 0,
            span_kind: kind,
            name: "agentry.v1.RegistryService/CreateWorkspace".into(),
            start_time: start,
            end_time: start + Duration::from_millis(3),
            attributes: every_kind_of_value(),
            dropped_attributes_count: 5,
            events,
            links,
            status,
            instrumentation_scope: InstrumentationScope::builder("agentry")
                .with_version("1.2")
                .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
                .with_attributes([KeyValue::new("scope.attr", "s")])
                .build(),
        }
    }

    fn samples() -> Vec<SpanData> {
        // Under 128 bytes, and over 16 KiB: a span's length in one byte, and in three.
        let mut small = span_data(0, Status::Unset, SpanKind::Internal);
        small.attributes.clear();
        small.events = SpanEvents::default();
        small.links = SpanLinks::default();
        small.name = "s".into();
        let mut large = span_data(1, Status::Unset, SpanKind::Server);
        large
            .attributes
            .push(KeyValue::new("large", "y".repeat(20_000)));
        vec![
            small,
            large,
            span_data(
                0x1234,
                Status::error("NOT_FOUND: no workspace"),
                SpanKind::Server,
            ),
            span_data(0, Status::Unset, SpanKind::Client),
            span_data(9, Status::Ok, SpanKind::Internal),
            span_data(9, Status::Unset, SpanKind::Producer),
            span_data(9, Status::Unset, SpanKind::Consumer),
        ]
    }

    #[test]
    fn a_span_decodes_as_opentelemetry_protos_own_conversion() {
        for data in samples() {
            let mut buf = Vec::new();
            span(&data, &mut buf);
            let decoded = ScopeSpans::decode(&buf[..]).expect("a ScopeSpans.spans field");
            let expected = opentelemetry_proto::tonic::trace::v1::Span::from(data.clone());
            assert_eq!(decoded.spans, vec![expected], "{:?}", data.status);
        }
    }

    #[test]
    fn a_request_decodes_as_the_otlp_exporters_grouping() {
        let resource = Resource::builder()
            .with_service_name("agentry")
            .with_attribute(KeyValue::new("service.version", "0.2.0"))
            .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
            .build();
        let spans = samples();
        let mut encoded = Vec::new();
        for data in &spans {
            span(data, &mut encoded);
        }
        let scope = &spans[0].instrumentation_scope;
        let bytes = request(
            &self::resource(&resource),
            resource.schema_url(),
            [(scope, &encoded[..])],
        );
        let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let expected = group_spans_by_resource_and_scope(
            spans,
            &ResourceAttributesWithSchema::from(&resource),
        );
        assert_eq!(decoded.resource_spans, expected);
    }
}
