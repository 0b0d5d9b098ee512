//! Starts the real server binary on a fresh database and connects clients to it.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agentry_proto::v1::{
    context_service_client::ContextServiceClient, registry_service_client::RegistryServiceClient,
};
use anyhow::{Context as _, bail};
use sqlx::{Connection, Executor, PgConnection};
use tonic::{
    metadata::MetadataValue,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

/// Adds `authorization: Bearer <key>`.
#[derive(Clone)]
pub struct Auth(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}
pub type Registry = RegistryServiceClient<InterceptedService<Channel, Auth>>;
pub type Contexts = ContextServiceClient<InterceptedService<Channel, Auth>>;

pub struct Server {
    child: Child,
    pub addr: String,
    pub database_url: String,
    pub root_key: String,
    admin_url: String,
    database: String,
    /// Drops the database when it stops (the server that created it).
    owns_database: bool,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        if !self.owns_database {
            return;
        }
        let (admin_url, database) = (self.admin_url.clone(), self.database.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().map(|rt| {
                rt.block_on(async {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                        let _ = admin
                            .execute(
                                format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")
                                    .as_str(),
                            )
                            .await;
                    }
                })
            })
        })
        .join();
    }
}

pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let start = base.find("://").map_or(0, |i| i + 3);
    let path = base[start..].find('/').map_or(base.len(), |i| start + i);
    let mut out = format!("{}/{database}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

pub async fn start(binary: &str, admin_url: &str, root_key: &str) -> anyhow::Result<Server> {
    let server = start_with(binary, admin_url, root_key, None, &[], &[]).await?;
    // A replica that hears no other one stops NOTIFYing its changes once it has heard
    // only itself for three liveness periods (1 s each by default); measure what a
    // replica that has been up for a while does, not its first seconds.
    tokio::time::sleep(FEED_PROBATION).await;
    Ok(server)
}

/// Three liveness periods of the change feed, and a little more.
const FEED_PROBATION: Duration = Duration::from_millis(3_500);

/// Starts another server: on `existing`'s database when given (else a new one), with
/// extra flags and environment.
pub async fn start_with(
    binary: &str,
    admin_url: &str,
    root_key: &str,
    existing: Option<&Server>,
    args: &[String],
    env: &[(&str, String)],
) -> anyhow::Result<Server> {
    let (database, owns_database) = match existing {
        Some(server) => (server.database.clone(), false),
        None => {
            let database = format!("agentry_bench_{}", uuid::Uuid::now_v7().simple());
            let mut admin = PgConnection::connect(admin_url)
                .await
                .context("connect to DATABASE_URL")?;
            admin
                .execute(format!("CREATE DATABASE \"{database}\"").as_str())
                .await?;
            (database, true)
        }
    };
    let database_url = with_database(admin_url, &database);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(binary)
        .args(["serve", "--listen", &addr, "--database-url", &database_url])
        .args(args)
        .env("AGENTRY_ROOT_KEY", root_key)
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {binary}; build it with cargo build --release"))?;
    let server = Server {
        child,
        addr,
        database_url,
        root_key: root_key.to_owned(),
        admin_url: admin_url.to_owned(),
        database,
        owns_database,
    };
    let started = Instant::now();
    loop {
        if let Ok(channel) = Endpoint::from_shared(format!("http://{}", server.addr))?
            .connect()
            .await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            if health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok()
            {
                return Ok(server);
            }
        }
        // Generous: under `valgrind --tool=callgrind` a server starts slowly.
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the server did not become healthy within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

fn auth(key: &str) -> Auth {
    Auth(format!("Bearer {key}").parse().expect("ascii key"))
}

pub fn registry(channel: Channel, key: &str) -> Registry {
    RegistryServiceClient::with_interceptor(channel, auth(key))
}

pub fn contexts(channel: Channel, key: &str) -> Contexts {
    ContextServiceClient::with_interceptor(channel, auth(key))
}
