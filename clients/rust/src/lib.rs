//! Rust client for the Agentry API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agentry_client::Error> {
//! use agentry_client::{connect, pb};
//!
//! let mut agentry = connect("http://127.0.0.1:50051", "agk_…").await?;
//! let project = agentry
//!     .registry
//!     .get_project(pb::GetProjectRequest { name: "workspaces/acme/projects/web".into() })
//!     .await?
//!     .into_inner();
//! println!("{}", project.name);
//! # Ok(()) }
//! ```
//!
//! [`connect`] returns one tonic client per service sharing one HTTP/2 connection, each
//! sending `authorization: Bearer <api key>`. Failed calls convert into [`Error`], which
//! carries the `google.rpc` details the server attaches (the ErrorInfo `reason` and
//! metadata, field violations, quota violations, the retry delay). [`run_events`] follows
//! a run's event log and resumes after a dropped connection. [`connect_tls`] connects
//! over TLS or mutual TLS ([`Tls`]). [`Worker`] serves agents: it leases runs and turns a
//! handler's stream of [`worker::Step`]s into their events.

mod errors;
mod events;
mod tls;
pub mod worker;

pub use agentry_proto::v1 as pb;
pub use errors::{Details, Error, ErrorKind};
pub use events::run_events;
pub use prost;
pub use prost_types;
pub use tls::Tls;
pub use tonic;
pub use worker::{TaskContext, Worker, WorkerOptions};

use pb::{
    context_service_client::ContextServiceClient, execution_service_client::ExecutionServiceClient,
    registry_service_client::RegistryServiceClient,
};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

/// Adds `authorization: Bearer <api key>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(api_key: &str) -> Result<Self, Error> {
        format!("Bearer {api_key}")
            .parse()
            .map(Self)
            .map_err(|_| Error::local("the API key holds characters a header cannot carry"))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The transport of every client: one channel, the bearer interceptor.
pub type Svc = InterceptedService<Channel, Bearer>;

/// The three Agentry services over one connection.
#[derive(Clone)]
pub struct Agentry {
    pub registry: RegistryServiceClient<Svc>,
    pub contexts: ContextServiceClient<Svc>,
    pub execution: ExecutionServiceClient<Svc>,
}

impl Agentry {
    /// Clients over an existing channel (for custom TLS, timeouts or load balancing).
    pub fn with_channel(channel: Channel, api_key: &str) -> Result<Self, Error> {
        let bearer = Bearer::new(api_key)?;
        Ok(Self {
            registry: RegistryServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            contexts: ContextServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            execution: ExecutionServiceClient::with_interceptor(channel, bearer),
        })
    }
}

/// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`) with an API key.
pub async fn connect(endpoint: impl Into<String>, api_key: &str) -> Result<Agentry, Error> {
    connect_endpoint(endpoint_of(endpoint.into())?, api_key).await
}

/// Connects to `endpoint` (e.g. `https://agentry.internal:50051`) over TLS with an API key.
pub async fn connect_tls(
    endpoint: impl Into<String>,
    api_key: &str,
    tls: &Tls,
) -> Result<Agentry, Error> {
    let endpoint = endpoint_of(endpoint.into())?
        .tls_config(tls.config())
        .map_err(|e| Error::local(format!("invalid TLS settings: {e}")))?;
    connect_endpoint(endpoint, api_key).await
}

fn endpoint_of(endpoint: String) -> Result<Endpoint, Error> {
    Ok(Endpoint::from_shared(endpoint)
        .map_err(|e| Error::local(format!("invalid endpoint: {e}")))?
        .tcp_nodelay(true))
}

async fn connect_endpoint(endpoint: Endpoint, api_key: &str) -> Result<Agentry, Error> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Error::local(format!("cannot connect: {e}")))?;
    Agentry::with_channel(channel, api_key)
}
