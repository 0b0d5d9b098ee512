//! The agentry gRPC server: configuration, the auth layer, one module per service, and
//! [`start`], which tests and `agentry serve` both use. Handlers reach storage through
//! its port (`agentry_core::port::Storage`); only [`start`] names the concrete store.

pub mod auth;
mod call;
pub mod cli;
mod coalesce;
pub mod config;
mod contexts;
mod convert;
mod error;
mod execution;
mod layer;
pub mod metrics;
mod notify;
pub mod observe;
mod paging;
mod reaper;
mod registry;
mod request;
mod resource;
mod rpc;
mod standard;
pub mod startup;
pub mod telemetry;
pub mod tls;
mod web;

pub use startup::StartError;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use agentry_core::{
    apikey,
    page::PageTokens,
    port::{ChangeFeed, Storage},
};
use agentry_proto::v1::{
    execution_service_server::ExecutionServiceServer,
    registry_service_server::RegistryServiceServer,
};
use agentry_store::Store;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::{
    auth::{AuthLayer, Authenticator, KeyCache},
    coalesce::Coalesced,
    config::Config,
    contexts::ContextRoutes,
    execution::Execution,
    observe::{ObserveLayer, Observer},
    registry::Registry,
    request::RequestCtx,
    startup::Context as _,
    tls::{Conn, TlsFiles},
};

/// Bytes of context documents ReadContext keeps converted (see `contexts::VersionCache`).
const CONTEXT_CACHE_BYTES: u64 = 64 << 20;

/// Service names reported by `grpc.health.v1`, besides the overall `""`.
const SERVICES: &[&str] = &[
    "agentry.v1.RegistryService",
    "agentry.v1.ContextService",
    "agentry.v1.ExecutionService",
];

/// A server started by [`start`].
pub struct RunningServer {
    pub local_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// The root key generated on this start, when none was configured and none existed.
    pub generated_root_key: Option<String>,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    reaper: JoinHandle<()>,
    listener: JoinHandle<()>,
    tls_watcher: Option<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
    store: Arc<dyn Storage>,
    grace: Duration,
}

impl RunningServer {
    /// The store's change feed: how many waiters it has woken, how many wait now.
    pub fn change_feed(&self) -> Arc<dyn ChangeFeed> {
        self.store.clone()
    }

    /// Stops accepting calls (health turns NOT_SERVING first), waits up to the grace
    /// period for in-flight calls, then closes the database pool.
    pub async fn shutdown(self) -> Result<(), StartError> {
        let _ = self.stop.send(true);
        let result = match tokio::time::timeout(self.grace, self.server).await {
            Ok(joined) => served(joined),
            Err(_) => {
                tracing::warn!(
                    grace_ms = self.grace.as_millis() as u64,
                    "in-flight calls outlived the grace period"
                );
                Ok(())
            }
        };
        let _ = self.reaper.await;
        let _ = self.listener.await;
        if let Some(watcher) = self.tls_watcher {
            let _ = watcher.await;
        }
        if let Some(metrics) = self.metrics {
            let _ = metrics.await;
        }
        self.store.close().await;
        result
    }

    /// Resolves when the server stops by itself (it failed).
    pub async fn stopped(&mut self) -> Result<(), StartError> {
        served((&mut self.server).await)
    }
}

/// How the server's task ended.
fn served(
    joined: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), StartError> {
    joined
        .context(StartError::Serve, || "server task panicked".into())?
        .context(StartError::Serve, || "server failed".into())
}

/// Accepted connections with Nagle's algorithm off (a response of several HTTP/2 frames
/// would otherwise wait for the client's delayed ACK, about 40 ms), TLS terminated when
/// configured, and writes coalesced above TLS (see [`coalesce`]), so that the frames a
/// connection's task queued in one poll become one TLS record and one socket write.
///
/// TLS handshakes run in tasks of their own, so that a slow or silent client never holds
/// up accepting the next one; a failed handshake (a plaintext client, no client
/// certificate under mutual TLS) closes that connection only.
fn incoming(
    listener: TcpListener,
    tls: Option<Arc<TlsFiles>>,
) -> futures::stream::BoxStream<'static, std::io::Result<Coalesced<Conn>>> {
    use futures::StreamExt as _;
    let Some(tls) = tls else {
        return TcpListenerStream::new(listener)
            .map(|accepted| {
                let stream = accepted?;
                stream.set_nodelay(true)?;
                Ok(Coalesced::new(Conn::Plain(stream)))
            })
            .boxed();
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = sender.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (sender, tls) = (sender.clone(), tls.clone());
            tokio::spawn(async move {
                let peer = stream.peer_addr().ok();
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                match Conn::accept(stream, &tls).await {
                    Ok(conn) => {
                        let _ = sender.send(Ok(Coalesced::new(conn))).await;
                    }
                    Err(error) => tracing::debug!(?peer, %error, "tls handshake failed"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver).boxed()
}

/// What every handler shares, and the authenticator with its root key (generated and
/// returned on the first start when none is configured).
async fn handler_state(
    config: &Config,
    store: &Arc<dyn Storage>,
    stopping: watch::Receiver<bool>,
) -> agentry_core::Result<(Arc<RequestCtx>, Arc<Authenticator>, Option<String>)> {
    let (root_hash, generated_root_key) = match &config.root_key {
        Some(key) => (apikey::hash(key.expose()), None),
        None => store.root_key_hash().await?,
    };
    let pages = PageTokens::new(store.page_token_key().await?);
    let keys = Arc::new(KeyCache::new(config.auth_cache_ttl));
    let ctx = Arc::new(RequestCtx {
        keys: keys.clone(),
        store: store.clone(),
        pages,
        feed: store.clone(),
        stopping: stopping.clone(),
        revisions: Default::default(),
        context_versions: contexts::VersionCache::new(CONTEXT_CACHE_BYTES),
    });
    let auth = Arc::new(Authenticator::new(
        store.clone(),
        root_hash,
        keys,
        stopping.clone(),
    ));
    Ok((ctx, auth, generated_root_key))
}

/// Server reflection over the API and the google protos its errors and health use.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(agentry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Resolves when the server is asked to stop, after reporting every service NOT_SERVING.
async fn draining(
    mut stopped: watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
) {
    let _ = stopped.wait_for(|stop| *stop).await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for service in SERVICES {
        health
            .set_service_status(*service, ServingStatus::NotServing)
            .await;
    }
    tracing::info!("draining in-flight calls");
}

/// Serves every service on `listener` behind the layer stack, in the background, until
/// `stopped` turns true.
async fn serve(
    config: &Config,
    ctx: Arc<RequestCtx>,
    auth: Arc<Authenticator>,
    observer: Arc<Observer>,
    listener: TcpListener,
    tls: Option<Arc<TlsFiles>>,
    stopped: watch::Receiver<bool>,
) -> Result<JoinHandle<Result<(), tonic::transport::Error>>, StartError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in SERVICES {
        health
            .set_service_status(*service, ServingStatus::Serving)
            .await;
    }
    let limit = config.max_message_bytes;
    let registry = RegistryServiceServer::new(Registry::new(ctx.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let contexts = ContextRoutes::new(ctx.clone(), limit);
    let execution = ExecutionServiceServer::new(Execution::new(ctx))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    // HTTP/JSON and gRPC-Web calls become gRPC calls first (see `web`). The observe
    // layer is next: it times the whole call, auth included, and sees unauthenticated
    // calls too.
    let router = Server::builder()
        .accept_http1(true)
        .layer(tower::util::option_layer(web::cors(
            &config.cors_allowed_origins,
        )))
        .layer(web::connect_layer(limit))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(ObserveLayer::new(observer))
        .layer(AuthLayer::new(auth))
        .layer(tower::util::MapResponseLayer::new(
            error::message_too_large(limit),
        ))
        .layer(web::RefusalLayer)
        .add_service(health_service)
        .add_service(reflection().build_v1().during(StartError::Listen)?)
        .add_service(reflection().build_v1alpha().during(StartError::Listen)?)
        .add_service(registry)
        .add_service(contexts)
        .add_service(execution);
    Ok(tokio::spawn(router.serve_with_incoming_shutdown(
        incoming(listener, tls),
        draining(stopped, health),
    )))
}

/// Connects to the database, migrates, binds and serves in the background.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    // Certificate problems are start-up errors, before anything else is touched.
    let tls = config.tls()?.map(TlsFiles::load).transpose()?.map(Arc::new);
    // Before anything records a metric: handles bind to the recorder present then.
    let recorder = config
        .metrics_listen
        .as_ref()
        .map(|_| metrics::install())
        .transpose()?;
    let store = Store::connect(config.database_url.expose(), config.db_max_connections)
        .await
        .during(StartError::Database)?;
    if config.migrate {
        store.migrate().await.during(StartError::Database)?;
    }
    let (stop, stopped) = watch::channel(false);
    // Other replicas' changes, and the feed's safety net (Postgres).
    let follow = {
        let (store, period, stopped) = (store.clone(), config.poll_interval, stopped.clone());
        async move { store.follow_changes(period, stopped).await }
    };
    let backend = store.backend();
    let store: Arc<dyn Storage> = Arc::new(store);
    let (ctx, auth, generated_root_key) = handler_state(&config, &store, stopped.clone())
        .await
        .during(StartError::Database)?;

    let listener = TcpListener::bind(config.listen.as_str())
        .await
        .context(StartError::Listen, || {
            format!("cannot listen on {}", config.listen)
        })?;
    let local_addr = listener.local_addr().during(StartError::Listen)?;

    let listener_task = tokio::spawn(follow);
    let tls_watcher = tls
        .clone()
        .map(|tls| tokio::spawn(tls.watch(stopped.clone())));
    let reaper = tokio::spawn(reaper::run(
        store.clone(),
        config.reaper_interval,
        stopped.clone(),
    ));
    let (metrics_addr, metrics_task) = match (&config.metrics_listen, recorder) {
        (Some(addr), Some(recorder)) => {
            let (bound, task) =
                metrics::serve(addr, recorder, store.clone(), stopped.clone()).await?;
            (Some(bound), Some(task))
        }
        _ => (None, None),
    };
    let observer = Arc::new(Observer::new(metrics_addr.is_some(), telemetry::spans()));
    let server = serve(&config, ctx, auth, observer, listener, tls.clone(), stopped).await?;
    tracing::info!(
        addr = %local_addr,
        backend = ?backend,
        tls = tls.is_some(),
        mutual_tls = tls.as_ref().is_some_and(|t| t.paths().client_ca.is_some()),
        metrics = ?metrics_addr,
        "serving"
    );
    Ok(RunningServer {
        local_addr,
        metrics_addr,
        metrics: metrics_task,
        generated_root_key,
        stop,
        server,
        reaper,
        listener: listener_task,
        tls_watcher,
        store,
        grace: config.shutdown_grace,
    })
}
