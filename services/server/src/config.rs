//! Server configuration, layered: defaults → optional TOML file (`--config`) →
//! `AGENTRY_*` environment → command-line flags. Secrets are wrapped so that they never
//! show up in logs or `Debug` output.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

/// A string that prints as `<redacted>`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC server binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `sqlite://path` (created when missing) or `postgres://…`.
    pub database_url: Secret,
    /// Apply migrations at start.
    pub migrate: bool,
    /// The ROOT key. When absent, the server generates one on first start, stores its
    /// hash and prints it once.
    pub root_key: Option<Secret>,
    /// How often the background reaper looks for lapsed heartbeats.
    #[serde(with = "humantime_secs")]
    pub reaper_interval: Duration,
    /// How often streams look at storage when no wake-up came (the fallback when a
    /// notification is lost).
    #[serde(with = "humantime_secs")]
    pub poll_interval: Duration,
    /// How long a verified API key is trusted without a lookup. A key revoked on another
    /// replica keeps working for at most this long; 0 disables the cache.
    #[serde(with = "humantime_secs")]
    pub auth_cache_ttl: Duration,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Database connections per server process.
    pub db_max_connections: u32,
    /// How long shutdown waits for in-flight calls.
    #[serde(with = "humantime_secs")]
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".parse().expect("valid default address"),
            database_url: Secret::new("sqlite://agentry.db"),
            migrate: true,
            root_key: None,
            reaper_interval: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            auth_cache_ttl: Duration::from_secs(2),
            max_message_bytes: 4 << 20,
            db_max_connections: 16,
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Defaults overlaid with a TOML file.
    pub fn from_file(path: Option<&PathBuf>) -> anyhow::Result<Self> {
        match path {
            None => Ok(Self::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read config file {}: {e}", path.display())
                })?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
            }
        }
    }
}

/// Durations in the TOML file are written as seconds (floats allowed).
mod humantime_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
