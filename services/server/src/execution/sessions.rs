//! Sessions and transcripts. Everyone reads; ADMIN and DEVELOPER create and delete.

use agentry_core::run::NewSession;
use agentry_core::{
    Error, Result,
    names::{InstanceName, ProjectName, SessionName, validate_slug},
};
use agentry_proto::v1 as pb;

use super::convert::{message_to_proto, session_to_proto};
use crate::{
    auth::{Action, Principal},
    call::Call,
    convert,
};

pub async fn create_session(ctx: &Call<'_>, req: pb::CreateSessionRequest) -> Result<pb::Session> {
    let parent: ProjectName = ctx.authorize("parent", &req.parent, Action::Execute)?;
    let id = if req.session_id.is_empty() {
        uuid::Uuid::now_v7().to_string()
    } else {
        validate_slug("session_id", &req.session_id)?;
        req.session_id.clone()
    };
    let name = SessionName {
        workspace: parent.workspace.clone(),
        project: parent.project.clone(),
        session: id,
    };
    let m = ctx.mutation_of(&name, &req)?;
    let session = req.session.unwrap_or_default();
    let instance = InstanceName::parse("session.instance", &session.instance)?;
    ctx.caller
        .check_reference(&parent.workspace, &instance.workspace)?;
    if instance.project() != parent {
        return Err(Error::invalid(
            "session.instance",
            "an instance of the session's project",
        ));
    }
    let new = NewSession {
        name,
        instance: instance.instance,
        description: convert::text("session.description", session.description)?,
        labels: convert::labels("session.labels", session.labels)?,
    };
    Ok(session_to_proto(ctx.store.create_session(&m, new).await?))
}

/// ListSessions' filter: `instance = "…/instances/…"`, an instance of the project the
/// caller may name, or none.
pub fn instance_filter(
    caller: &Principal,
    parent: &ProjectName,
    text: &str,
) -> Result<Option<String>> {
    let Some(value) = convert::only_term(text, "instance", "workspaces/…/instances/…")? else {
        return Ok(None);
    };
    let instance = InstanceName::parse("filter", value)?;
    caller.check_reference(&parent.workspace, &instance.workspace)?;
    if instance.project() != *parent {
        return Err(Error::invalid("filter", "an instance of this project"));
    }
    Ok(Some(instance.instance))
}

pub async fn list_messages(
    ctx: &Call<'_>,
    req: pb::ListMessagesRequest,
) -> Result<pb::ListMessagesResponse> {
    let name: SessionName = ctx.authorize("parent", &req.parent, Action::Read)?;
    let scope = format!("ListMessages {name} {}", req.show_superseded);
    let page = ctx.page_of(&scope, &req)?;
    let listed = ctx
        .store
        .list_messages(&name, req.show_superseded, &page)
        .await?;
    let session = name.to_string();
    Ok(ctx.respond(&scope, listed, |m| message_to_proto(&session, m)))
}
