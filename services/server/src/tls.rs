//! TLS and mutual TLS for the gRPC listener, with rustls.
//!
//! The server terminates TLS itself, on the stream of accepted connections, rather than
//! through tonic's TLS setting: that keeps write coalescing ([`Coalesced`]) above TLS, so
//! that a response's frames become one TLS record and one socket write, and it lets the
//! certificate change while the server runs. Each new connection is handshaken with the
//! [`ServerConfig`] current at that moment; [`TlsFiles::reload`] builds a new one from
//! the files and swaps it in, so connections already open keep the session they
//! negotiated and are never dropped. The files are looked at every
//! [`RELOAD_POLL_INTERVAL`] (modification time and size) and on SIGHUP.
//!
//! With a client CA file, every client must present a certificate that chains to it
//! (mutual TLS); a handshake without one, or with one from another CA, fails.
//!
//! [`Coalesced`]: crate::coalesce::Coalesced

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::watch,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::startup::{Context as _, StartError};

/// How often the certificate files are looked at for changes.
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A handshake that has not finished after this long is dropped, so that a client that
/// connects and says nothing holds no task.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files TLS is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Turns on mutual TLS: clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// The server's TLS configuration, reloadable from its files.
pub struct TlsFiles {
    paths: TlsPaths,
    current: RwLock<Arc<ServerConfig>>,
    /// What the files looked like when last loaded.
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl TlsFiles {
    /// Loads the files; any problem with them is an error that names the file.
    pub fn load(paths: TlsPaths) -> Result<Self, StartError> {
        let stamps = stamps(&paths);
        let config = build(&paths)?;
        Ok(Self {
            paths,
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
        })
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// The configuration new connections are handshaken with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again and, when they are valid, uses them for new connections.
    /// On error the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), StartError> {
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps(&self.paths);
        let config = build(&self.paths)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// Whether a file changed (or appeared, or went) since the last load.
    fn changed(&self) -> bool {
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != stamps(&self.paths)
    }

    /// Reloads when the files change or SIGHUP arrives, until `stop`.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut hangup = hangup_signal();
        let mut ticker = tokio::time::interval(RELOAD_POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = ticker.tick() => {
                    if !self.changed() {
                        continue;
                    }
                    "files changed"
                }
                _ = next_hangup(&mut hangup) => "SIGHUP",
                _ = stop.wait_for(|stop| *stop) => return,
            };
            match self.reload() {
                Ok(()) => {
                    tracing::info!(reason = why, cert = %self.paths.cert.display(), "tls certificates reloaded")
                }
                Err(error) => tracing::error!(
                    reason = why,
                    error = error.chain(),
                    "tls certificates not reloaded; the previous ones stay in use"
                ),
            }
        }
    }
}

#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<()> {
    None
}

#[cfg(unix)]
async fn next_hangup(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Option<()>) {
    std::future::pending().await
}

fn stamps(paths: &TlsPaths) -> Vec<Option<(SystemTime, u64)>> {
    [
        Some(&paths.cert),
        Some(&paths.key),
        paths.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    })
    .collect()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).context(StartError::Tls, || {
        format!("cannot read the {what} {}", path.display())
    })
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, StartError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .context(StartError::Tls, || {
            format!("the {what} {} is not valid PEM", path.display())
        })?;
    if certs.is_empty() {
        return Err(StartError::new(
            StartError::Tls,
            format!("the {what} {} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// Builds a rustls configuration from the files: the certificate chain, its key, and
/// the client CA for mutual TLS. Offers HTTP/2 first (ALPN `h2`), as gRPC clients
/// expect, and HTTP/1.1 for HTTP/JSON and gRPC-Web clients that speak nothing else.
fn build(paths: &TlsPaths) -> Result<ServerConfig, StartError> {
    let chain = certificates(&paths.cert, "TLS certificate file")?;
    let key_pem = read(&paths.key, "TLS key file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        StartError::new(
            StartError::Tls,
            format!(
                "the TLS key file {} holds no usable PEM private key: {e}",
                paths.key.display()
            ),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context(StartError::Tls, || "tls protocol versions".into())?;
    let builder = match &paths.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "TLS client CA file")? {
                roots.add(cert).context(StartError::Tls, || {
                    format!(
                        "the TLS client CA file {} holds an unusable certificate",
                        ca.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .context(StartError::Tls, || {
                    format!("the TLS client CA file {}", ca.display())
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context(StartError::Tls, || {
            format!(
                "the TLS certificate {} and key {} do not make a usable pair",
                paths.cert.display(),
                paths.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// An accepted connection: plaintext, or TLS over TCP.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// Handshakes `stream` with the configuration current now.
    pub async fn accept(stream: TcpStream, tls: &TlsFiles) -> io::Result<Self> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(accepted) => Ok(Self::Tls(Box::new(accepted?))),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "tls handshake timed out",
            )),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Self::Plain(s) => s.connect_info(),
            Self::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}
