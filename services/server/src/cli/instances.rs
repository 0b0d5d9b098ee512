//! `agentry instances …`: instances of an agent in a project, their status and liveness.

use std::path::PathBuf;

use agentry_proto::v1 as pb;
use clap::{Subcommand, ValueEnum};

use super::{
    Failure,
    conn::Client,
    listing::{Paging, print_all},
    parse_document, read_document,
    registry::label,
    status::fail,
    time::{parse_duration, proto_duration},
};

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Status {
    Idle,
    Initializing,
    Active,
    Busy,
    Error,
    Offline,
    Terminated,
}

impl Status {
    fn proto(self) -> pb::InstanceStatus {
        match self {
            Self::Idle => pb::InstanceStatus::Idle,
            Self::Initializing => pb::InstanceStatus::Initializing,
            Self::Active => pb::InstanceStatus::Active,
            Self::Busy => pb::InstanceStatus::Busy,
            Self::Error => pb::InstanceStatus::Error,
            Self::Offline => pb::InstanceStatus::Offline,
            Self::Terminated => pb::InstanceStatus::Terminated,
        }
    }

    fn filter_name(self) -> &'static str {
        self.proto()
            .as_str_name()
            .trim_start_matches("INSTANCE_STATUS_")
    }
}

#[derive(Subcommand, Debug)]
pub enum InstancesCmd {
    /// Creates an instance of an agent in --project.
    Create {
        id: String,
        /// The agent (its id in --workspace, or its full name)
        #[arg(long)]
        agent: String,
        /// The agent revision to pin [default: the latest]
        #[arg(long, default_value_t = 0)]
        revision: i64,
        /// The config, as JSON
        #[arg(long, conflicts_with = "config_file")]
        config: Option<String>,
        /// The config, from a JSON or YAML file (`-` for stdin)
        #[arg(long)]
        config_file: Option<PathBuf>,
        #[arg(long, default_value = "")]
        display_name: String,
        /// How long a heartbeat keeps it live (e.g. 30s)
        #[arg(long)]
        heartbeat_ttl: Option<String>,
        /// A label KEY=VALUE (repeatable)
        #[arg(long = "label", value_parser = label)]
        labels: Vec<(String, String)>,
    },
    /// Gets an instance.
    Get { name: String },
    /// Lists the instances of --project.
    List {
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// Only instances of this agent
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Moves an instance to a status (a guarded transition).
    SetStatus {
        name: String,
        #[arg(value_enum)]
        status: Status,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Records a heartbeat.
    Heartbeat { name: String },
    /// Terminates an instance (final).
    Delete { name: String },
}

pub async fn run(c: Client, command: InstancesCmd) -> Result<(), Failure> {
    let mut registry = c.registry();
    match command {
        InstancesCmd::Create {
            id,
            agent,
            revision,
            config,
            config_file,
            display_name,
            heartbeat_ttl,
            labels,
        } => {
            let config = config_struct(config, config_file)?;
            let instance = pb::Instance {
                display_name,
                agent: c.names.in_workspace("agents", &agent)?,
                agent_revision: revision,
                config,
                heartbeat_ttl: heartbeat_ttl
                    .map(|t| parse_duration(&t).map(proto_duration))
                    .transpose()?,
                labels: labels.into_iter().collect(),
                ..Default::default()
            };
            let request = pb::CreateInstanceRequest {
                parent: c.names.project()?,
                instance_id: id,
                instance: Some(instance),
                ..Default::default()
            };
            c.show(registry.create_instance(request)).await
        }
        InstancesCmd::Get { name } => {
            let name = c.names.in_project("instances", &name)?;
            let request = pb::GetInstanceRequest { name };
            c.show(registry.get_instance(request)).await
        }
        InstancesCmd::List {
            status,
            agent,
            paging,
        } => list(&c, status, agent, &paging).await,
        InstancesCmd::SetStatus {
            name,
            status,
            message,
        } => {
            let request = pb::SetInstanceStatusRequest {
                name: c.names.in_project("instances", &name)?,
                status: status.proto() as i32,
                status_message: message,
                ..Default::default()
            };
            c.show(registry.set_instance_status(request)).await
        }
        InstancesCmd::Heartbeat { name } => {
            let name = c.names.in_project("instances", &name)?;
            let request = pb::HeartbeatInstanceRequest { name };
            c.show(registry.heartbeat_instance(request)).await
        }
        InstancesCmd::Delete { name } => {
            let request = pb::DeleteInstanceRequest {
                name: c.names.in_project("instances", &name)?,
                ..Default::default()
            };
            c.show(registry.delete_instance(request)).await
        }
    }
}

/// The instance config of `--config` (JSON or YAML text) or `--config-file`.
fn config_struct(
    config: Option<String>,
    config_file: Option<std::path::PathBuf>,
) -> Result<Option<prost_types::Struct>, Failure> {
    let config = match (config, config_file) {
        (Some(text), _) => Some(parse_document(&text).map_err(|e| fail!("--config: {e}"))?),
        (None, Some(path)) => Some(read_document(&path)?),
        (None, None) => None,
    };
    config
        .map(|doc| match doc {
            serde_json::Value::Object(_) => Ok(crate::convert::json_to_struct(&doc)),
            _ => Err(fail!("the config must be a JSON object")),
        })
        .transpose()
}

/// Lists the instances of --project, of one status or agent if asked.
async fn list(
    c: &Client,
    status: Option<Status>,
    agent: Option<String>,
    paging: &Paging,
) -> Result<(), Failure> {
    let mut terms = Vec::new();
    if let Some(status) = status {
        terms.push(format!("status = {}", status.filter_name()));
    }
    if let Some(agent) = agent {
        terms.push(format!(
            "agent = \"{}\"",
            c.names.in_workspace("agents", &agent)?
        ));
    }
    let request = pb::ListInstancesRequest {
        parent: c.names.project()?,
        filter: terms.join(" AND "),
        ..Default::default()
    };
    print_all(c, paging, request).await
}
