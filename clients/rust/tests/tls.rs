//! `connect_tls` against `agentry serve --tls-cert-file … --tls-key-file …` and, with
//! `--tls-client-ca-file`, mutual TLS: calls go through with the server's CA (and a
//! client certificate when asked for one); plaintext, a stranger's CA and a missing
//! client certificate are refused.

mod support;

use agentry_client::{Agentry, Tls, connect, connect_tls, pb};
use agentry_e2e::pki::{Issued, Pki};
use support::Server;

fn flags(server: &Issued, client_ca: Option<&Pki>) -> Vec<String> {
    let mut flags = vec![
        "--tls-cert-file".to_owned(),
        server.cert.display().to_string(),
        "--tls-key-file".to_owned(),
        server.key.display().to_string(),
    ];
    if let Some(ca) = client_ca {
        flags.extend([
            "--tls-client-ca-file".to_owned(),
            ca.ca_file().display().to_string(),
        ]);
    }
    flags
}

fn https(server: &Server) -> String {
    format!("https://127.0.0.1:{}", server.port)
}

/// A ROOT call that needs the connection: Ok when it went through.
async fn call(
    agentry: Result<Agentry, agentry_client::Error>,
) -> Result<(), agentry_client::Error> {
    agentry?
        .registry
        .list_workspaces(pb::ListWorkspacesRequest::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn tls_with_the_server_ca_works_and_plaintext_or_a_stranger_ca_does_not() {
    let pki = Pki::new("main");
    let cert = pki.server("server");
    let server = Server::start_with(flags(&cert, None)).await;
    let tls = Tls::from_ca_file(pki.ca_file())
        .unwrap()
        .with_domain_name("localhost");
    call(connect_tls(https(&server), &server.root, &tls).await)
        .await
        .expect("a call over TLS works");

    assert!(
        call(connect(server.url(), &server.root).await)
            .await
            .is_err(),
        "plaintext is refused"
    );
    let stranger = Pki::new("stranger");
    let wrong = Tls::from_ca_pem(stranger.ca_pem()).with_domain_name("localhost");
    assert!(
        call(connect_tls(https(&server), &server.root, &wrong).await)
            .await
            .is_err(),
        "a server certificate of another CA is refused"
    );
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_of_its_ca() {
    let pki = Pki::new("main");
    let cert = pki.server("server");
    let server = Server::start_with(flags(&cert, Some(&pki))).await;
    let tls = Tls::from_ca_file(pki.ca_file())
        .unwrap()
        .with_domain_name("localhost");

    let without = call(connect_tls(https(&server), &server.root, &tls).await).await;
    assert!(without.is_err(), "no client certificate: refused");
    let stranger_ca = Pki::new("stranger");
    let stranger = stranger_ca.client("foreign");
    let foreign = tls
        .clone()
        .with_client_cert_files(&stranger.cert, &stranger.key)
        .unwrap();
    assert!(
        call(connect_tls(https(&server), &server.root, &foreign).await)
            .await
            .is_err(),
        "a client certificate of another CA: refused"
    );
    let client = pki.client("client");
    let mine = tls
        .with_client_cert_files(&client.cert, &client.key)
        .unwrap();
    call(connect_tls(https(&server), &server.root, &mine).await)
        .await
        .expect("a call with a client certificate of the server's CA works");
}
