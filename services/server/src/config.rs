//! Server configuration, layered: defaults → TOML file (`--config`) → `AGENTRY_*`
//! environment → command-line flags, each layer overriding the one before.
//!
//! Every setting is one row of [`SETTINGS`]: its TOML key, environment variable and flag
//! are derived from one name, so that none can exist in one layer only, and `agentry
//! config` can say for each value where it came from ([`Source`]). Every layer hands
//! values over as text and [`Config::set`] parses them, so a value means the same
//! whichever layer it came from. Secrets are wrapped so that they never show up in logs,
//! `Debug` output or `agentry config`.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use crate::{
    startup::{Context as _, StartError},
    tls::TlsPaths,
};

mod values;

pub use values::{ListenAddr, Secret, redact_url};
use values::{format_duration, optional_path, parse_bool, parse_duration, parse_number, positive};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Address the gRPC server binds; port 0 picks a free port.
    pub listen: ListenAddr,
    /// `sqlite://path` (created when missing) or `postgres://…`.
    pub database_url: Secret,
    /// Apply migrations at start.
    pub migrate: bool,
    /// The ROOT key. When absent, the server generates one on first start, stores its
    /// hash and prints it once.
    pub root_key: Option<Secret>,
    /// How often the background reaper looks for lapsed leases, timers and heartbeats.
    pub reaper_interval: Duration,
    /// How often a replica checks that its change feed still hears the others (Postgres:
    /// one NOTIFY to itself per period; three periods of silence count as a lost
    /// connection, and every waiter of the replica then looks at storage once).
    pub poll_interval: Duration,
    /// How long a verified API key is trusted without a lookup. A key revoked on another
    /// replica keeps working for at most this long; 0 disables the cache.
    pub auth_cache_ttl: Duration,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Database connections per server process.
    pub db_max_connections: u32,
    /// How long shutdown waits for in-flight calls.
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// PEM certificate chain; with `tls_key_file`, the listener speaks TLS only.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates; clients must present a certificate signed by one (mTLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served over HTTP; off when unset.
    pub metrics_listen: Option<ListenAddr>,
    /// Origins whose browser scripts may call the API (CORS); `*` for any; none by
    /// default.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".parse().expect("a valid default"),
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
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            metrics_listen: None,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// One setting: TOML key `key`, variable `AGENTRY_{KEY}`, flag `--{key-with-dashes}`.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    /// What a value looks like, for `--help`.
    pub value_name: &'static str,
    pub help: &'static str,
    /// Never printed; the root key also has no flag (a flag would show in `ps`), its
    /// file does.
    pub secret: bool,
}

impl Setting {
    pub fn env(&self) -> String {
        format!("AGENTRY_{}", self.key.to_ascii_uppercase())
    }

    pub fn flag(&self) -> Option<String> {
        (self.key != "root_key").then(|| self.key.replace('_', "-"))
    }
}

const fn setting(key: &'static str, value_name: &'static str, help: &'static str) -> Setting {
    Setting {
        key,
        value_name,
        help,
        secret: false,
    }
}

/// Every setting, in the order `agentry config` prints them.
pub const SETTINGS: &[Setting] = &[
    setting(
        "listen",
        "HOST:PORT",
        "gRPC listen address (host names allowed)",
    ),
    Setting {
        secret: true,
        ..setting(
            "database_url",
            "URL",
            "`sqlite://agentry.db` or `postgres://user@host/db`",
        )
    },
    setting("migrate", "BOOL", "apply schema migrations at start"),
    Setting {
        secret: true,
        ..setting(
            "root_key",
            "KEY",
            "the ROOT API key (environment or file only)",
        )
    },
    setting(
        "root_key_file",
        "PATH",
        "a file holding the ROOT API key (instead of root_key)",
    ),
    setting("reaper_interval", "DURATION", "time between reaper passes"),
    setting(
        "poll_interval",
        "DURATION",
        "how often the change feed checks that it still hears other replicas",
    ),
    setting(
        "auth_cache_ttl",
        "DURATION",
        "how long a verified API key is trusted without a lookup (0: never)",
    ),
    setting(
        "max_message_bytes",
        "BYTES",
        "largest gRPC message accepted or sent",
    ),
    setting(
        "db_max_connections",
        "N",
        "database connections per server process",
    ),
    setting(
        "shutdown_grace",
        "DURATION",
        "how long shutdown waits for in-flight calls",
    ),
    setting("log_format", "text|json", "log line format on stderr"),
    setting(
        "tls_cert_file",
        "PATH",
        "PEM certificate chain; with tls_key_file the listener speaks TLS only",
    ),
    setting("tls_key_file", "PATH", "PEM private key of tls_cert_file"),
    setting(
        "tls_client_ca_file",
        "PATH",
        "PEM CA certificates; clients must present a certificate they signed (mTLS)",
    ),
    setting(
        "metrics_listen",
        "HOST:PORT",
        "HTTP address of /metrics, /healthz and /readyz (off when unset)",
    ),
    setting(
        "cors_allowed_origins",
        "ORIGINS",
        "origins browsers may call from, comma-separated, or * (CORS; none when unset)",
    ),
];

/// Where a setting's effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::File => "file",
            Self::Env => "env",
            Self::Flag => "flag",
        }
    }
}

/// A configuration and where each of its values came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub sources: BTreeMap<&'static str, Source>,
}

impl Config {
    /// Sets the setting `key` from its text form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "listen" => self.listen = value.parse()?,
            "database_url" => self.database_url = Secret::new(value),
            "migrate" => self.migrate = parse_bool(value)?,
            "root_key" => self.root_key = (!value.is_empty()).then(|| Secret::new(value)),
            "root_key_file" => {
                if !value.is_empty() {
                    let key = std::fs::read_to_string(value)
                        .map_err(|e| format!("cannot read {value}: {e}"))?;
                    let key = key.trim();
                    if key.is_empty() {
                        return Err(format!("{value} is empty"));
                    }
                    self.root_key = Some(Secret::new(key));
                }
            }
            "reaper_interval" => self.reaper_interval = positive(parse_duration(value)?)?,
            "poll_interval" => self.poll_interval = positive(parse_duration(value)?)?,
            "auth_cache_ttl" => self.auth_cache_ttl = parse_duration(value)?,
            "max_message_bytes" => {
                self.max_message_bytes = parse_number(value)?;
                if self.max_message_bytes < 1024 {
                    return Err("must be at least 1024".into());
                }
            }
            "db_max_connections" => {
                self.db_max_connections = parse_number(value)?;
                if self.db_max_connections == 0 {
                    return Err("must be at least 1".into());
                }
            }
            "shutdown_grace" => self.shutdown_grace = parse_duration(value)?,
            "log_format" => {
                self.log_format = <LogFormat as clap::ValueEnum>::from_str(value, true)
                    .map_err(|_| format!("{value:?} is not text or json"))?;
            }
            "tls_cert_file" => self.tls_cert_file = optional_path(value),
            "tls_key_file" => self.tls_key_file = optional_path(value),
            "tls_client_ca_file" => self.tls_client_ca_file = optional_path(value),
            "metrics_listen" => {
                self.metrics_listen = if value.is_empty() {
                    None
                } else {
                    Some(value.parse()?)
                }
            }
            "cors_allowed_origins" => {
                self.cors_allowed_origins = crate::web::parse_origins(value)?;
            }
            _ => return Err(format!("unknown setting {key:?}")),
        }
        Ok(())
    }

    /// The setting `key` in its text form, with secrets redacted.
    pub fn display(&self, key: &str) -> String {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        match key {
            "listen" => self.listen.to_string(),
            "database_url" => redact_url(self.database_url.expose()),
            "migrate" => self.migrate.to_string(),
            "root_key" | "root_key_file" => match self.root_key {
                Some(_) => "<redacted>".into(),
                None => String::new(),
            },
            "reaper_interval" => format_duration(self.reaper_interval),
            "poll_interval" => format_duration(self.poll_interval),
            "auth_cache_ttl" => format_duration(self.auth_cache_ttl),
            "max_message_bytes" => self.max_message_bytes.to_string(),
            "db_max_connections" => self.db_max_connections.to_string(),
            "shutdown_grace" => format_duration(self.shutdown_grace),
            "log_format" => match self.log_format {
                LogFormat::Text => "text".into(),
                LogFormat::Json => "json".into(),
            },
            "tls_cert_file" => path(&self.tls_cert_file),
            "tls_key_file" => path(&self.tls_key_file),
            "tls_client_ca_file" => path(&self.tls_client_ca_file),
            "metrics_listen" => self
                .metrics_listen
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            "cors_allowed_origins" => self.cors_allowed_origins.join(","),
            _ => String::new(),
        }
    }

    /// The TLS files, when TLS is configured; an error when only some are.
    pub fn tls(&self) -> Result<Option<TlsPaths>, StartError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(TlsPaths {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca_file.clone(),
            })),
            (None, None) if self.tls_client_ca_file.is_some() => Err(StartError::new(
                StartError::Config,
                "tls_client_ca_file needs tls_cert_file and tls_key_file: mutual TLS is TLS",
            )),
            (None, None) => Ok(None),
            (Some(_), None) => Err(StartError::new(
                StartError::Config,
                "tls_cert_file is set but tls_key_file is not",
            )),
            (None, Some(_)) => Err(StartError::new(
                StartError::Config,
                "tls_key_file is set but tls_cert_file is not",
            )),
        }
    }

    /// Defaults overlaid with a TOML file (kept for callers that only have a file).
    pub fn from_file(path: Option<&PathBuf>) -> Result<Self, StartError> {
        Ok(load(path.map(PathBuf::as_path), |_| None, Vec::new())?.config)
    }
}

/// Settings read from the environment through `var`, with the variables older versions
/// read under other names.
fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for setting in SETTINGS {
        if let Some(value) = var(&setting.env()) {
            found.push((setting.key, value));
        } else if setting.key == "reaper_interval"
            && let Some(secs) = var("AGENTRY_REAPER_INTERVAL_SECS")
        {
            found.push(("reaper_interval", secs));
        } else if setting.key == "migrate"
            && let Some(no) = var("AGENTRY_NO_MIGRATE")
            && parse_bool(&no).unwrap_or(!no.is_empty())
        {
            found.push(("migrate", "false".into()));
        }
    }
    found
}

/// Builds the configuration: defaults, then the TOML file at `file`, then the
/// environment (through `var`), then `flags` (setting key and text value, in order).
pub fn load(
    file: Option<&std::path::Path>,
    var: impl Fn(&str) -> Option<String>,
    flags: Vec<(&'static str, String)>,
) -> Result<Loaded, StartError> {
    let mut config = Config::default();
    let mut sources: BTreeMap<&'static str, Source> =
        SETTINGS.iter().map(|s| (s.key, Source::Default)).collect();
    let key_of = |name: &str| SETTINGS.iter().find(|s| s.key == name).map(|s| s.key);
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).context(StartError::Config, || {
            format!("cannot read config file {}", path.display())
        })?;
        let table: toml::Table = text.parse().context(StartError::Config, || {
            format!("invalid config file {}", path.display())
        })?;
        for (name, value) in table {
            let key = key_of(&name).ok_or_else(|| {
                let message = format!("config file {}: unknown setting {name:?}", path.display());
                StartError::new(StartError::Config, message)
            })?;
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                // A list of strings (cors_allowed_origins) is its comma-separated text.
                toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                other => {
                    return Err(StartError::new(
                        StartError::Config,
                        format!(
                            "config file {}: {name} must be a string, number or boolean, not {}",
                            path.display(),
                            other.type_str()
                        ),
                    ));
                }
            };
            config.set(key, &text).map_err(|e| {
                let message = format!("config file {}: {name}: {e}", path.display());
                StartError::new(StartError::Config, message)
            })?;
            sources.insert(key, Source::File);
        }
    }
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    for (key, value) in from_env(&var) {
        let env = SETTINGS
            .iter()
            .find(|s| s.key == key)
            .map(Setting::env)
            .unwrap_or_default();
        config
            .set(key, &value)
            .map_err(|e| StartError::new(StartError::Config, format!("{env}: {e}")))?;
        sources.insert(key, Source::Env);
    }
    for (key, value) in flags {
        config.set(key, &value).map_err(|e| {
            let message = format!("--{}: {e}", key.replace('_', "-"));
            StartError::new(StartError::Config, message)
        })?;
        sources.insert(key, Source::Flag);
    }
    // A root key file read after the key itself still names where the key came from.
    if sources["root_key_file"] > sources["root_key"] {
        sources.insert("root_key", sources["root_key_file"]);
    }
    config.tls()?;
    Ok(Loaded { config, sources })
}

impl Loaded {
    /// `agentry config`: every setting as `key = "value"  # source`, secrets redacted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for setting in SETTINGS {
            let value = self.config.display(setting.key);
            out.push_str(&format!(
                "{} = {:?}  # {}\n",
                setting.key,
                value,
                self.sources[setting.key].as_str()
            ));
        }
        out
    }
}
