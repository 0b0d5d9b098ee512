//! Session rules: what a new session is, when an instance takes new work, when a
//! session may be deleted.

use super::{NewSession, Session};
use crate::{
    Error, Result,
    model::Instance,
    names::{InstanceName, SessionName},
    status::InstanceStatus,
    time::UnixMicros,
};

/// A TERMINATED instance takes no new session and no new run.
pub fn check_takes_work(instance: &Instance) -> Result<()> {
    if instance.status == InstanceStatus::Terminated {
        let name = InstanceName {
            workspace: instance.workspace.clone(),
            project: instance.project.clone(),
            instance: instance.id.clone(),
        };
        return Err(Error::precondition(
            "INSTANCE_TERMINATED",
            format!("{name} is terminated"),
        ));
    }
    Ok(())
}

impl Session {
    /// A new, idle session with an empty transcript.
    pub fn new(new: &NewSession, now: UnixMicros) -> Self {
        Self {
            workspace: new.name.workspace.clone(),
            project: new.name.project.clone(),
            id: new.name.session.clone(),
            instance: new.instance.clone(),
            description: new.description.clone(),
            labels: new.labels.clone(),
            active_run: None,
            message_count: 0,
            create_time: now,
            update_time: now,
        }
    }

    pub fn name(&self) -> SessionName {
        SessionName {
            workspace: self.workspace.clone(),
            project: self.project.clone(),
            session: self.id.clone(),
        }
    }

    /// Only a session without an unfinished run may be deleted.
    pub fn check_deletable(&self) -> Result<()> {
        let Some(active) = &self.active_run else {
            return Ok(());
        };
        let name = self.name();
        Err(Error::precondition(
            "SESSION_BUSY",
            format!("{name} has an unfinished run ({name}/runs/{active}); cancel it first"),
        ))
    }
}
