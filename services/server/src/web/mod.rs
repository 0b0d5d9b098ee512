//! Plain HTTP on the gRPC port, for curl and browsers, without a second implementation:
//!
//! - [`connect_layer`]: every unary method answers `POST /{Service}/{Method}` with a JSON
//!   (or protobuf) body, the Connect protocol's unary form; the call is transcoded to
//!   gRPC and goes through the same layers and services as any gRPC call.
//! - gRPC-Web (tonic-web, `application/grpc-web` and `application/grpc-web-text`, over
//!   HTTP/1.1 or HTTP/2): every method, server streams included, from a browser.
//! - [`cors`]: the CORS answers browsers need to call from another origin, for the
//!   origins configured (`cors_allowed_origins`); none by default.
//!
//! The layers sit outside the observe and auth layers, in this order: CORS, Connect,
//! gRPC-Web, then everything a gRPC call meets; [`RefusalLayer`] sits innermost.

mod connect;
mod procedures;

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

pub use connect::{RefusalLayer, connect_layer};

/// Headers a browser script may read: gRPC-Web's status, for clients that read it from
/// the headers of a trailers-only response.
const EXPOSED_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
];

/// The CORS layer for `origins` (`*`: any origin), or none when the list is empty.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allowed = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::POST])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(Duration::from_secs(24 * 3600)),
    )
}

/// A comma-separated list of origins: `*`, or `scheme://host[:port]` each, as browsers
/// send them in `Origin`.
pub fn parse_origins(value: &str) -> Result<Vec<String>, String> {
    let origins: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    for origin in &origins {
        if origin == "*" {
            continue;
        }
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .ok_or_else(|| format!("{origin:?} is not * or http(s)://host[:port]"))?;
        if host.is_empty()
            || host.contains(['/', '?', '#', ' ', '*'])
            || HeaderValue::from_str(origin).is_err()
        {
            return Err(format!(
                "{origin:?} is not an origin (scheme://host[:port], no path)"
            ));
        }
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_schemes_and_hosts() {
        assert_eq!(
            parse_origins("https://app.example.com, http://localhost:5173"),
            Ok(vec![
                "https://app.example.com".to_owned(),
                "http://localhost:5173".to_owned()
            ])
        );
        assert_eq!(parse_origins("*"), Ok(vec!["*".to_owned()]));
        assert_eq!(parse_origins(""), Ok(vec![]));
        assert!(parse_origins("app.example.com").is_err());
        assert!(parse_origins("https://app.example.com/").is_err());
        assert!(parse_origins("https://*.example.com").is_err());
    }
}
