//! `agentry`: the gRPC server (`serve`) and schema migrations (`migrate`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use agentry_server::config::{Config, LogFormat, Secret};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// mimalloc rather than the system allocator: a request allocates and frees many small
/// buffers across threads, where glibc's malloc showed up as a tenth of the server's CPU
/// under load (`scripts/bench context`, perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "agentry",
    version,
    about = "Multi-tenant control plane for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API.
    Serve(ServeArgs),
    /// Apply schema migrations and exit.
    Migrate(DatabaseArgs),
    /// Ask a running server's `grpc.health.v1` whether it is SERVING (exit 0) or not (1).
    Health(HealthArgs),
}

#[derive(Args)]
struct HealthArgs {
    /// The server's address.
    #[arg(long, env = "AGENTRY_LISTEN", default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// A service name; empty asks about the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
}

#[derive(Args)]
struct DatabaseArgs {
    /// TOML configuration file; environment and flags override it.
    #[arg(long, env = "AGENTRY_CONFIG")]
    config: Option<PathBuf>,
    /// `sqlite://agentry.db` (default) or `postgres://user@host/db`.
    #[arg(long, env = "AGENTRY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, env = "AGENTRY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Do not apply migrations at start.
    #[arg(long, env = "AGENTRY_NO_MIGRATE")]
    no_migrate: bool,
    /// Log format.
    #[arg(long, env = "AGENTRY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Seconds between reaper passes.
    #[arg(long, env = "AGENTRY_REAPER_INTERVAL_SECS")]
    reaper_interval_secs: Option<f64>,
}

fn load(args: &DatabaseArgs) -> anyhow::Result<Config> {
    let mut config = Config::from_file(args.config.as_ref())?;
    if let Some(url) = &args.database_url {
        config.database_url = Secret::new(url.clone());
    }
    // The root key comes from the environment only: never from a flag, where it would
    // show in the process list.
    if let Ok(key) = std::env::var("AGENTRY_ROOT_KEY")
        && !key.is_empty()
    {
        config.root_key = Some(Secret::new(key));
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Health(args) => health(args).await,
        Command::Migrate(args) => {
            let config = load(&args)?;
            let _telemetry = agentry_server::telemetry::init(config.log_format)?;
            let store = agentry_store::Store::connect(config.database_url.expose(), 2)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store.migrate().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load(&args.database)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.no_migrate {
        config.migrate = false;
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    if let Some(secs) = args.reaper_interval_secs {
        config.reaper_interval =
            Duration::try_from_secs_f64(secs).context("invalid --reaper-interval-secs")?;
    }
    let _telemetry = agentry_server::telemetry::init(config.log_format)?;
    let mut server = agentry_server::start(config).await?;
    if let Some(key) = &server.generated_root_key {
        // Printed once, on the start that generated it; only its hash is stored.
        println!(
            "Generated the root API key (shown once; set AGENTRY_ROOT_KEY to choose your own):\n\n    {key}\n"
        );
    }
    println!("agentry listening on {}", server.local_addr);
    tokio::select! {
        result = server.stopped() => result,
        _ = shutdown_signal() => {
            tracing::info!("shutdown requested");
            server.shutdown().await
        }
    }
}

async fn health(args: HealthArgs) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))?
        .connect_timeout(Duration::from_secs(2));
    let mut client = HealthClient::new(endpoint.connect().await.context("cannot connect")?);
    let status = client
        .check(HealthCheckRequest {
            service: args.service,
        })
        .await?
        .into_inner()
        .status();
    println!("{}", status.as_str_name());
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
