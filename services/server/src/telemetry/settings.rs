//! The exporter's settings, from the specification's variables: the collector's endpoint,
//! `OTEL_EXPORTER_OTLP_HEADERS`, TLS (`OTEL_EXPORTER_OTLP_CERTIFICATE`, ...), the export
//! timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`) and the batch processor's `OTEL_BSP_*` limits.
//! Each `OTEL_EXPORTER_OTLP_*` variable also has a `_TRACES_` spelling that wins.

use std::time::Duration;

use tonic::transport::Endpoint;

use super::{export::Settings, failure};
use crate::startup::{Context as _, StartError};

/// Unset `OTEL_BSP_MAX_QUEUE_SIZE` and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` default to a
/// queue of 8,192 spans and batches of 2,048 rather than the specification's 2,048 and
/// 512: the smaller queue filled, and spans were dropped, at 60k spans/s.
const QUEUE: usize = 8_192;
const BATCH: usize = 2_048;

/// The exporter's settings for the collector at `endpoint`.
pub fn exporter(
    endpoint: String,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, StartError> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (key, value) in headers(var("OTEL_EXPORTER_OTLP_HEADERS"))
        .into_iter()
        .chain(headers(var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")))
    {
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes()).map_err(|_| {
            failure(format!(
                "OTEL_EXPORTER_OTLP_HEADERS: bad header name {key:?}"
            ))
        })?;
        let value = value
            .parse()
            .map_err(|_| failure(format!("OTEL_EXPORTER_OTLP_HEADERS: bad value for {key}")))?;
        metadata.insert(key, value);
    }
    let tls = exporter_tls(&endpoint, var)?;
    let mut channel = Endpoint::from_shared(endpoint.clone())
        .context(StartError::Telemetry, || {
            format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?} is not a URL")
        })?;
    if let Some(tls) = tls {
        channel = channel.tls_config(tls).during(StartError::Telemetry)?;
    }
    let millis = |name: &str, default: u64| {
        Duration::from_millis(number(var, name).map_or(default, |n| n as u64))
    };
    let otlp_timeout = var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or_else(|| millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000));
    let max_queue = number(var, "OTEL_BSP_MAX_QUEUE_SIZE").unwrap_or(QUEUE);
    Ok(Settings {
        endpoint: channel,
        metadata,
        max_queue,
        max_batch: number(var, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
            .unwrap_or(BATCH)
            .min(max_queue),
        delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5_000),
        timeout: millis("OTEL_BSP_EXPORT_TIMEOUT", 30_000).min(otlp_timeout),
    })
}

/// A positive whole number; an unset or unusable value is left to the default, as the
/// SDK does.
fn number(var: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<usize> {
    var(name)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
}

/// TLS to the collector when the endpoint is `https://`, as the specification's variables
/// say: `OTEL_EXPORTER_OTLP_CERTIFICATE` (PEM CA certificates to verify the collector
/// with; without it, the system's roots), `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
/// `OTEL_EXPORTER_OTLP_CLIENT_KEY` (mutual TLS), each also in a `_TRACES_` spelling that
/// wins. An `http://` endpoint is plaintext, and a certificate given with one is an error
/// rather than silently unused.
fn exporter_tls(
    endpoint: &str,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<tonic::transport::ClientTlsConfig>, StartError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let setting = |name: &str| {
        let traces = format!("OTEL_EXPORTER_OTLP_TRACES_{name}");
        let general = format!("OTEL_EXPORTER_OTLP_{name}");
        var(&traces)
            .map(|v| (traces, v))
            .or_else(|| var(&general).map(|v| (general, v)))
    };
    let read = |(name, path): &(String, String)| {
        std::fs::read(path).context(StartError::Telemetry, || {
            format!("{name}: cannot read {path}")
        })
    };
    let (ca, cert, key) = (
        setting("CERTIFICATE"),
        setting("CLIENT_CERTIFICATE"),
        setting("CLIENT_KEY"),
    );
    if !endpoint.starts_with("https://") {
        if let Some((name, _)) = ca.iter().chain(&cert).chain(&key).next() {
            return Err(failure(format!(
                "{name} is set, but the OTLP endpoint {endpoint} is not https://"
            )));
        }
        return Ok(None);
    }
    let mut tls = match &ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    match (&cert, &key) {
        (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?)),
        (None, None) => {}
        _ => {
            return Err(failure(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go together"
                    .into(),
            ));
        }
    }
    Ok(Some(tls))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The variables `pairs` set.
    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn an_https_endpoint_gets_tls_from_the_specification_variables() {
        let none = env(&[]);
        assert!(exporter_tls("http://c:4317", &none).unwrap().is_none());
        assert!(exporter_tls("https://c:4317", &none).unwrap().is_some());
        let plain_with_ca = env(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem")]);
        let error = exporter_tls("http://c:4317", &plain_with_ca).unwrap_err();
        assert!(error.to_string().contains("not https://"), "{error}");
        let missing = env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "/nonexistent/ca.pem",
        )]);
        let error = exporter_tls("https://c:4317", &missing).unwrap_err();
        assert!(
            error.to_string().starts_with(
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: cannot read /nonexistent/ca.pem"
            ),
            "{error}"
        );
        let half = env(&[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/key.pem")]);
        assert!(exporter_tls("https://c:4317", &half).is_err());
    }

    #[test]
    fn batch_limits_come_from_the_bsp_variables() {
        let endpoint = || "http://c:4317".to_owned();
        let defaults = exporter(endpoint(), &env(&[])).unwrap();
        assert_eq!((defaults.max_queue, defaults.max_batch), (QUEUE, BATCH));
        assert_eq!(defaults.delay, Duration::from_secs(5));
        assert_eq!(defaults.timeout, Duration::from_secs(10));
        let set = exporter(
            endpoint(),
            &env(&[
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
                ("OTEL_BSP_SCHEDULE_DELAY", "250"),
                ("OTEL_BSP_EXPORT_TIMEOUT", "2000"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=b"),
            ]),
        )
        .unwrap();
        assert_eq!((set.max_queue, set.max_batch), (100, 100));
        assert_eq!(set.delay, Duration::from_millis(250));
        assert_eq!(set.timeout, Duration::from_secs(2));
        assert_eq!(set.metadata.get("a").unwrap(), "b");
        assert!(exporter("not a url".into(), &env(&[])).is_err());
    }
}
