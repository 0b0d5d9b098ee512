//! End-to-end harness: every test gets its own server on `127.0.0.1:0` and its own fresh
//! database (a temp-dir SQLite file, or a new database on the Postgres server named by
//! `DATABASE_URL`), and talks to it through the generated tonic client, exactly as a user
//! would. [`backend_tests!`] runs one test body against both back ends, so the two cannot
//! drift apart.
//!
//! Besides spawning, the harness holds what almost every test needs: a tenant (a
//! workspace with an admin key) in one call, short request builders ([`req`]), JSON ⇄
//! `Struct` conversion ([`doc`]) and assertions on the error details the server
//! promises ([`check`]).

pub mod check;
pub mod db;
pub mod doc;
pub mod http;
pub mod pg_proxy;
pub mod pki;
pub mod process;
pub mod req;

use std::{net::SocketAddr, time::Duration};

pub use agentry_proto::v1 as pb;
use agentry_server::{
    RunningServer,
    config::{Config, Secret},
};
pub use check::*;
pub use db::{FreshDatabase, fresh_database};
pub use doc::*;
use pb::{
    execution_service_client::ExecutionServiceClient,
    registry_service_client::RegistryServiceClient,
};
pub use pg_proxy::PgProxy;
pub use req::{Must, Paged, WithEtag, WithForce, WithRequestId};
pub use serde_json::json;
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

pub type Registry = RegistryServiceClient<InterceptedService<Channel, Bearer>>;
pub type Execution = ExecutionServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body against SQLite and against Postgres:
///
/// ```ignore
/// backend_tests!(missing_project_is_not_found, |app| async move {
///     let acme = app.tenant("acme").await;
///     // …
/// });
/// ```
///
/// The body borrows `app`; the server is shut down after the body returns.
#[macro_export]
macro_rules! backend_tests {
    ($name:ident, |$app:ident| async move $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let $app = $crate::spawn_app($crate::Backend::Sqlite).await;
                $body;
                $app.shutdown().await;
            }

            #[tokio::test]
            async fn postgres() {
                let $app = $crate::spawn_app($crate::Backend::Postgres).await;
                $body;
                $app.shutdown().await;
            }
        }
    };
}

/// A running server with its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`, when the configuration asked for them.
    pub metrics_addr: Option<SocketAddr>,
    pub root_key: String,
    pub backend: Backend,
    channel: Channel,
    server: Option<RunningServer>,
    database: FreshDatabase,
}

/// Server logs go to the test output when `TEST_LOG` is set (filter: `RUST_LOG`, default
/// `info`); otherwise they are dropped, so passing tests stay quiet.
fn init_test_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// Starts a server on a free port with a fresh database and a random ROOT key.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// [`spawn_app`] with the test's own changes to the configuration. When `configure`
/// turns TLS on, the harness's own channel connects lazily (plaintext calls through it
/// fail); the test brings its own TLS clients.
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    init_test_logging();
    let database = fresh_database(backend).await;
    let unique = uuid::Uuid::now_v7().simple();
    let root_key = format!("agk_root_{unique}{}", uuid::Uuid::now_v7().simple());
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        database_url: Secret::new(database.url.clone()),
        migrate: true,
        root_key: Some(Secret::new(root_key.clone())),
        reaper_interval: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(1),
        db_max_connections: 5,
        ..Config::default()
    };
    configure(&mut config);
    let tls = config.tls_cert_file.is_some();
    let server = agentry_server::start(config)
        .await
        .expect("the server starts");
    let addr = server.local_addr;
    let metrics_addr = server.metrics_addr;
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("valid endpoint");
    let channel = if tls {
        endpoint.connect_lazy()
    } else {
        endpoint
            .connect()
            .await
            .expect("connect to the test server")
    };
    TestApp {
        addr,
        metrics_addr,
        root_key,
        backend,
        channel,
        server: Some(server),
        database,
    }
}

impl TestApp {
    /// The harness's channel to the server (plaintext).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The test's own database.
    pub fn database(&self) -> &FreshDatabase {
        &self.database
    }

    /// A client that sends `authorization: Bearer <key>`, or no header for an empty key.
    pub async fn registry(&self, key: &str) -> Registry {
        RegistryServiceClient::with_interceptor(self.channel.clone(), Bearer::new(key))
    }

    /// A client that sends `authorization: <value>` verbatim.
    pub async fn registry_with_header(&self, value: &str) -> Registry {
        RegistryServiceClient::with_interceptor(self.channel.clone(), Bearer::header(value))
    }

    /// An ExecutionService client that sends `authorization: Bearer <key>`, or no header
    /// for an empty key.
    pub async fn execution(&self, key: &str) -> Execution {
        ExecutionServiceClient::with_interceptor(self.channel.clone(), Bearer::new(key))
    }

    pub async fn root(&self) -> Registry {
        self.registry(&self.root_key).await
    }

    /// Creates workspace `id` (default quotas) with an ADMIN key.
    pub async fn tenant(&self, id: &str) -> Tenant {
        self.tenant_with_quotas(id, pb::Quotas::default()).await
    }

    pub async fn tenant_with_quotas(&self, id: &str, quotas: pb::Quotas) -> Tenant {
        let mut root = self.root().await;
        let spec = pb::Workspace {
            display_name: format!("Workspace {id}"),
            quotas: Some(quotas),
            ..Default::default()
        };
        let workspace = root
            .create_workspace(req::create_workspace(id, spec))
            .await
            .must();
        let admin_key = create_key(&mut root, &workspace.name, pb::Role::Admin).await;
        let admin = self.registry(&admin_key).await;
        Tenant {
            id: id.into(),
            name: workspace.name.clone(),
            admin_key,
            admin,
            workspace,
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server
                .shutdown()
                .await
                .expect("the server shuts down cleanly");
        }
        self.database.drop_database().await;
    }
}

async fn create_key(client: &mut Registry, workspace: &str, role: pb::Role) -> String {
    let created = client
        .create_api_key(req::create_api_key(workspace, role as i32))
        .await
        .must();
    assert!(
        !created.secret.is_empty(),
        "a new key comes with its secret"
    );
    created.secret
}

/// A workspace with an ADMIN key and a client using it.
pub struct Tenant {
    /// The slug, e.g. `acme`.
    pub id: String,
    /// `workspaces/{id}`.
    pub name: String,
    pub admin_key: String,
    pub admin: Registry,
    pub workspace: pb::Workspace,
}

impl Tenant {
    pub fn project_name(&self, project: &str) -> String {
        format!("{}/projects/{project}", self.name)
    }

    pub fn agent_name(&self, agent: &str) -> String {
        format!("{}/agents/{agent}", self.name)
    }

    pub fn instance_name(&self, project: &str, instance: &str) -> String {
        format!("{}/projects/{project}/instances/{instance}", self.name)
    }

    /// A new key of this workspace with `role`; returns its secret.
    pub async fn key(&self, role: pb::Role) -> String {
        create_key(&mut self.admin.clone(), &self.name, role).await
    }

    /// The secret of a key of this workspace with `role`: created on first use, the same
    /// key afterwards.
    pub async fn role_key(&self, role: pb::Role) -> String {
        type Keys = std::sync::Mutex<std::collections::HashMap<(String, i32), String>>;
        static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
        let keys = KEYS.get_or_init(Default::default);
        // The admin key is random per tenant, so it tells tenants of different tests apart.
        let slot = (self.admin_key.clone(), role as i32);
        if let Some(secret) = keys.lock().expect("key cache").get(&slot) {
            return secret.clone();
        }
        let secret = self.key(role).await;
        keys.lock()
            .expect("key cache")
            .entry(slot)
            .or_insert(secret)
            .clone()
    }

    pub async fn project(&self, id: &str) -> pb::Project {
        let project = pb::Project {
            display_name: format!("Project {id}"),
            ..Default::default()
        };
        let request = req::create_project_with(&self.name, id, project);
        self.admin.clone().create_project(request).await.must()
    }

    pub async fn agent(&self, id: &str, agent: pb::Agent) -> pb::Agent {
        self.admin
            .clone()
            .create_agent(req::create_agent(&self.name, id, agent))
            .await
            .must()
    }

    pub async fn instance(&self, project: &str, id: &str, instance: pb::Instance) -> pb::Instance {
        let request = req::create_instance(&self.project_name(project), id, instance);
        self.admin.clone().create_instance(request).await.must()
    }

    /// Project `project`, agent `agent` (no schema) and instance `instance` of it.
    pub async fn instance_with_agent(
        &self,
        project: &str,
        agent: &str,
        instance: &str,
    ) -> pb::Instance {
        self.project(project).await;
        let agent = self.agent(agent, simple_agent()).await;
        self.instance(
            project,
            instance,
            pb::Instance {
                agent: agent.name,
                ..Default::default()
            },
        )
        .await
    }

    /// CreateInstance in `project`, returning the status on failure.
    pub async fn try_instance(
        &self,
        project: &str,
        id: &str,
        instance: pb::Instance,
    ) -> Result<pb::Instance, Status> {
        let request = req::create_instance(&self.project_name(project), id, instance);
        self.admin.clone().create_instance(request).await.inner()
    }

    pub async fn get_instance(&self, project: &str, id: &str) -> pb::Instance {
        let request = req::get_instance(&self.instance_name(project, id));
        self.admin.clone().get_instance(request).await.must()
    }

    pub async fn set_status(
        &self,
        project: &str,
        id: &str,
        status: pb::InstanceStatus,
    ) -> Result<pb::Instance, Status> {
        let request = req::set_status(&self.instance_name(project, id), status);
        self.admin
            .clone()
            .set_instance_status(request)
            .await
            .inner()
    }

    pub async fn heartbeat(&self, project: &str, id: &str) -> Result<pb::Instance, Status> {
        let request = req::heartbeat(&self.instance_name(project, id));
        self.admin.clone().heartbeat_instance(request).await.inner()
    }
}

/// An agent whose configs need a string `model` and allow `temperature` up to 2; its
/// defaults are `{"model": "small", "temperature": 1.0}`.
pub fn schema_agent() -> pb::Agent {
    pb::Agent {
        config_schema: Some(to_struct(json!({
            "type": "object",
            "properties": {"model": {"type": "string"}, "temperature": {"type": "number", "maximum": 2}},
            "required": ["model"]
        }))),
        default_config: Some(to_struct(json!({"model": "small", "temperature": 1.0}))),
        ..simple_agent()
    }
}

/// A minimal enabled agent definition.
pub fn simple_agent() -> pb::Agent {
    pb::Agent {
        display_name: "Helper".into(),
        agent_type: "langgraph".into(),
        enabled: Some(true),
        ..Default::default()
    }
}

/// Adds `authorization: Bearer <key>` to every call; an empty key sends no header.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(key: &str) -> Self {
        if key.is_empty() {
            return Self(None);
        }
        Self::header(&format!("Bearer {key}"))
    }

    /// Sends `authorization: <value>` exactly as given.
    pub fn header(value: &str) -> Self {
        Self(Some(value.parse().expect("an ASCII header value")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
