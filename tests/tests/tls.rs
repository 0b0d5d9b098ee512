//! TLS and mutual TLS on the gRPC listener: calls over TLS work, plaintext is refused,
//! mutual TLS refuses clients without a certificate of its CA, certificate files are
//! reloaded without dropping open connections, and bad files are start-up errors.

mod cli_support;

use std::time::Duration;

use agentry_e2e::{pki::Pki, *};
use agentry_server::config::Config;
use cli_support::Cli;
use pb::{
    context_service_client::ContextServiceClient, registry_service_client::RegistryServiceClient,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn with_tls(
    pki: &Pki,
    server: &agentry_e2e::pki::Issued,
    mutual: bool,
) -> impl FnOnce(&mut Config) {
    let (cert, key, ca) = (server.cert.clone(), server.key.clone(), pki.ca_file());
    move |config: &mut Config| {
        config.tls_cert_file = Some(cert);
        config.tls_key_file = Some(key);
        if mutual {
            config.tls_client_ca_file = Some(ca);
        }
    }
}

/// A TLS channel to `app` trusting `cas`, with an optional client identity.
async fn tls_channel(
    app: &TestApp,
    cas: &[&Pki],
    identity: Option<&agentry_e2e::pki::Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().domain_name("localhost");
    for ca in cas {
        tls = tls.ca_certificate(Certificate::from_pem(ca.ca_pem()));
    }
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(id.cert_pem(), id.key_pem()));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{}", app.addr.port()))
        .expect("endpoint")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// An authenticated call over `channel`: Ok when it went through the TLS connection.
async fn root_call(app: &TestApp, channel: Channel) -> Result<(), tonic::Status> {
    RegistryServiceClient::with_interceptor(channel, Bearer::new(&app.root_key))
        .list_workspaces(req::list_workspaces())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn tls_serves_calls_and_refuses_plaintext() {
    let pki = Pki::new("main");
    let server = pki.server("server");
    let app = spawn_app_with(Backend::Sqlite, with_tls(&pki, &server, false)).await;

    let channel = tls_channel(&app, &[&pki], None)
        .await
        .expect("tls connects");
    root_call(&app, channel)
        .await
        .expect("a call over TLS works");

    // Plaintext HTTP/2 to the TLS port: the handshake fails and the call never runs.
    let plaintext = Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let refused = match plaintext.connect().await {
        Err(_) => true,
        Ok(channel) => root_call(&app, channel).await.is_err(),
    };
    assert!(refused, "a plaintext client must not be served");

    // A client that does not trust the server's CA refuses the server.
    let other = Pki::new("other");
    assert!(tls_channel(&app, &[&other], None).await.is_err());
    app.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_accepts_only_client_certificates_of_its_ca() {
    let pki = Pki::new("main");
    let server = pki.server("server");
    let app = spawn_app_with(Backend::Sqlite, with_tls(&pki, &server, true)).await;

    // No client certificate: the handshake (or the first call) fails.
    let without = match tls_channel(&app, &[&pki], None).await {
        Err(_) => true,
        Ok(channel) => root_call(&app, channel).await.is_err(),
    };
    assert!(without, "a client without a certificate must be refused");

    // A certificate from another CA: refused.
    let stranger = Pki::new("stranger");
    let foreign = stranger.client("foreign-client");
    let foreign_refused = match tls_channel(&app, &[&pki], Some(&foreign)).await {
        Err(_) => true,
        Ok(channel) => root_call(&app, channel).await.is_err(),
    };
    assert!(
        foreign_refused,
        "a certificate of another CA must be refused"
    );

    // A certificate of the configured CA: served.
    let client = pki.client("client");
    let channel = tls_channel(&app, &[&pki], Some(&client))
        .await
        .expect("mtls connects");
    root_call(&app, channel)
        .await
        .expect("a call with the right client certificate works");
    app.shutdown().await;
}

#[tokio::test]
async fn rotated_certificates_serve_new_connections_and_keep_open_streams() {
    let first = Pki::new("first");
    let second = Pki::new("second");
    let live = first.server("live");
    let app = spawn_app_with(Backend::Sqlite, with_tls(&first, &live, false)).await;

    // A connection made before the rotation, trusting both CAs, with a watch open on it.
    let old = tls_channel(&app, &[&first, &second], None)
        .await
        .expect("connects");
    let mut registry =
        RegistryServiceClient::with_interceptor(old.clone(), Bearer::new(&app.root_key));
    registry
        .create_workspace(req::create_workspace("acme", pb::Workspace::default()))
        .await
        .must();
    registry
        .create_project(req::create_project("workspaces/acme", "web"))
        .await
        .must();
    let mut contexts =
        ContextServiceClient::with_interceptor(old.clone(), Bearer::new(&app.root_key));
    let name = "workspaces/acme/projects/web/contexts/memory";
    contexts
        .create_context(pb::CreateContextRequest {
            parent: "workspaces/acme/projects/web".into(),
            context_id: "memory".into(),
            context: Some(pb::Context::default()),
            data: Some(to_value(json!({"turn": 1}))),
            ..Default::default()
        })
        .await
        .must();
    let mut watch = contexts
        .watch_context(pb::WatchContextRequest {
            name: name.into(),
            after_version: 0,
            ..Default::default()
        })
        .await
        .must();
    let first_version = watch
        .message()
        .await
        .expect("watch works")
        .expect("version 1");
    assert_eq!(first_version.version.unwrap().version, 1);

    // Replace the files in place with a certificate of the second CA.
    let rotated = second.server("rotated");
    std::fs::copy(&rotated.cert, &live.cert).unwrap();
    std::fs::copy(&rotated.key, &live.key).unwrap();

    // New connections soon see the new certificate: a client trusting only the second
    // CA gets in, one trusting only the first no longer does.
    let switched = eventually(Duration::from_secs(15), || async {
        match tls_channel(&app, &[&second], None).await {
            Ok(channel) => root_call(&app, channel).await.ok(),
            Err(_) => None,
        }
    })
    .await;
    assert!(
        switched.is_some(),
        "new connections get the rotated certificate"
    );
    assert!(
        tls_channel(&app, &[&first], None).await.is_err(),
        "the old certificate is no longer offered"
    );

    // The connection made before still works, and its stream still delivers.
    contexts
        .write_context(pb::WriteContextRequest {
            name: name.into(),
            change: Some(pb::write_context_request::Change::MergePatch(to_value(
                json!({"turn": 2}),
            ))),
            ..Default::default()
        })
        .await
        .must();
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the open stream delivers after the rotation")
        .expect("the stream is still healthy")
        .expect("version 2");
    assert_eq!(next.version.unwrap().version, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_certificate_files_are_clear_start_up_errors() {
    let pki = Pki::new("main");
    let server = pki.server("server");
    let database = fresh_database(Backend::Sqlite).await;
    let start = |configure: &dyn Fn(&mut Config)| {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: agentry_server::config::Secret::new(database.url.clone()),
            ..Config::default()
        };
        configure(&mut config);
        async move {
            match agentry_server::start(config).await {
                Ok(running) => {
                    running.shutdown().await.unwrap();
                    String::from("started")
                }
                Err(error) => format!("{error:#}"),
            }
        }
    };

    let missing = pki.dir().join("missing.pem");
    let message = start(&|c: &mut Config| {
        c.tls_cert_file = Some(missing.clone());
        c.tls_key_file = Some(server.key.clone());
    })
    .await;
    assert!(
        message.contains("cannot read the TLS certificate file") && message.contains("missing.pem"),
        "{message}"
    );

    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let message = start(&|c: &mut Config| {
        c.tls_cert_file = Some(server.cert.clone());
        c.tls_key_file = Some(garbage.clone());
    })
    .await;
    assert!(
        message.contains("TLS key file") && message.contains("garbage.pem"),
        "{message}"
    );

    let message = start(&|c: &mut Config| {
        c.tls_cert_file = Some(garbage.clone());
        c.tls_key_file = Some(server.key.clone());
    })
    .await;
    assert!(message.contains("holds no PEM certificate"), "{message}");

    // A key that belongs to another certificate.
    let other = pki.server("other");
    let message = start(&|c: &mut Config| {
        c.tls_cert_file = Some(server.cert.clone());
        c.tls_key_file = Some(other.key.clone());
    })
    .await;
    assert!(message.contains("do not make a usable pair"), "{message}");

    let message = start(&|c: &mut Config| {
        c.tls_cert_file = Some(server.cert.clone());
    })
    .await;
    assert!(
        message.contains("tls_cert_file is set but tls_key_file is not"),
        "{message}"
    );
    database.drop_database().await;
}

/// `agentry health` connects like every client command: plaintext is refused by a TLS
/// listener, mutual TLS needs the client certificate, and the TLS settings come from
/// flags, the environment or a profile; `--addr` and `AGENTRY_LISTEN` still name the
/// server.
#[tokio::test]
async fn health_probe_speaks_tls_and_mutual_tls() {
    let pki = Pki::new("health");
    let server = pki.server("server");
    let client = pki.client("client");
    let app = spawn_app_with(Backend::Sqlite, with_tls(&pki, &server, true)).await;
    let path = |p: &std::path::Path| p.display().to_string();
    let (ca, cert, key) = (path(&pki.ca_file()), path(&client.cert), path(&client.key));
    let localhost = format!("localhost:{}", app.addr.port());

    let cli = Cli::new(&localhost, "");
    cli.fails(&["health"], 8).await;
    cli.fails(&["health", "--tls-ca", &ca], 8).await;
    let flags = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];
    let serving = cli.run(&[&["health"][..], &flags[..]].concat()).await;
    assert_eq!(
        (serving.code, serving.stdout.as_str()),
        (0, "SERVING\n"),
        "{}",
        serving.stderr
    );
    // An unknown service is NOT_FOUND.
    cli.fails(
        &[&["health", "--service", "nope"][..], &flags[..]].concat(),
        4,
    )
    .await;

    // The environment, by IP with the name to verify; the old `--addr`.
    let by_env = Cli::new("", "")
        .env("AGENTRY_TLS_CA", &ca)
        .env("AGENTRY_TLS_CERT", &cert)
        .env("AGENTRY_TLS_KEY", &key)
        .env("AGENTRY_TLS_SERVER_NAME", "localhost");
    let addr = app.addr.to_string();
    let serving = by_env.run(&["health", "--addr", &addr]).await;
    assert_eq!(serving.code, 0, "{}", serving.stderr);
    let by_listen = by_env.env("AGENTRY_LISTEN", &addr);
    let serving = by_listen.run(&["health"]).await;
    assert_eq!(serving.code, 0, "{}", serving.stderr);

    // A profile's TLS settings.
    let profiled = Cli::new("", "");
    let added = profiled
        .run(
            &[
                &["profile", "add", "tls", "--address", &localhost][..],
                &flags[..],
            ]
            .concat(),
        )
        .await;
    assert_eq!(added.code, 0, "{}", added.stderr);
    let serving = profiled.run(&["health"]).await;
    assert_eq!(serving.code, 0, "{}", serving.stderr);
    app.shutdown().await;
}
