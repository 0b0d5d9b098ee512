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
//! `OTEL_EXPORTER_OTLP_HEADERS`, and the batch processor's `OTEL_BSP_*`. W3C
//! `traceparent` headers are continued. Only the server's own spans are exported (the
//! RPC spans and the store's transaction and statement spans); they are built at DEBUG
//! level, so with tracing off and the log filter at info they cost nothing.

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tracing_subscriber::{
    EnvFilter, Layer, filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::LogFormat;

static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (RPC spans are only built then).
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
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
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    init_with(format, |name| std::env::var(name).ok())
}

/// Sets up logs and traces, reading the `RUST_LOG` and `OTEL_*` variables through `var`.
pub fn init_with(
    format: LogFormat,
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Telemetry> {
    let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let filter = match var("RUST_LOG") {
        Some(directives) => EnvFilter::try_new(&directives)
            .map_err(|e| anyhow::anyhow!("RUST_LOG={directives:?} is not a valid filter: {e}"))?,
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
    let provider = tracer_provider(&var)?;
    let otel = provider.as_ref().map(|provider| {
        // Only what the spans declare: no busy/idle timing (a clock read on every poll),
        // thread, source location or target attributes, which cost on every span.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("agentry"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .with_level(false)
            .with_filter(filter_fn(|meta| {
                meta.is_span() && meta.target().starts_with("agentry_")
            }))
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    TRACING.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry { provider })
}

fn tracer_provider(
    var: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<SdkTracerProvider>> {
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
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (key, value) in headers(var("OTEL_EXPORTER_OTLP_HEADERS"))
        .into_iter()
        .chain(headers(var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")))
    {
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes())
            .map_err(|_| anyhow::anyhow!("OTEL_EXPORTER_OTLP_HEADERS: bad header name {key:?}"))?;
        let value = value
            .parse()
            .map_err(|_| anyhow::anyhow!("OTEL_EXPORTER_OTLP_HEADERS: bad value for {key}"))?;
        metadata.insert(key, value);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_metadata(metadata)
        .build()?;
    let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| "agentry".into());
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(sampler(var)?)
            .with_batch_exporter(exporter)
            .build(),
    ))
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,key2=value2`, values percent-encoded.
fn headers(value: Option<String>) -> Vec<(String, String)> {
    value
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((
                key.trim().to_ascii_lowercase(),
                crate::observe::percent_decode(value.trim()),
            ))
        })
        .collect()
}

/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, as the specification names them.
fn sampler(var: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Sampler> {
    let ratio = || -> anyhow::Result<f64> {
        match var("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(arg) => arg
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    anyhow::anyhow!("OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio in [0, 1]")
                }),
        }
    };
    let name = var("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
    Ok(match name.trim() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?)))
        }
        other => anyhow::bail!(
            "OTEL_TRACES_SAMPLER={other:?} is not one of always_on, always_off, traceidratio, \
             parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
        ),
    })
}
