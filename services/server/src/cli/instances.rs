//! `agentry instances …`: instances of an agent in a project, their status and liveness.

use std::{path::PathBuf, sync::LazyLock};

use agentry_core::status::InstanceStatus;
use agentry_proto::v1 as pb;
use clap::{Args, Subcommand, ValueEnum, builder::PossibleValue};

use super::named::{Create, Named};
use super::{
    Failure,
    conn::Client,
    listing::{Paging, print_all},
    parse_document, read_document,
    registry::label,
    status::fail,
    time::{parse_duration, proto_duration},
};

/// An instance status as the command line spells it (`idle`, `active` …).
#[derive(Clone, Copy, Debug)]
pub struct Status(InstanceStatus);

impl ValueEnum for Status {
    fn value_variants<'a>() -> &'a [Self] {
        static ALL: LazyLock<Vec<Status>> =
            LazyLock::new(|| InstanceStatus::ALL.map(Status).to_vec());
        &ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.as_str().to_ascii_lowercase()))
    }
}

impl Status {
    fn proto(self) -> pb::InstanceStatus {
        crate::registry::instances::status_to_proto(self.0)
    }

    fn filter_name(self) -> &'static str {
        self.0.as_str()
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
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
}

#[derive(Subcommand, Debug)]
pub enum InstancesCmd {
    /// Creates an instance of an agent in --project.
    Create(CreateArgs),
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
    let name_of = |arg: &str| c.names.in_project("instances", arg);
    match command {
        InstancesCmd::Create(args) => create(&c, args).await,
        InstancesCmd::Get { name } => c.send(pb::GetInstanceRequest::named(name_of(&name)?)).await,
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
                status: status.proto() as i32,
                status_message: message,
                ..Named::named(name_of(&name)?)
            };
            c.send(request).await
        }
        InstancesCmd::Heartbeat { name } => {
            c.send(pb::HeartbeatInstanceRequest::named(name_of(&name)?))
                .await
        }
        InstancesCmd::Delete { name } => {
            c.send(pb::DeleteInstanceRequest::named(name_of(&name)?))
                .await
        }
    }
}

/// Creates the instance `args` describe in --project.
async fn create(c: &Client, args: CreateArgs) -> Result<(), Failure> {
    let instance = pb::Instance {
        display_name: args.display_name,
        agent: c.names.in_workspace("agents", &args.agent)?,
        agent_revision: args.revision,
        config: config_struct(args.config, args.config_file)?,
        heartbeat_ttl: args
            .heartbeat_ttl
            .map(|t| parse_duration(&t).map(proto_duration))
            .transpose()?,
        labels: args.labels.into_iter().collect(),
        ..Default::default()
    };
    let request = pb::CreateInstanceRequest::create(c.names.project()?, args.id, instance);
    c.show(c.registry().create_instance(request)).await
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
