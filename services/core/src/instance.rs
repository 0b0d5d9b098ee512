//! Instance rules: the commands (create, patch, filter), the status machine of design §4
//! (docs/design.md, [`InstanceStatus`]) as an instance moves along it, heartbeat
//! liveness and the live-instance quota. Every change bumps the etag and moves the
//! update time strictly forward.

use serde_json::Value;

use crate::{
    Error, Result,
    error::QuotaViolation,
    model::{Instance, Labels},
    names::{AgentName, InstanceName, ProjectName},
    status::InstanceStatus,
    time::UnixMicros,
};

/// CreateInstance.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub name: InstanceName,
    pub display_name: String,
    pub agent: AgentName,
    /// `None`: the latest revision.
    pub agent_revision: Option<i64>,
    pub config: Value,
    pub heartbeat_ttl_ms: i64,
    pub labels: Labels,
}

/// UpdateInstance: the fields its mask names.
#[derive(Debug, Clone, Default)]
pub struct InstancePatch {
    pub display_name: Option<String>,
    pub labels: Option<Labels>,
    pub config: Option<Value>,
    /// `Some(None)`: move to the latest revision.
    pub agent_revision: Option<Option<i64>>,
    pub heartbeat_ttl_ms: Option<i64>,
    /// The etag the caller expects, if it sent one (none: unconditional).
    pub etag: Option<String>,
}

/// Filters of ListInstances.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub status: Option<InstanceStatus>,
    pub agent: Option<String>,
}

/// SetInstanceStatus: move to `to`, with `message`, if the etag (when given) matches.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub to: InstanceStatus,
    pub message: String,
    pub etag: Option<String>,
}

/// CreateInstance within the project's quota of `quota` live instances, `live` now.
pub fn check_instance_quota(project: &ProjectName, live: i64, quota: i32) -> Result<()> {
    if live < i64::from(quota) {
        return Ok(());
    }
    Err(Error::QuotaExceeded {
        violations: vec![QuotaViolation {
            subject: project.to_string(),
            description: format!(
                "the project allows {quota} live instances (quota max_instances_per_project)"
            ),
        }],
    })
}

impl InstancePatch {
    /// Applies the plain fields; returns the agent revision whose config must be
    /// resolved again (`Some(None)`: the latest), when the config or revision changes.
    pub fn apply(&self, instance: &mut Instance) -> Result<Option<Option<i64>>> {
        instance.check_live_for_change()?;
        if let Some(v) = &self.display_name {
            instance.display_name = v.clone();
        }
        if let Some(v) = &self.labels {
            instance.labels = v.clone();
        }
        if let Some(v) = self.heartbeat_ttl_ms {
            instance.heartbeat_ttl_ms = v;
        }
        if self.config.is_none() && self.agent_revision.is_none() {
            return Ok(None);
        }
        if let Some(v) = &self.config {
            instance.config = v.clone();
        }
        Ok(Some(
            self.agent_revision.unwrap_or(Some(instance.agent_revision)),
        ))
    }
}

impl Instance {
    /// A new IDLE instance of `revision` with its resolved `effective_config`.
    pub fn new(new: &NewInstance, revision: i64, effective_config: Value, now: UnixMicros) -> Self {
        Self {
            workspace: new.name.workspace.clone(),
            project: new.name.project.clone(),
            id: new.name.instance.clone(),
            display_name: new.display_name.clone(),
            agent: new.agent.agent.clone(),
            agent_revision: revision,
            config: new.config.clone(),
            effective_config,
            status: InstanceStatus::Idle,
            status_message: String::new(),
            heartbeat_ttl_ms: new.heartbeat_ttl_ms,
            last_heartbeat_time: None,
            labels: new.labels.clone(),
            create_time: now,
            update_time: now,
            etag: 1,
        }
    }

    pub fn name(&self) -> InstanceName {
        InstanceName {
            workspace: self.workspace.clone(),
            project: self.project.clone(),
            instance: self.id.clone(),
        }
    }

    /// A TERMINATED instance is final.
    pub fn check_live_for_change(&self) -> Result<()> {
        if self.status == InstanceStatus::Terminated {
            return Err(Error::precondition(
                "INSTANCE_TERMINATED",
                format!("{} is terminated", self.name()),
            ));
        }
        Ok(())
    }

    /// The instance changed: a new etag, an update time after the last one.
    pub fn touch(&mut self, now: UnixMicros) {
        self.etag += 1;
        self.update_time = now.max(self.update_time + 1);
    }

    /// When liveness lapses: tracked only once a live instance has heartbeated.
    pub fn heartbeat_expire_time(&self) -> Option<UnixMicros> {
        match (self.status.is_live(), self.last_heartbeat_time) {
            (true, Some(last)) => Some(last + self.heartbeat_ttl_ms * 1000),
            _ => None,
        }
    }

    /// SetInstanceStatus; false when nothing changes (the same status and message).
    pub fn set_status(
        &mut self,
        to: InstanceStatus,
        message: &str,
        now: UnixMicros,
    ) -> Result<bool> {
        self.status.check_transition(to)?;
        if self.status == to && self.status_message == message {
            return Ok(false);
        }
        self.status = to;
        self.status_message = message.to_owned();
        self.touch(now);
        Ok(true)
    }

    /// A heartbeat: liveness renewed; an OFFLINE instance gets back the status it had
    /// (`before_offline`), which is a change.
    pub fn heartbeat(
        &mut self,
        before_offline: Option<InstanceStatus>,
        now: UnixMicros,
    ) -> Result<()> {
        self.check_live_for_change()?;
        if self.status == InstanceStatus::Offline {
            self.status = before_offline.unwrap_or(InstanceStatus::Idle);
            self.touch(now);
        }
        self.last_heartbeat_time = Some(now);
        Ok(())
    }

    /// DeleteInstance: TERMINATED, once; false when it already was.
    pub fn terminate(&mut self, now: UnixMicros) -> bool {
        if self.status == InstanceStatus::Terminated {
            return false;
        }
        self.status = InstanceStatus::Terminated;
        self.touch(now);
        true
    }
}

#[cfg(test)]
mod tests;
