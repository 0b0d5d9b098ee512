//! `agentry agents …`: definitions from YAML or JSON files (the proto3 JSON of an Agent,
//! field names in either spelling), revisions, and the diff of two revisions.

use std::path::PathBuf;

use agentry_proto::v1 as pb;
use clap::Subcommand;
use prost_types::FieldMask;
use serde_json::{Value, json};

use super::{
    Failure,
    conn::Client,
    diff,
    listing::{Paging, print_all},
    output::{descriptor, from_json, to_json},
    read_document,
    status::fail,
};
use super::{listing::Under, named::Named};

#[derive(Subcommand, Debug)]
pub enum AgentsCmd {
    /// Creates an agent from a file whose `name` is its id (or full name).
    Create {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Appends a revision with the fields the file sets.
    Update {
        name: String,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Gets the latest revision, or --revision N.
    Get {
        name: String,
        #[arg(long, default_value_t = 0)]
        revision: i64,
    },
    /// Lists the agents of --workspace.
    List {
        #[command(flatten)]
        paging: Paging,
    },
    /// Lists the revisions of an agent, newest first.
    Revisions {
        name: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// What changed from revision REV_A to REV_B, as JSON Patch operations.
    Diff {
        name: String,
        rev_a: i64,
        rev_b: i64,
    },
    /// Deletes an agent; refused while live instances pin it unless --force.
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

/// Fields the server sets; a file may carry them (from `agents get -o yaml`), and they
/// are left out of updates and diffs.
const OUTPUT_ONLY: [&str; 5] = [
    "revision",
    "createTime",
    "revisionCreateTime",
    "etag",
    "name",
];

fn is_output_only(key: &str) -> bool {
    let camel = descriptor::<pb::Agent>()
        .get_field_by_name(key)
        .map(|f| f.json_name().to_owned())
        .unwrap_or_else(|| key.to_owned());
    OUTPUT_ONLY.contains(&camel.as_str())
}

pub async fn run(c: Client, command: AgentsCmd) -> Result<(), Failure> {
    let mut registry = c.registry();
    match command {
        AgentsCmd::Create { file } => create(&c, file).await,
        AgentsCmd::Update { name, file } => {
            let mut doc = read_document(&file)?;
            strip_output_only(&mut doc);
            let paths = mask_paths(&doc);
            if paths.is_empty() {
                return Err(fail!("{}: sets no field to update", file.display()));
            }
            let mut agent: pb::Agent = from_json(doc, &file.display().to_string())?;
            agent.name = c.names.in_workspace("agents", &name)?;
            let request = pb::UpdateAgentRequest {
                agent: Some(agent),
                update_mask: Some(FieldMask { paths }),
                ..Default::default()
            };
            c.show(registry.update_agent(request)).await
        }
        AgentsCmd::Get { name, revision } => {
            let name = c.names.in_workspace("agents", &name)?;
            c.send(pb::GetAgentRequest { name, revision }).await
        }
        AgentsCmd::List { paging } => {
            let request = pb::ListAgentsRequest::under(c.names.workspace()?);
            print_all(&c, &paging, request).await
        }
        AgentsCmd::Revisions { name, paging } => {
            let request = pb::ListAgentRevisionsRequest {
                name: c.names.in_workspace("agents", &name)?,
                ..Default::default()
            };
            print_all(&c, &paging, request).await
        }
        AgentsCmd::Diff { name, rev_a, rev_b } => diff_revisions(&c, name, rev_a, rev_b).await,
        AgentsCmd::Delete { name, force } => {
            let name = c.names.in_workspace("agents", &name)?;
            let request = pb::DeleteAgentRequest {
                force,
                ..Named::named(name)
            };
            c.delete(request).await
        }
    }
}

/// Creates the agent a file describes (its `name` is the agent id).
async fn create(c: &Client, file: PathBuf) -> Result<(), Failure> {
    let mut doc = read_document(&file)?;
    let Some(name) = doc.get("name").and_then(Value::as_str).map(str::to_owned) else {
        return Err(fail!("{}: needs a `name` (the agent id)", file.display()));
    };
    let full = c.names.in_workspace("agents", &name)?;
    let (parent, id) = full
        .rsplit_once("/agents/")
        .ok_or_else(|| fail!("{name:?} is not an agent name"))?;
    strip_output_only(&mut doc);
    let agent: pb::Agent = from_json(doc, &file.display().to_string())?;
    let request = pb::CreateAgentRequest {
        parent: parent.to_owned(),
        agent_id: id.to_owned(),
        agent: Some(agent),
        ..Default::default()
    };
    c.show(c.registry().create_agent(request)).await
}

/// Prints the changes from revision `rev_a` of an agent to `rev_b`.
async fn diff_revisions(c: &Client, name: String, rev_a: i64, rev_b: i64) -> Result<(), Failure> {
    let name = c.names.in_workspace("agents", &name)?;
    let mut docs = Vec::new();
    for revision in [rev_a, rev_b] {
        if revision < 1 {
            return Err(fail!("revisions count from 1"));
        }
        let request = pb::GetAgentRequest {
            name: name.clone(),
            revision,
        };
        let mut doc = to_json(&c.registry().get_agent(request).await?.into_inner());
        strip_output_only(&mut doc);
        docs.push(doc);
    }
    let operations = agentry_core::document::diff(&docs[0], &docs[1]);
    diff::print(&c.out, &json!({ "operations": operations }))
}

fn strip_output_only(doc: &mut Value) {
    if let Some(map) = doc.as_object_mut() {
        map.retain(|key, _| !is_output_only(key));
    }
}

/// The update mask of a file: its top-level fields, in proto spelling.
fn mask_paths(doc: &Value) -> Vec<String> {
    let agent = descriptor::<pb::Agent>();
    doc.as_object()
        .map(|map| {
            map.keys()
                .map(|key| {
                    agent
                        .get_field_by_json_name(key)
                        .or_else(|| agent.get_field_by_name(key))
                        .map_or_else(|| key.clone(), |f| f.name().to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}
