use std::sync::LazyLock;

use opentelemetry::{
    InstrumentationScope,
    trace::{SpanContext, SpanId, SpanKind, Status},
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::*;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_valid_traceparent_is_the_callers_context() {
    let caller = Caller::parse(TRACEPARENT, Some("vendor=value")).unwrap();
    assert_eq!(
        TraceId::from_bytes(caller.trace_id).to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        SpanId::from_bytes(caller.span_id).to_string(),
        "00f067aa0ba902b7"
    );
    assert!(caller.sampled);
    assert_eq!(caller.trace_state.header(), "vendor=value");
    let unsampled = Caller::parse(&TRACEPARENT.replace("-01", "-00"), None).unwrap();
    assert!(!unsampled.sampled);
    // A later version may carry more fields.
    assert!(
        Caller::parse(
            &format!("{}-extra", TRACEPARENT.replacen("00", "01", 1)),
            None
        )
        .is_some()
    );
}

#[test]
fn an_invalid_traceparent_is_ignored() {
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        assert_eq!(Caller::parse(bad, None), None, "{bad:?}");
    }
}

const NAME: &str = "agentry.v1.RegistryService/CreateWorkspace";

fn attributes() -> Vec<KeyValue> {
    vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", "agentry.v1.RegistryService"),
        KeyValue::new("rpc.method", "CreateWorkspace"),
    ]
}

static METHOD: LazyLock<MethodSpan> = LazyLock::new(|| MethodSpan::new(NAME, &attributes()));

/// The SDK's span data of `span`, ended as `end` ends it.
fn as_sdk_data(span: &ServerSpan, elapsed: Duration, code: i64, error: Option<&str>) -> SpanData {
    let mut attributes = attributes();
    attributes.push(KeyValue::new("rpc.grpc.status_code", code));
    let start = UNIX_EPOCH + Duration::from_nanos(nanos(span.start));
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(span.trace_id),
            SpanId::from_bytes(span.span_id),
            TraceFlags::SAMPLED,
            false,
            span.trace_state.clone(),
        ),
        parent_span_id: span.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: span.parent.is_some(),
        span_kind: SpanKind::Server,
        name: NAME.into(),
        start_time: start,
        end_time: start + elapsed,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: error.map_or(Status::Unset, |e| Status::error(e.to_owned())),
        instrumentation_scope: InstrumentationScope::builder("agentry").build(),
    }
}

#[test]
fn a_server_span_encodes_as_the_sdks_span_of_the_same_call() {
    let callers = [
        None,
        Caller::parse(TRACEPARENT, None),
        Caller::parse(TRACEPARENT, Some("vendor=value,other=x")),
    ];
    for caller in callers {
        let span = ServerSpan::start(&METHOD, caller);
        // A code beyond the canonical ones too (encoded as it ends).
        for (code, error) in [(0, None), (5, Some("NOT_FOUND: no workspace")), (42, None)] {
            let elapsed = Duration::from_micros(1234);
            let mut ours = Vec::new();
            span.end(elapsed, code, error, &mut ours);
            let mut sdk = Vec::new();
            encode::span(&as_sdk_data(&span, elapsed, code, error), &mut sdk);
            assert_eq!(ours, sdk, "code {code}");
        }
    }
}

#[test]
fn a_span_continues_its_callers_trace_or_starts_a_new_one() {
    let caller = Caller::parse(TRACEPARENT, None).unwrap();
    let (trace, parent) = (caller.trace_id, caller.span_id);
    let span = ServerSpan::start(&METHOD, Some(caller));
    assert_eq!((span.trace_id, span.parent), (trace, Some(parent)));
    assert_ne!(span.span_id, [0; 8]);
    let parent = span.parent();
    assert_eq!((parent.trace_id, parent.span_id), (trace, span.span_id));
    assert_eq!(parent.trace_state, None);
    let with_state = Caller::parse(TRACEPARENT, Some("vendor=value")).unwrap();
    let span = ServerSpan::start(&METHOD, Some(with_state));
    assert_eq!(span.parent().trace_state.as_deref(), Some("vendor=value"));
    let roots: std::collections::HashSet<_> = (0..1000)
        .map(|_| ServerSpan::start(&METHOD, None).trace_id)
        .collect();
    assert_eq!(roots.len(), 1000);
    assert!(roots.iter().all(|id| *id != [0; 16]));
}
