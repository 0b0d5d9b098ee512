//! Agent definition handlers. Every update appends an immutable revision.

use agentry_core::{
    Error, Result,
    absent::non_empty,
    agent::{AgentPatch, NewAgent},
    model::{Agent, AgentSpec, Tool, ToolRisk},
    names::AgentName,
};
use agentry_proto::v1 as pb;
use serde_json::Value;

use crate::{
    auth::Action,
    call::Call,
    convert::{self, json_to_struct, timestamp},
    request::required,
};

const MAX_TOOLS: usize = 256;
const MAX_CAPABILITIES: usize = 256;

pub fn to_proto(a: Agent) -> pb::Agent {
    let spec = a.spec;
    pb::Agent {
        name: format!("workspaces/{}/agents/{}", a.workspace, a.id),
        display_name: spec.display_name,
        description: spec.description,
        agent_type: spec.agent_type,
        capabilities: spec.capabilities,
        tools: spec
            .tools
            .into_iter()
            .map(|t| pb::Tool {
                name: t.name,
                description: t.description,
                risk: match t.risk {
                    ToolRisk::ReadOnly => pb::ToolRisk::ReadOnly,
                    ToolRisk::Write => pb::ToolRisk::Write,
                    ToolRisk::Destructive => pb::ToolRisk::Destructive,
                } as i32,
            })
            .collect(),
        config_schema: spec.config_schema.as_ref().map(json_to_struct),
        default_config: spec.default_config.as_ref().map(json_to_struct),
        labels: spec.labels,
        revision: a.revision,
        enabled: Some(spec.enabled),
        create_time: timestamp(a.create_time),
        revision_create_time: timestamp(a.revision_create_time),
        // A revision never changes, so its etag is its number; the latest one's etag is
        // what UpdateAgent compares.
        etag: a.revision.to_string(),
    }
}

fn tools(tools: Vec<pb::Tool>) -> Result<Vec<Tool>> {
    if tools.len() > MAX_TOOLS {
        return Err(Error::invalid(
            "agent.tools",
            format!("at most {MAX_TOOLS} tools"),
        ));
    }
    let mut out: Vec<Tool> = Vec::with_capacity(tools.len());
    for (i, t) in tools.into_iter().enumerate() {
        let field = format!("agent.tools[{i}]");
        let name_ok = !t.name.is_empty()
            && t.name.len() <= 128
            && t.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !name_ok {
            return Err(Error::invalid(
                format!("{field}.name"),
                "1-128 characters of [A-Za-z0-9_.-]",
            ));
        }
        if out.iter().any(|o| o.name == t.name) {
            return Err(Error::invalid(
                format!("{field}.name"),
                format!(
                    "tool {} is listed twice",
                    agentry_core::error::quote(&t.name)
                ),
            ));
        }
        let risk = match pb::ToolRisk::try_from(t.risk) {
            Ok(pb::ToolRisk::ReadOnly) => ToolRisk::ReadOnly,
            Ok(pb::ToolRisk::Write) => ToolRisk::Write,
            Ok(pb::ToolRisk::Destructive) => ToolRisk::Destructive,
            Ok(pb::ToolRisk::Unspecified) | Err(_) => {
                return Err(Error::invalid(
                    format!("{field}.risk"),
                    "one of TOOL_RISK_READ_ONLY, TOOL_RISK_WRITE, TOOL_RISK_DESTRUCTIVE",
                ));
            }
        };
        out.push(Tool {
            name: t.name,
            description: convert::text(&format!("{field}.description"), t.description)?,
            risk,
        });
    }
    Ok(out)
}

fn capabilities(values: Vec<String>) -> Result<Vec<String>> {
    if values.len() > MAX_CAPABILITIES {
        return Err(Error::invalid(
            "agent.capabilities",
            format!("at most {MAX_CAPABILITIES}"),
        ));
    }
    for (i, value) in values.iter().enumerate() {
        if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
            return Err(Error::invalid(
                format!("agent.capabilities[{i}]"),
                "1-128 printable characters",
            ));
        }
    }
    Ok(values)
}

fn document(field: &str, value: Option<prost_types::Struct>) -> Result<Option<Value>> {
    value.map(|s| convert::struct_to_json(field, s)).transpose()
}

/// Checks what a spec must satisfy before a revision is written.
pub async fn create_agent(ctx: &Call<'_>, req: pb::CreateAgentRequest) -> Result<pb::Agent> {
    let (_, name, m) = ctx.create(&req, Action::Develop)?;
    let a = required("agent", req.agent)?;
    let spec = AgentSpec {
        display_name: convert::text("agent.display_name", a.display_name)?,
        description: convert::text("agent.description", a.description)?,
        agent_type: convert::text("agent.agent_type", a.agent_type)?,
        capabilities: capabilities(a.capabilities)?,
        tools: tools(a.tools)?,
        config_schema: document("agent.config_schema", a.config_schema)?,
        default_config: document("agent.default_config", a.default_config)?,
        labels: convert::labels("agent.labels", a.labels)?,
        enabled: a.enabled.unwrap_or(true),
    };
    spec.check()?;
    ctx.store
        .create_agent(
            &m,
            NewAgent {
                workspace: name.workspace,
                id: name.agent,
                spec,
            },
        )
        .await
        .map(to_proto)
}

pub async fn get_agent(ctx: &Call<'_>, req: pb::GetAgentRequest) -> Result<pb::Agent> {
    let name: AgentName = ctx.authorize("name", &req.name, Action::Read)?;
    let revision = match req.revision {
        0 => None,
        n if n < 0 => return Err(Error::invalid("revision", "must not be negative")),
        n => Some(n),
    };
    ctx.store.get_agent(&name, revision).await.map(to_proto)
}

pub async fn update_agent(ctx: &Call<'_>, req: pb::UpdateAgentRequest) -> Result<pb::Agent> {
    let (a, name, mask) = ctx.update(&req, Action::Develop)?;
    let m = ctx.mutation_of(&name, &req)?;
    let patch = AgentPatch {
        display_name: mask.text("display_name", a.display_name)?,
        description: mask.text("description", a.description)?,
        agent_type: mask.text("agent_type", a.agent_type)?,
        capabilities: mask.pick("capabilities", a.capabilities, |_, v| capabilities(v))?,
        tools: mask.pick("tools", a.tools, |_, v| tools(v))?,
        config_schema: mask.pick("config_schema", a.config_schema, document)?,
        default_config: mask.pick("default_config", a.default_config, document)?,
        labels: mask.labels(a.labels)?,
        enabled: mask.has("enabled").then(|| a.enabled.unwrap_or(true)),
        etag: non_empty(a.etag),
    };
    ctx.store.update_agent(&m, &name, patch).await.map(to_proto)
}
