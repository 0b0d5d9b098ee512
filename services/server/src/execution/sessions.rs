//! Sessions and transcripts. Everyone reads; ADMIN and DEVELOPER create and delete.

use agentry_core::run::NewSession;
use agentry_core::{
    Error, Result,
    names::{InstanceName, ProjectName, SessionName, validate_slug},
};
use agentry_proto::v1 as pb;

use super::convert::{message_to_proto, session_to_proto};
use crate::{auth::Action, call::Call, convert};

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

pub async fn get_session(ctx: &Call<'_>, req: pb::GetSessionRequest) -> Result<pb::Session> {
    let name: SessionName = ctx.authorize("name", &req.name, Action::Read)?;
    Ok(session_to_proto(ctx.store.get_session(&name).await?))
}

pub async fn list_sessions(
    ctx: &Call<'_>,
    req: pb::ListSessionsRequest,
) -> Result<pb::ListSessionsResponse> {
    let parent: ProjectName = ctx.authorize("parent", &req.parent, Action::Read)?;
    let instance = match req.filter.trim() {
        "" => None,
        filter => {
            let value = filter
                .strip_prefix("instance")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"'))
                .ok_or_else(|| {
                    Error::invalid(
                        "filter",
                        "supported: instance = \"workspaces/…/instances/…\"",
                    )
                })?;
            let instance = InstanceName::parse("filter", value)?;
            ctx.caller
                .check_reference(&parent.workspace, &instance.workspace)?;
            if instance.project() != parent {
                return Err(Error::invalid("filter", "an instance of this project"));
            }
            Some(instance.instance)
        }
    };
    let scope = format!("ListSessions {parent} {}", req.filter);
    let page = ctx.page(&scope, req.page_size, &req.page_token)?;
    let listed = ctx
        .store
        .list_sessions(&parent, instance.as_deref(), &page)
        .await?;
    Ok(ctx.respond(&scope, listed, session_to_proto))
}

pub async fn delete_session(ctx: &Call<'_>, req: pb::DeleteSessionRequest) -> Result<()> {
    let name: SessionName = ctx.authorize("name", &req.name, Action::Execute)?;
    let m = ctx.mutation_of(&name, &req)?;
    ctx.store.delete_session(&m, &name).await
}

pub async fn list_messages(
    ctx: &Call<'_>,
    req: pb::ListMessagesRequest,
) -> Result<pb::ListMessagesResponse> {
    let name: SessionName = ctx.authorize("parent", &req.parent, Action::Read)?;
    let scope = format!("ListMessages {name} {}", req.show_superseded);
    let page = ctx.page(&scope, req.page_size, &req.page_token)?;
    let listed = ctx
        .store
        .list_messages(&name, req.show_superseded, &page)
        .await?;
    let session = name.to_string();
    Ok(ctx.respond(&scope, listed, |m| message_to_proto(&session, m)))
}
