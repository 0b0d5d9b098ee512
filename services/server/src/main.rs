//! `agentry`: the gRPC server (`serve`), schema migrations (`migrate`), the effective
//! configuration (`config`), a health probe (`health`), and the client commands
//! (`agentry workspaces list`, `agentry runs follow …`; see `agentry_server::cli`).

use std::path::PathBuf;

use agentry_server::{
    StartError,
    config::{self, Loaded, SETTINGS},
    startup::Context as _,
};
use clap::{Arg, ArgAction, ArgMatches, Args, Command as ClapCommand, FromArgMatches, Parser};
use clap::{Subcommand, parser::ValueSource};

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
    Serve(SettingsArgs),
    /// Apply schema migrations and exit.
    Migrate(SettingsArgs),
    /// Print the effective configuration, secrets redacted, with where each value came
    /// from (default, file, env, flag).
    Config(SettingsArgs),
    /// Ask a running server's `grpc.health.v1` whether it is SERVING (exit 0) or not (1).
    Health(Box<HealthArgs>),
    #[command(flatten)]
    Client(Box<agentry_server::cli::Command>),
}

#[derive(Args)]
struct HealthArgs {
    /// A service name; empty asks about the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// Older spelling of --address.
    #[arg(long, hide = true, conflicts_with = "address")]
    addr: Option<String>,
    /// Address and TLS like every client command's.
    #[command(flatten)]
    global: agentry_server::cli::Global,
}

/// `--config` and one flag per setting of [`SETTINGS`], built from that table.
struct SettingsArgs {
    config: Option<PathBuf>,
    /// Settings given as flags: key and text value.
    flags: Vec<(&'static str, String)>,
}

impl SettingsArgs {
    fn load(&self) -> Result<Loaded, StartError> {
        config::load(
            self.config.as_deref(),
            |name| std::env::var(name).ok(),
            self.flags.clone(),
        )
    }
}

impl FromArgMatches for SettingsArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Vec::new();
        for setting in SETTINGS {
            if setting.flag().is_some()
                && matches.value_source(setting.key) == Some(ValueSource::CommandLine)
                && let Some(value) = matches.get_one::<String>(setting.key)
            {
                flags.push((setting.key, value.clone()));
            }
        }
        // Older spellings, still accepted.
        if matches.get_flag("no_migrate") {
            flags.push(("migrate", "false".into()));
        }
        if let Some(secs) = matches.get_one::<String>("reaper_interval_secs") {
            flags.push(("reaper_interval", secs.clone()));
        }
        Ok(Self {
            config: matches.get_one::<PathBuf>("config").cloned(),
            flags,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for SettingsArgs {
    fn augment_args(mut cmd: ClapCommand) -> ClapCommand {
        cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .env("AGENTRY_CONFIG")
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML configuration file; environment and flags override it"),
        );
        for setting in SETTINGS {
            let Some(flag) = setting.flag() else { continue };
            cmd = cmd.arg(
                Arg::new(setting.key)
                    .long(flag)
                    .value_name(setting.value_name)
                    .help(format!("{} [env: {}]", setting.help, setting.env())),
            );
        }
        cmd.arg(
            Arg::new("no_migrate")
                .long("no-migrate")
                .action(ArgAction::SetTrue)
                .help("same as --migrate false [env: AGENTRY_NO_MIGRATE]"),
        )
        .arg(
            Arg::new("reaper_interval_secs")
                .long("reaper-interval-secs")
                .hide(true),
        )
    }

    fn augment_args_for_update(cmd: ClapCommand) -> ClapCommand {
        Self::augment_args(cmd)
    }
}

#[tokio::main]
async fn main() -> Result<(), StartError> {
    match Cli::parse().command {
        Command::Client(command) => {
            let code =
                agentry_server::cli::run(*command, <Cli as clap::CommandFactory>::command).await;
            std::process::exit(code)
        }
        Command::Serve(args) => serve(args.load()?).await,
        Command::Health(args) => std::process::exit(health(*args).await),
        Command::Config(args) => {
            print!("{}", args.load()?.render());
            Ok(())
        }
        Command::Migrate(args) => {
            let config = args.load()?.config;
            let _telemetry = agentry_server::telemetry::init(config.log_format)?;
            let store = agentry_store::Store::connect(config.database_url.expose(), 2)
                .await
                .during(StartError::Database)?;
            store.migrate().await.during(StartError::Database)?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}

async fn serve(loaded: Loaded) -> Result<(), StartError> {
    let config = loaded.config;
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

async fn health(args: HealthArgs) -> i32 {
    let mut global = args.global;
    global.address = global.address.or(args.addr);
    match agentry_server::cli::health::run(global, args.service).await {
        Ok(()) => 0,
        Err(failure) => failure.report(),
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
