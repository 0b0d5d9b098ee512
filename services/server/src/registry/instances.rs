//! Instance handlers: pinned revision, validated config, guarded status, heartbeats.

use std::ops::RangeInclusive;

use agentry_core::{
    Error, Result,
    absent::non_empty,
    instance::{InstanceFilter, InstancePatch, NewInstance, StatusChange},
    model::Instance,
    names::{AgentName, InstanceName},
    status::InstanceStatus,
};
use agentry_proto::v1 as pb;
use serde_json::Value;

use crate::{
    auth::Action,
    call::Call,
    convert::{self, json_to_struct, timestamp},
    request::required,
};

pub(crate) fn status_to_proto(s: InstanceStatus) -> pb::InstanceStatus {
    match s {
        InstanceStatus::Idle => pb::InstanceStatus::Idle,
        InstanceStatus::Initializing => pb::InstanceStatus::Initializing,
        InstanceStatus::Active => pb::InstanceStatus::Active,
        InstanceStatus::Busy => pb::InstanceStatus::Busy,
        InstanceStatus::Error => pb::InstanceStatus::Error,
        InstanceStatus::Offline => pb::InstanceStatus::Offline,
        InstanceStatus::Terminated => pb::InstanceStatus::Terminated,
    }
}

fn status(field: &str, value: i32) -> Result<InstanceStatus> {
    let status = match pb::InstanceStatus::try_from(value) {
        Ok(pb::InstanceStatus::Idle) => InstanceStatus::Idle,
        Ok(pb::InstanceStatus::Initializing) => InstanceStatus::Initializing,
        Ok(pb::InstanceStatus::Active) => InstanceStatus::Active,
        Ok(pb::InstanceStatus::Busy) => InstanceStatus::Busy,
        Ok(pb::InstanceStatus::Error) => InstanceStatus::Error,
        Ok(pb::InstanceStatus::Offline) => InstanceStatus::Offline,
        Ok(pb::InstanceStatus::Terminated) => InstanceStatus::Terminated,
        Ok(pb::InstanceStatus::Unspecified) | Err(_) => {
            return Err(Error::invalid(
                field,
                "one of IDLE, INITIALIZING, ACTIVE, BUSY, ERROR",
            ));
        }
    };
    Ok(status)
}

pub fn to_proto(i: Instance) -> pb::Instance {
    pb::Instance {
        name: format!(
            "workspaces/{}/projects/{}/instances/{}",
            i.workspace, i.project, i.id
        ),
        display_name: i.display_name,
        agent: format!("workspaces/{}/agents/{}", i.workspace, i.agent),
        agent_revision: i.agent_revision,
        config: Some(json_to_struct(&i.config)),
        effective_config: Some(json_to_struct(&i.effective_config)),
        status: status_to_proto(i.status) as i32,
        status_message: i.status_message,
        heartbeat_ttl: Some(prost_types::Duration {
            seconds: i.heartbeat_ttl_ms / 1000,
            nanos: ((i.heartbeat_ttl_ms % 1000) * 1_000_000) as i32,
        }),
        last_heartbeat_time: i.last_heartbeat_time.and_then(timestamp),
        labels: i.labels,
        create_time: timestamp(i.create_time),
        update_time: timestamp(i.update_time),
        etag: i.etag.to_string(),
    }
}

const DEFAULT_HEARTBEAT_TTL_MS: i64 = 30_000;
/// 1 s to 1 day.
const HEARTBEAT_TTLS_MS: RangeInclusive<i64> = 1_000..=86_400_000;

fn heartbeat_ttl_ms(value: Option<prost_types::Duration>) -> Result<i64> {
    let Some(d) = value else {
        return Ok(DEFAULT_HEARTBEAT_TTL_MS);
    };
    let ms = d
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(d.nanos) / 1_000_000);
    if !HEARTBEAT_TTLS_MS.contains(&ms) || d.nanos < 0 {
        return Err(Error::invalid(
            "instance.heartbeat_ttl",
            "between 1 s and 1 day",
        ));
    }
    Ok(ms)
}

fn config(value: Option<prost_types::Struct>) -> Result<Value> {
    match value {
        Some(s) => convert::struct_to_json("instance.config", s),
        None => Ok(Value::Object(Default::default())),
    }
}

fn revision(value: i64) -> Result<Option<i64>> {
    match value {
        0 => Ok(None),
        n if n < 0 => Err(Error::invalid(
            "instance.agent_revision",
            "must not be negative",
        )),
        n => Ok(Some(n)),
    }
}

pub async fn create_instance(
    ctx: &Call<'_>,
    req: pb::CreateInstanceRequest,
) -> Result<pb::Instance> {
    let (_, name, m) = ctx.create(&req, Action::Develop)?;
    let i = required("instance", req.instance)?;
    let agent = AgentName::parse("instance.agent", &i.agent)?;
    if agent.workspace != name.workspace {
        return Err(Error::invalid(
            "instance.agent",
            "the agent must belong to the instance's workspace",
        ));
    }
    let new = NewInstance {
        display_name: convert::text("instance.display_name", i.display_name)?,
        agent,
        agent_revision: revision(i.agent_revision)?,
        config: config(i.config)?,
        heartbeat_ttl_ms: heartbeat_ttl_ms(i.heartbeat_ttl)?,
        labels: convert::labels("instance.labels", i.labels)?,
        name,
    };
    ctx.store.create_instance(&m, new).await.map(to_proto)
}

/// `status = ACTIVE AND agent = "workspaces/w/agents/a"` (either term optional).
pub(crate) fn filter(workspace: &str, text: &str) -> Result<InstanceFilter> {
    const SUPPORTED: &str = "status = ACTIVE, agent = \"workspaces/w/agents/a\"";
    let bad = |why: &str| crate::convert::filter_error(why, SUPPORTED);
    let mut out = InstanceFilter::default();
    for (key, operator, value) in crate::convert::filter_terms(text, SUPPORTED)? {
        match (key, operator) {
            ("status", "=") => {
                let upper = value.trim_start_matches("INSTANCE_STATUS_");
                let status = InstanceStatus::parse(upper).ok_or_else(|| bad("unknown status"))?;
                out.status = Some(status);
            }
            ("agent", "=") => {
                let agent = AgentName::parse("filter", value)?;
                if agent.workspace != workspace {
                    return Err(bad("agent must be in this workspace"));
                }
                out.agent = Some(agent.agent);
            }
            _ => return Err(bad("unknown field")),
        }
    }
    Ok(out)
}

pub async fn update_instance(
    ctx: &Call<'_>,
    req: pb::UpdateInstanceRequest,
) -> Result<pb::Instance> {
    let (i, name, mask) = ctx.update(&req, Action::Develop)?;
    let m = ctx.mutation_of(&name, &req)?;
    let patch = InstancePatch {
        display_name: mask.text("display_name", i.display_name)?,
        labels: mask.labels(i.labels)?,
        config: mask.pick("config", i.config, |_, v| config(v))?,
        agent_revision: mask.pick("agent_revision", i.agent_revision, |_, v| revision(v))?,
        heartbeat_ttl_ms: mask
            .pick("heartbeat_ttl", i.heartbeat_ttl, |_, v| heartbeat_ttl_ms(v))?,
        etag: non_empty(i.etag),
    };
    ctx.store
        .update_instance(&m, &name, patch)
        .await
        .map(to_proto)
}

pub async fn set_instance_status(
    ctx: &Call<'_>,
    req: pb::SetInstanceStatusRequest,
) -> Result<pb::Instance> {
    let name: InstanceName = ctx.authorize("name", &req.name, Action::Develop)?;
    let to = status("status", req.status)?;
    if !to.is_settable() {
        return Err(Error::invalid(
            "status",
            "OFFLINE follows a lapsed heartbeat and TERMINATED follows DeleteInstance",
        ));
    }
    let message = convert::text("status_message", req.status_message.clone())?;
    let m = ctx.mutation_of(&name, &req)?;
    let etag = non_empty(&req.etag);
    let change = StatusChange { to, message, etag };
    ctx.store
        .set_instance_status(&m, &name, change)
        .await
        .map(to_proto)
}
