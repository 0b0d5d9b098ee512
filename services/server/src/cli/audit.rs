//! `agentry audit list`: the audit log of --workspace, newest first.

use agentry_proto::v1 as pb;
use clap::Subcommand;

use super::{
    Failure,
    conn::Client,
    listing::{Paging, print_all},
    time::{parse_time, rfc3339},
};

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Lists audit records, newest first (ADMIN of the workspace, or ROOT).
    List {
        /// Only calls by this key (an id, a full name, or `root`)
        #[arg(long)]
        principal: Option<String>,
        /// Only this method, e.g. CreateRun
        #[arg(long)]
        method: Option<String>,
        /// Only this resource and what is under it (relative names use --project,
        /// else --workspace: `projects/web`, `contexts/notes`)
        #[arg(long)]
        resource: Option<String>,
        /// Since: an RFC 3339 time or a duration before now (e.g. 2h)
        #[arg(long)]
        since: Option<String>,
        /// Before: an RFC 3339 time or a duration before now
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
}

pub async fn run(c: Client, command: AuditCmd) -> Result<(), Failure> {
    let AuditCmd::List {
        principal,
        method,
        resource,
        since,
        until,
        paging,
    } = command;
    let parent = c.names.workspace()?;
    let mut terms = Vec::new();
    if let Some(principal) = principal {
        let principal = match principal.as_str() {
            "root" => principal,
            key => c.names.in_workspace("apiKeys", key)?,
        };
        terms.push(format!("principal = \"{principal}\""));
    }
    if let Some(method) = method {
        terms.push(format!("method = \"{method}\""));
    }
    if let Some(resource) = resource {
        let full = if resource.starts_with("workspaces/") {
            resource
        } else if resource.starts_with("projects/") || c.names.project.is_none() {
            format!("{parent}/{resource}")
        } else {
            format!("{}/{resource}", c.names.project()?)
        };
        terms.push(format!("resource = \"{full}\""));
    }
    if let Some(since) = since {
        terms.push(format!(
            "create_time > \"{}\"",
            rfc3339(parse_time(&since)?)
        ));
    }
    if let Some(until) = until {
        terms.push(format!(
            "create_time < \"{}\"",
            rfc3339(parse_time(&until)?)
        ));
    }
    let request = pb::ListAuditRecordsRequest {
        parent,
        filter: terms.join(" AND "),
        ..Default::default()
    };
    print_all(&c, &paging, request).await
}
