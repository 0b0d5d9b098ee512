//! The connection a client command uses: settings from flags, environment and profile
//! (in that order), a lazily connecting channel (plaintext, TLS or mutual TLS like the
//! server's listener), and clients that send the API key as a bearer token.

use std::{path::PathBuf, time::Duration};

use agentry_proto::v1::{
    context_service_client::ContextServiceClient, execution_service_client::ExecutionServiceClient,
    registry_service_client::RegistryServiceClient,
};
use prost::{Message, Name};
use tonic::{
    Request, Response, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use super::{Failure, Global, names::Names, output::Printer, profile, status::fail};

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:50051";

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Registry = RegistryServiceClient<InterceptedService<Channel, Auth>>;
pub type Contexts = ContextServiceClient<InterceptedService<Channel, Auth>>;
pub type Execution = ExecutionServiceClient<InterceptedService<Channel, Auth>>;

/// What a client command runs with.
pub struct Client {
    pub names: Names,
    pub out: Printer,
    channel: Channel,
    auth: Auth,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| fail!("{what} {}: {e}", path.display()))
}

impl Client {
    pub fn new(global: Global) -> Result<Self, Failure> {
        let profile = profile::selected(global.profile.as_deref())?;
        let address = global
            .address
            .or(profile.address)
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        let tls_ca = global.tls_ca.or(profile.tls_ca);
        let tls_cert = global.tls_cert.or(profile.tls_cert);
        let tls_key = global.tls_key.or(profile.tls_key);
        let server_name = global.tls_server_name.or(profile.tls_server_name);
        let tls_wanted = tls_ca.is_some() || tls_cert.is_some() || address.starts_with("https://");
        let url = if address.contains("://") {
            address.clone()
        } else if tls_wanted {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        };
        let mut endpoint = Endpoint::from_shared(url)
            .map_err(|e| fail!("--address {address:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if tls_wanted {
            let mut tls = ClientTlsConfig::new();
            tls = match &tls_ca {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?)),
                None => tls.with_native_roots(),
            };
            match (&tls_cert, &tls_key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(
                        read(cert, "--tls-cert")?,
                        read(key, "--tls-key")?,
                    ))
                }
                (None, None) => {}
                _ => return Err(fail!("--tls-cert and --tls-key go together")),
            }
            if let Some(name) = server_name {
                tls = tls.domain_name(name);
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| fail!("TLS settings: {e}"))?;
        }
        let key = match global.api_key.or(profile.api_key) {
            Some(key) if !key.is_empty() => Some(
                format!("Bearer {key}")
                    .parse()
                    .map_err(|_| fail!("the API key has characters a header cannot carry"))?,
            ),
            _ => None,
        };
        let format = global.output.or(profile.output);
        Ok(Self {
            names: Names {
                workspace: global.workspace.or(profile.workspace),
                project: global.project.or(profile.project),
            },
            out: Printer::new(format),
            channel: endpoint.connect_lazy(),
            auth: Auth(key),
        })
    }

    /// The connection itself, for clients other than the API's (health).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Prints the answer of a call.
    pub async fn show<M: Message + Name>(
        &self,
        call: impl Future<Output = Result<Response<M>, Status>>,
    ) -> Result<(), Failure> {
        self.out.print(&call.await?.into_inner())
    }

    pub fn registry(&self) -> Registry {
        RegistryServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn contexts(&self) -> Contexts {
        ContextServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn execution(&self) -> Execution {
        ExecutionServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }
}
