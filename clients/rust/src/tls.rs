//! Connecting over TLS: the server's CA, and for mutual TLS a client certificate and key.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::Error;

/// TLS settings of a connection: the CA that signed the server's certificate and,
/// when the server asks for client certificates (mutual TLS), this client's own.
///
/// ```no_run
/// # async fn demo() -> Result<(), agentry_client::Error> {
/// use agentry_client::{Tls, connect_tls};
///
/// let tls = Tls::from_ca_file("ca.pem")?.with_client_cert_files("client.pem", "client-key.pem")?;
/// let agentry = connect_tls("https://agentry.internal:50051", "agk_…", &tls).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Tls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain_name: Option<String>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::local(format!("cannot read the {what} {}: {e}", path.display())))
}

impl Tls {
    /// Trusts the CA certificates in `ca_pem` (PEM).
    pub fn from_ca_pem(ca_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            ca_pem: ca_pem.into(),
            identity: None,
            domain_name: None,
        }
    }

    /// Trusts the CA certificates in the PEM file `path`.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(Self::from_ca_pem(read(path.as_ref(), "CA file")?))
    }

    /// Presents this certificate chain and key (PEM) to a server that asks for one.
    pub fn with_client_cert_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// [`Tls::with_client_cert_pem`] from PEM files.
    pub fn with_client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let cert = read(cert.as_ref(), "client certificate")?;
        let key = read(key.as_ref(), "client key")?;
        Ok(self.with_client_cert_pem(cert, key))
    }

    /// The name to verify the server's certificate against, when it is not the
    /// endpoint's host.
    pub fn with_domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    pub(crate) fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}
