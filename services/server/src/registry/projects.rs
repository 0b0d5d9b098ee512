//! Project handlers.

use agentry_core::{
    Result,
    model::Project,
    names::{ProjectName, WorkspaceName, validate_slug},
    port::{NewProject, ProjectPatch},
};
use agentry_proto::v1 as pb;

use crate::{
    auth::{Action, Principal},
    convert::{self, Mask, timestamp},
    request::{RequestCtx, required},
};

const UPDATABLE: &[&str] = &["display_name", "description", "labels"];

fn to_proto(p: Project) -> pb::Project {
    pb::Project {
        name: format!("workspaces/{}/projects/{}", p.workspace, p.id),
        display_name: p.display_name,
        description: p.description,
        labels: p.labels,
        create_time: timestamp(p.create_time),
        update_time: timestamp(p.update_time),
        etag: p.etag.to_string(),
    }
}

pub async fn create_project(
    ctx: &RequestCtx,
    p: &Principal,
    req: pb::CreateProjectRequest,
) -> Result<pb::Project> {
    let parent = WorkspaceName::parse("parent", &req.parent)?;
    p.check(&parent.workspace, Action::ManageProjects)?;
    validate_slug("project_id", &req.project_id)?;
    let name = ProjectName {
        workspace: parent.workspace.clone(),
        project: req.project_id.clone(),
    };
    let m = ctx.mutation(p, &name.workspace, name.to_string(), &req)?;
    let project = req.project.unwrap_or_default();
    let new = NewProject {
        workspace: name.workspace.clone(),
        id: name.project.clone(),
        display_name: convert::text("project.display_name", project.display_name)?,
        description: convert::text("project.description", project.description)?,
        labels: convert::labels("project.labels", project.labels)?,
    };
    ctx.store.create_project(&m, new).await.map(to_proto)
}

pub async fn get_project(
    ctx: &RequestCtx,
    p: &Principal,
    req: pb::GetProjectRequest,
) -> Result<pb::Project> {
    let name = ProjectName::parse("name", &req.name)?;
    p.check(&name.workspace, Action::Read)?;
    ctx.store.get_project(&name).await.map(to_proto)
}

pub async fn list_projects(
    ctx: &RequestCtx,
    p: &Principal,
    req: pb::ListProjectsRequest,
) -> Result<pb::ListProjectsResponse> {
    let parent = WorkspaceName::parse("parent", &req.parent)?;
    p.check(&parent.workspace, Action::Read)?;
    let scope = format!("ListProjects {parent}");
    let page = ctx.page(&scope, req.page_size, &req.page_token)?;
    let (projects, next_page_token) = ctx.finish_page(
        &scope,
        ctx.store.list_projects(&parent.workspace, &page).await?,
        to_proto,
    );
    Ok(pb::ListProjectsResponse {
        projects,
        next_page_token,
    })
}

pub async fn update_project(
    ctx: &RequestCtx,
    p: &Principal,
    req: pb::UpdateProjectRequest,
) -> Result<pb::Project> {
    let project = required("project", req.project.clone())?;
    let name = ProjectName::parse("project.name", &project.name)?;
    p.check(&name.workspace, Action::ManageProjects)?;
    let mask = Mask::new("project", req.update_mask.clone(), UPDATABLE, &[])?;
    let m = ctx.mutation(p, &name.workspace, name.to_string(), &req)?;
    let patch = ProjectPatch {
        display_name: mask.text("display_name", project.display_name)?,
        description: mask.text("description", project.description)?,
        labels: mask.labels(project.labels)?,
        etag: project.etag,
    };
    ctx.store
        .update_project(&m, &name, patch)
        .await
        .map(to_proto)
}

pub async fn delete_project(
    ctx: &RequestCtx,
    p: &Principal,
    req: pb::DeleteProjectRequest,
) -> Result<()> {
    let name = ProjectName::parse("name", &req.name)?;
    p.check(&name.workspace, Action::ManageProjects)?;
    let m = ctx.mutation(p, &name.workspace, name.to_string(), &req)?;
    ctx.store
        .delete_project(&m, &name, req.force, &req.etag)
        .await
}
