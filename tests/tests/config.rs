//! Configuration: every setting from each source (TOML file, `AGENTRY_*` variable,
//! flag), their precedence, `agentry config` with sources and secrets redacted, and
//! host names in listen addresses.

use std::{collections::HashMap, path::PathBuf, process::Command};

use agentry_e2e::{process::agentry_bin, *};
use agentry_server::config::{self, Loaded, SETTINGS, Source};

/// A value for every setting, other than its default, and how `agentry config` shows it.
fn sample(key: &str, dir: &std::path::Path) -> (String, String) {
    let file = |name: &str| dir.join(name).display().to_string();
    let same = |v: &str| (v.to_owned(), v.to_owned());
    match key {
        "listen" => same("localhost:7000"),
        "database_url" => (
            "postgres://app:hunter2@db.example:5432/agentry".into(),
            "postgres://app:<redacted>@db.example:5432/agentry".into(),
        ),
        "migrate" => same("false"),
        "root_key" => ("agk_root_sample".into(), "<redacted>".into()),
        "root_key_file" => (file("root.key"), "<redacted>".into()),
        "reaper_interval" => ("250ms".into(), "250ms".into()),
        "poll_interval" => ("2s".into(), "2s".into()),
        "auth_cache_ttl" => ("0".into(), "0s".into()),
        "max_message_bytes" => same("1048576"),
        "db_max_connections" => same("3"),
        "shutdown_grace" => ("30".into(), "30s".into()),
        "log_format" => same("json"),
        "tls_cert_file" => same(&file("cert.pem")),
        "tls_key_file" => same(&file("key.pem")),
        "tls_client_ca_file" => same(&file("ca.pem")),
        "metrics_listen" => same("localhost:9464"),
        "cors_allowed_origins" => same("https://app.example.com,http://localhost:5173"),
        other => panic!("no sample value for the setting {other}: add one"),
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("agentry-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("root.key"), "agk_root_from_file\n").unwrap();
        Self(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// TLS settings only make sense together; add the others when one is set.
fn complete(
    mut values: Vec<(&'static str, String)>,
    dir: &std::path::Path,
) -> Vec<(&'static str, String)> {
    let tls = ["tls_cert_file", "tls_key_file", "tls_client_ca_file"];
    if values.iter().any(|(k, _)| tls.contains(k)) {
        for key in &tls[..2] {
            if !values.iter().any(|(k, _)| k == key) {
                values.push((key, sample(key, dir).0));
            }
        }
    }
    values
}

fn load(
    file: Option<&str>,
    env: &[(&str, String)],
    flags: Vec<(&'static str, String)>,
    dir: &std::path::Path,
) -> anyhow::Result<Loaded> {
    let path = dir.join("agentry.toml");
    if let Some(text) = file {
        std::fs::write(&path, text).unwrap();
    }
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Ok(config::load(
        file.map(|_| path.as_path()),
        |name| env.get(name).cloned(),
        flags,
    )?)
}

#[test]
fn every_setting_comes_from_each_source() {
    let dir = Dir::new();
    for setting in SETTINGS {
        let (value, shown) = sample(setting.key, &dir.0);

        // TOML file: strings quoted; durations, numbers and booleans as TOML values too.
        let extra = complete(vec![(setting.key, value.clone())], &dir.0);
        let toml: String = extra
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}\n"))
            .collect();
        let loaded = load(Some(&toml), &[], vec![], &dir.0).unwrap();
        assert_eq!(loaded.sources[setting.key], Source::File, "{}", setting.key);
        assert_eq!(
            loaded.config.display(setting.key),
            shown,
            "{} from the file",
            setting.key
        );

        // Environment.
        let env: Vec<(String, String)> = complete(vec![(setting.key, value.clone())], &dir.0)
            .into_iter()
            .map(|(k, v)| (format!("AGENTRY_{}", k.to_ascii_uppercase()), v))
            .collect();
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let loaded = load(None, &env, vec![], &dir.0).unwrap();
        assert_eq!(loaded.sources[setting.key], Source::Env, "{}", setting.key);
        assert_eq!(
            loaded.config.display(setting.key),
            shown,
            "{} from the env",
            setting.key
        );

        // Flag (the root key has none: a flag shows in `ps`; its file has one).
        if setting.flag().is_some() {
            let loaded = load(
                None,
                &[],
                complete(vec![(setting.key, value)], &dir.0),
                &dir.0,
            )
            .unwrap();
            assert_eq!(loaded.sources[setting.key], Source::Flag, "{}", setting.key);
            assert_eq!(
                loaded.config.display(setting.key),
                shown,
                "{} from a flag",
                setting.key
            );
        }
    }
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = Dir::new();
    let file = "shutdown_grace = 1\npoll_interval = 3\nreaper_interval = 4\n";
    let env = [
        ("AGENTRY_SHUTDOWN_GRACE", "5s".to_owned()),
        ("AGENTRY_POLL_INTERVAL", "6s".to_owned()),
    ];
    let loaded = load(
        Some(file),
        &env,
        vec![("shutdown_grace", "7s".into())],
        &dir.0,
    )
    .unwrap();
    let c = &loaded.config;
    assert_eq!(c.shutdown_grace.as_secs(), 7);
    assert_eq!(loaded.sources["shutdown_grace"], Source::Flag);
    assert_eq!(c.poll_interval.as_secs(), 6);
    assert_eq!(loaded.sources["poll_interval"], Source::Env);
    assert_eq!(c.reaper_interval.as_secs(), 4);
    assert_eq!(loaded.sources["reaper_interval"], Source::File);
    assert_eq!(c.auth_cache_ttl.as_secs(), 2);
    assert_eq!(loaded.sources["auth_cache_ttl"], Source::Default);
}

#[test]
fn bad_values_name_their_source() {
    let dir = Dir::new();
    let error = load(
        None,
        &[("AGENTRY_POLL_INTERVAL", "soon".into())],
        vec![],
        &dir.0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("AGENTRY_POLL_INTERVAL") && error.contains("soon"),
        "{error}"
    );
    let error = load(Some("listen = \"nowhere\"\n"), &[], vec![], &dir.0)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("listen") && error.contains("host:port"),
        "{error}"
    );
    let error = load(Some("colour = true\n"), &[], vec![], &dir.0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown setting \"colour\""), "{error}");
    let error = load(None, &[], vec![("db_max_connections", "0".into())], &dir.0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("--db-max-connections"), "{error}");
    let error = load(None, &[], vec![("tls_key_file", "k.pem".into())], &dir.0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("tls_cert_file is not"), "{error}");
}

#[test]
fn agentry_config_prints_values_sources_and_no_secret() {
    let dir = Dir::new();
    let file = dir.0.join("agentry.toml");
    std::fs::write(&file, "poll_interval = 3\nmax_message_bytes = 2097152\n").unwrap();
    let output = Command::new(agentry_bin())
        .args(["config", "--config"])
        .arg(&file)
        .args(["--listen", "localhost:7000", "--poll-interval", "500ms"])
        .env("AGENTRY_SHUTDOWN_GRACE", "30s")
        .env("AGENTRY_ROOT_KEY", "agk_root_very_secret")
        .env(
            "AGENTRY_DATABASE_URL",
            "postgres://app:hunter2@db.example/agentry",
        )
        .env_remove("AGENTRY_LISTEN")
        .env_remove("AGENTRY_CONFIG")
        .output()
        .expect("agentry config runs");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    for expected in [
        r#"listen = "localhost:7000"  # flag"#,
        r#"poll_interval = "500ms"  # flag"#,
        r#"max_message_bytes = "2097152"  # file"#,
        r#"shutdown_grace = "30s"  # env"#,
        r#"root_key = "<redacted>"  # env"#,
        r#"database_url = "postgres://app:<redacted>@db.example/agentry"  # env"#,
        r#"auth_cache_ttl = "2s"  # default"#,
    ] {
        assert!(
            printed.contains(expected),
            "{expected:?} not in:\n{printed}"
        );
    }
    assert!(!printed.contains("very_secret") && !printed.contains("hunter2"));
    for setting in SETTINGS {
        assert!(
            printed.contains(&format!("\n{} = ", setting.key))
                || printed.starts_with(&format!("{} = ", setting.key)),
            "{} is not printed",
            setting.key
        );
    }
}

#[tokio::test]
async fn listen_addresses_take_host_names() {
    let database = fresh_database(Backend::Sqlite).await;
    let server = agentry_server::start(agentry_server::config::Config {
        listen: "localhost:0".parse().unwrap(),
        database_url: agentry_server::config::Secret::new(database.url.clone()),
        root_key: Some(agentry_server::config::Secret::new("root")),
        metrics_listen: Some("localhost:0".parse().unwrap()),
        ..Default::default()
    })
    .await
    .expect("localhost resolves and binds");
    assert!(server.local_addr.ip().is_loopback());
    assert!(server.metrics_addr.unwrap().ip().is_loopback());
    server.shutdown().await.unwrap();
    database.drop_database().await;
}

#[test]
fn cors_origins_take_a_toml_list_and_refuse_what_is_not_an_origin() {
    let dir = Dir::new();
    let toml = "cors_allowed_origins = [\"https://app.example.com\", \"http://localhost:5173\"]\n";
    let loaded = load(Some(toml), &[], vec![], &dir.0).unwrap();
    assert_eq!(
        loaded.config.cors_allowed_origins,
        ["https://app.example.com", "http://localhost:5173"]
    );
    let error = load(
        None,
        &[("AGENTRY_CORS_ALLOWED_ORIGINS", "app.example.com".into())],
        vec![],
        &dir.0,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("AGENTRY_CORS_ALLOWED_ORIGINS"),
        "{error}"
    );
}
