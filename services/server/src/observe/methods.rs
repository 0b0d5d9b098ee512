//! The methods the server serves, known in advance from its descriptor sets, each with
//! its metric handles: a call only looks its method up and bumps atomics.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram};
use opentelemetry::KeyValue;
use prost::Message as _;
use tonic::Code;

use crate::telemetry::{MethodSpan, Spans};

/// Canonical code names, indexed by code number: the `code` label and log field.
pub(super) const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The methods whose response is a stream of `agentry_streams_open{kind}`.
pub const STREAM_KINDS: &[(&str, &str)] = &[
    ("WatchContext", "watch_context"),
    ("StreamRunEvents", "run_events"),
];

/// One method the server serves, with its metric handles.
pub(super) struct Method {
    /// `/package.Service/Method`.
    pub(super) path: &'static str,
    pub(super) service: &'static str,
    pub(super) method: &'static str,
    /// The server span's name and RPC attributes, encoded once (and kept, as the names
    /// are).
    pub(super) span: &'static MethodSpan,
    /// `agentry.*`: logged at info; health and reflection at debug.
    pub(super) api: bool,
    pub(super) stream: Option<Gauge>,
    /// By code number; registered on first use, so that only codes that happened and
    /// methods that were called are listed.
    requests: [OnceLock<Counter>; 17],
    duration: OnceLock<Histogram>,
}

impl Method {
    /// `package.Service/Method`: the span's name and the log line's `method`.
    pub(super) fn name(&self) -> &'static str {
        &self.path[1..]
    }

    pub(super) fn requests(&self, code: Code) -> &Counter {
        let code = code as usize % CODE_NAMES.len();
        self.requests[code].get_or_init(|| {
            metrics::counter!(
                "agentry_rpc_requests_total",
                "service" => self.service, "method" => self.method, "code" => CODE_NAMES[code]
            )
        })
    }

    pub(super) fn duration(&self) -> &Histogram {
        self.duration.get_or_init(|| {
            metrics::histogram!(
                "agentry_rpc_duration_seconds",
                "service" => self.service, "method" => self.method
            )
        })
    }
}

/// Observation settings and the method table, shared by every call.
pub struct Observer {
    /// Sorted by path.
    pub(super) methods: Vec<Method>,
    /// Where calls of paths that name no method are counted.
    unknown: usize,
    pub(super) metrics: bool,
    /// Set when spans are exported: where the server spans go.
    pub(super) spans: Option<Spans>,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

impl Observer {
    /// The methods of every served descriptor set. Metric handles bind to the recorder
    /// installed now, so this runs after [`crate::metrics::install`].
    pub fn new(metrics: bool, spans: Option<Spans>) -> Self {
        let sets = [
            agentry_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut names = Vec::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(set).expect("valid descriptors");
            for file in set.file {
                for service in &file.service {
                    let full = format!("{}.{}", file.package(), service.name());
                    for method in &service.method {
                        names.push((full.clone(), method.name().to_owned()));
                    }
                }
            }
        }
        names.push(("unknown".into(), "unknown".into()));
        let mut methods: Vec<Method> = names
            .into_iter()
            .map(|(service, method)| {
                let (service, method) = (leak(&service), leak(&method));
                let stream = STREAM_KINDS
                    .iter()
                    .find(|(m, _)| *m == method && service.starts_with("agentry."))
                    .map(|(_, kind)| metrics::gauge!("agentry_streams_open", "kind" => *kind));
                let path = leak(&format!("/{service}/{method}"));
                Method {
                    path,
                    span: Box::leak(Box::new(MethodSpan::new(
                        &path[1..],
                        &[
                            KeyValue::new("rpc.system", "grpc"),
                            KeyValue::new("rpc.service", service),
                            KeyValue::new("rpc.method", method),
                        ],
                    ))),
                    api: service.starts_with("agentry."),
                    stream,
                    requests: Default::default(),
                    duration: OnceLock::new(),
                    service,
                    method,
                }
            })
            .collect();
        methods.sort_by(|a, b| a.path.cmp(b.path));
        methods.dedup_by(|a, b| a.path == b.path);
        let unknown = methods
            .iter()
            .position(|m| m.path == "/unknown/unknown")
            .expect("the unknown method is listed");
        Self {
            methods,
            unknown,
            metrics,
            spans,
        }
    }

    pub(super) fn find(&self, path: &str) -> usize {
        self.methods
            .binary_search_by(|m| m.path.cmp(path))
            .unwrap_or(self.unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_stream_of_the_api_has_a_kind() {
        let set = prost_types::FileDescriptorSet::decode(agentry_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptors");
        let mut streams: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .flat_map(|s| &s.method)
            .filter(|m| m.server_streaming())
            .map(|m| m.name().to_owned())
            .collect();
        streams.sort();
        let mut kinds: Vec<String> = STREAM_KINDS.iter().map(|(m, _)| m.to_string()).collect();
        kinds.sort();
        assert_eq!(streams, kinds);
    }

    #[test]
    fn every_served_method_is_found_and_other_paths_are_unknown() {
        let observer = Observer::new(false, None);
        assert!(observer.methods.len() > 40);
        for method in &observer.methods {
            assert_eq!(
                observer.methods[observer.find(method.path)].path,
                method.path
            );
        }
        for path in ["/agentry.v1.Nope/Nope", "/", "/zzz/zzz", "/a/b"] {
            assert_eq!(observer.methods[observer.find(path)].method, "unknown");
        }
        let read = observer.find("/agentry.v1.ContextService/ReadContext");
        assert_eq!(observer.methods[read].method, "ReadContext");
        assert_eq!(observer.methods[read].service, "agentry.v1.ContextService");
    }
}
