//! Logs and traces.
//!
//! Logs: `tracing` to stderr, as text or one JSON object per line (`--log-format`),
//! filtered by `RUST_LOG` (default `info`); colour only when stderr is a terminal. Every
//! RPC leaves one line at info (see [`crate::observe`]).
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set, spans are exported over OTLP/gRPC, configured by the standard variables:
//! `OTEL_SERVICE_NAME` (default `agentry`), `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`),
//! `OTEL_EXPORTER_OTLP_HEADERS`, and the batch processor's `OTEL_BSP_*` (the exporter is
//! our own: [`export`], which encodes each span into OTLP protobuf as it ends). W3C
//! `traceparent` headers are continued. Only the server's own spans are exported: the
//! RPC spans ([`ServerSpan`], built without the SDK and encoded as they end) and, within
//! a traced call, the store's transaction and statement spans (built with the
//! OpenTelemetry API and the global tracer provider set up here). Spans are built only
//! while exporting, so with tracing off they cost nothing.
//!
//! The sampler decides before any span is built ([`sampled`]): a call that starts no
//! trace (a root the ratio leaves out, or a caller's unsampled context under a
//! `parentbased_*` sampler) gets no span at all, nor do its statements, so sampling 1 %
//! of calls costs about 1 % of what tracing every call costs. The SDK's sampler, which
//! sees only the store's spans, follows the server span's decision.

use std::{
    io::IsTerminal,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use crate::startup::{Context as _, StartError};

mod encode;
mod export;
mod server_span;
mod settings;
pub use export::Spans;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
pub use server_span::{Caller, MethodSpan, ServerSpan};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

static TRACING: AtomicBool = AtomicBool::new(false);
/// Where the server spans go (see [`spans`]).
static SPANS: Mutex<Option<Spans>> = Mutex::new(None);
/// The instrumentation scope of every span the server exports.
const SCOPE: &str = "agentry";
/// The share of calls without a caller's sampled trace that start one (f64 bits).
static ROOT_RATIO: AtomicU64 = AtomicU64::new(1.0f64.to_bits());
/// Whether a caller's `traceparent` decides instead of the ratio (the `parentbased_*`
/// samplers).
static FOLLOW_CALLER: AtomicBool = AtomicBool::new(true);

/// Whether spans are exported (RPC spans are only built then).
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Where the server spans go, when spans are exported. The server spans are built
/// without the SDK ([`ServerSpan`]); the store's spans are built with the OpenTelemetry
/// API and the global tracer provider, which this module sets up, as children of the
/// server span in the call's OpenTelemetry context.
pub fn spans() -> Option<Spans> {
    SPANS.lock().ok()?.clone()
}

/// Whether a call gets a span: with a caller's trace context under a `parentbased_*`
/// sampler, when the caller's is sampled; otherwise with the configured ratio.
pub fn sampled(caller: Option<&Caller>) -> bool {
    if let Some(caller) = caller
        && FOLLOW_CALLER.load(Ordering::Relaxed)
    {
        return caller.sampled;
    }
    let ratio = f64::from_bits(ROOT_RATIO.load(Ordering::Relaxed));
    if ratio >= 1.0 {
        true
    } else if ratio <= 0.0 {
        false
    } else {
        unit_random() < ratio
    }
}

/// A uniform draw in [0, 1) (sampling needs speed, not secrecy).
fn unit_random() -> f64 {
    (server_span::random() >> 11) as f64 / (1u64 << 53) as f64
}

/// Keeps the exporter alive; flushes spans when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every finished span now.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Sets up logs and traces from the process environment.
pub fn init(format: LogFormat) -> Result<Telemetry, StartError> {
    init_with(format, |name| std::env::var(name).ok())
}

/// Sets up logs and traces, reading the `RUST_LOG` and `OTEL_*` variables through `var`.
pub fn init_with(
    format: LogFormat,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Telemetry, StartError> {
    let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let filter = match var("RUST_LOG") {
        Some(directives) => EnvFilter::try_new(&directives).map_err(|e| {
            let message = format!("RUST_LOG={directives:?} is not a valid filter: {e}");
            StartError::new(StartError::Telemetry, message)
        })?,
        None => EnvFilter::new("info"),
    };
    let ansi = std::io::stderr().is_terminal();
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let (provider, spans) = match tracer_provider(&var)? {
        Some((provider, spans)) => (Some(provider), Some(spans)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .try_init()
        .during(StartError::Telemetry)?;
    TRACING.store(provider.is_some(), Ordering::Relaxed);
    if let Some(provider) = &provider {
        // The store builds its spans with the global tracer.
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    if let Ok(mut slot) = SPANS.lock() {
        *slot = spans;
    }
    Ok(Telemetry { provider })
}

/// The provider of the store's spans, and where the server spans go.
fn tracer_provider(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(SdkTracerProvider, Spans)>, StartError> {
    let Some(endpoint) =
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Ok(None);
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let settings = settings::exporter(endpoint, var)?;
    let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| "agentry".into());
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let Sampling {
        exporter: sampler,
        root_ratio,
        follow_caller,
    } = sampling(var)?;
    ROOT_RATIO.store(root_ratio.to_bits(), Ordering::Relaxed);
    FOLLOW_CALLER.store(follow_caller, Ordering::Relaxed);
    let processor = export::OtlpProcessor::start(settings).during(StartError::Telemetry)?;
    let spans = processor.spans(InstrumentationScope::builder(SCOPE).build());
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler)
        .with_span_processor(processor)
        .build();
    Ok(Some((provider, spans)))
}

/// What `OTEL_TRACES_SAMPLER` asks for, split in two: the ratio decided before a call's
/// span is built ([`traced`]) and the exporter's sampler, which keeps what was built
/// (or, under `parentbased_*`, follows the caller's sampled flag).
struct Sampling {
    exporter: Sampler,
    root_ratio: f64,
    follow_caller: bool,
}

/// A telemetry setting that cannot be used, as `message` says.
pub(crate) fn failure(message: String) -> StartError {
    StartError::new(StartError::Telemetry, message)
}

/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, as the specification names them.
fn sampling(var: &dyn Fn(&str) -> Option<String>) -> Result<Sampling, StartError> {
    let ratio = || -> Result<f64, StartError> {
        match var("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(arg) => arg
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    failure(format!(
                        "OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio in [0, 1]"
                    ))
                }),
        }
    };
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    let name = var("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
    let (exporter, root_ratio, follow_caller) = match name.trim() {
        "always_on" => (Sampler::AlwaysOn, 1.0, false),
        "always_off" => (Sampler::AlwaysOff, 0.0, false),
        "traceidratio" => (Sampler::AlwaysOn, ratio()?, false),
        "parentbased_always_on" => (parent_based(Sampler::AlwaysOn), 1.0, true),
        "parentbased_always_off" => (parent_based(Sampler::AlwaysOff), 0.0, true),
        "parentbased_traceidratio" => (parent_based(Sampler::AlwaysOn), ratio()?, true),
        other => {
            return Err(failure(format!(
                "OTEL_TRACES_SAMPLER={other:?} is not one of always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
            )));
        }
    };
    Ok(Sampling {
        exporter,
        root_ratio,
        follow_caller,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_enough_for_a_ratio() {
        let n = 100_000;
        let hits = (0..n).filter(|_| unit_random() < 0.01).count();
        assert!((700..1300).contains(&hits), "{hits} of {n} under 0.01");
        assert!((0..n).all(|_| (0.0..1.0).contains(&unit_random())));
    }

    #[test]
    fn ratio_samplers_decide_before_the_span_and_parent_based_ones_follow_the_caller() {
        let env = |sampler: &'static str, arg: Option<&'static str>| {
            move |name: &str| match name {
                "OTEL_TRACES_SAMPLER" => Some(sampler.to_owned()),
                "OTEL_TRACES_SAMPLER_ARG" => arg.map(str::to_owned),
                _ => None,
            }
        };
        let s = sampling(&env("parentbased_traceidratio", Some("0.01"))).unwrap();
        assert_eq!((s.root_ratio, s.follow_caller), (0.01, true));
        assert!(matches!(s.exporter, Sampler::ParentBased(_)));
        let s = sampling(&env("traceidratio", Some("0.5"))).unwrap();
        assert_eq!((s.root_ratio, s.follow_caller), (0.5, false));
        assert!(matches!(s.exporter, Sampler::AlwaysOn));
        let s = sampling(&env("parentbased_always_off", None)).unwrap();
        assert_eq!((s.root_ratio, s.follow_caller), (0.0, true));
        assert!(sampling(&env("traceidratio", Some("2"))).is_err());
        assert!(sampling(&env("sometimes", None)).is_err());
    }
}
