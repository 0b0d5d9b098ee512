//! The client commands of the `agentry` binary (`agentry workspaces list`, `agentry runs
//! follow RUN`, …): one module per command group, like `etcdctl`'s `ctlv3/command/`, and
//! one printer per output format ([`output`]).
//!
//! Every group takes the same connection options ([`Global`]): flags, then environment,
//! then the selected profile of the CLI's config file ([`profile`]), then defaults.
//! A command returns `Result<(), Failure>`; [`run`] turns a failure into one line on
//! stderr and the exit status of its class ([`status`]).

mod agents;
mod audit;
mod conn;
mod contexts;
mod diff;
mod events;
mod follow;
pub mod health;
mod instances;
mod listing;
mod named;
mod names;
mod output;
mod profile;
mod registry;
mod runs;
mod sessions;
mod status;
mod time;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

pub use status::Failure;

/// Connection, defaults for relative names, and output: accepted by every client command
/// (before or after the subcommand).
#[derive(Args, Clone, Debug, Default)]
pub struct Global {
    /// Server address: host:port, or an http:// or https:// URL [default: 127.0.0.1:50051]
    #[arg(long, env = "AGENTRY_ADDRESS", global = true)]
    pub address: Option<String>,
    /// Bearer API key
    #[arg(long, env = "AGENTRY_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Profile of the CLI config file to use instead of the current one
    #[arg(long, env = "AGENTRY_PROFILE", global = true)]
    pub profile: Option<String>,
    /// Workspace that relative names are resolved in (`acme` or `workspaces/acme`)
    #[arg(long, short = 'w', env = "AGENTRY_WORKSPACE", global = true)]
    pub workspace: Option<String>,
    /// Project that relative names are resolved in (`web`, or its full name)
    #[arg(long, short = 'p', env = "AGENTRY_PROJECT", global = true)]
    pub project: Option<String>,
    /// Output format [default: table on a terminal, json otherwise]
    #[arg(long, short = 'o', value_enum, global = true)]
    pub output: Option<Format>,
    /// PEM CA certificate that signed the server's certificate (turns TLS on)
    #[arg(long, env = "AGENTRY_TLS_CA", global = true, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires mutual TLS
    #[arg(long, env = "AGENTRY_TLS_CERT", global = true, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "AGENTRY_TLS_KEY", global = true, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the server's certificate against [default: the address's host]
    #[arg(long, env = "AGENTRY_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// A command group with the options every client command takes.
#[derive(Args, Debug)]
pub struct Group<T: Subcommand> {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: T,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Workspaces (tenants): create, get, list, update, delete.
    Workspaces(Group<registry::SpecCmd>),
    /// Projects of a workspace: create, get, list, update, delete.
    Projects(Group<registry::SpecCmd>),
    /// API keys of a workspace: create (prints the secret once), list, delete.
    Keys(Group<registry::KeysCmd>),
    /// Agent definitions: create and update from a YAML or JSON file, revisions, diff.
    Agents(Group<agents::AgentsCmd>),
    /// Agent instances: create, get, list, set-status, heartbeat, delete.
    Instances(Group<instances::InstancesCmd>),
    /// Versioned JSON contexts: read, write, log, diff, rollback, watch.
    Contexts(Group<contexts::ContextsCmd>),
    /// Conversation sessions and their transcripts.
    Sessions(Group<sessions::SessionsCmd>),
    /// Runs: create, follow the live events, cancel, approve or reject, stats.
    Runs(Group<runs::RunsCmd>),
    /// The audit log of a workspace.
    Audit(Group<audit::AuditCmd>),
    /// Named connection profiles in the CLI config file.
    Profile(profile::ProfileArgs),
    /// Prints a shell completion script: `source <(agentry completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    Bash,
    Zsh,
}

/// Runs a client command; returns the process exit status. `top` builds the whole
/// command line definition, for completion scripts.
pub async fn run(command: Command, top: impl FnOnce() -> clap::Command) -> i32 {
    let result = match command {
        Command::Workspaces(g) => connect(g, registry::workspaces).await,
        Command::Projects(g) => connect(g, registry::projects).await,
        Command::Keys(g) => connect(g, registry::keys).await,
        Command::Agents(g) => connect(g, agents::run).await,
        Command::Instances(g) => connect(g, instances::run).await,
        Command::Contexts(g) => connect(g, contexts::run).await,
        Command::Sessions(g) => connect(g, sessions::run).await,
        Command::Runs(g) => connect(g, runs::run).await,
        Command::Audit(g) => connect(g, audit::run).await,
        Command::Profile(args) => profile::run(args),
        Command::Completion { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
            };
            clap_complete::generate(shell, &mut top(), "agentry", &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => 0,
        Err(failure) => failure.report(),
    }
}

/// Runs a group's command with a client made from the group's connection options.
async fn connect<T: Subcommand>(
    group: Group<T>,
    run: impl AsyncFnOnce(conn::Client, T) -> Result<(), Failure>,
) -> Result<(), Failure> {
    run(conn::Client::new(group.global)?, group.command).await
}

/// A YAML or JSON document from a file, or from stdin for `-`.
fn read_document(path: &std::path::Path) -> Result<serde_json::Value, Failure> {
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| status::fail!("stdin: {e}"))?
    } else {
        std::fs::read_to_string(path).map_err(|e| status::fail!("{}: {e}", path.display()))?
    };
    parse_document(&text).map_err(|e| status::fail!("{}: {e}", path.display()))
}

/// JSON, or YAML (of which JSON is nearly a subset, but not quite: try JSON first).
fn parse_document(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).or_else(|_| serde_yaml::from_str(text).map_err(|e| e.to_string()))
}
