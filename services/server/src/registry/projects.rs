//! Project handlers.

use agentry_core::{
    Result,
    absent::non_empty,
    model::Project,
    port::{NewProject, ProjectPatch},
};
use agentry_proto::v1 as pb;

use crate::{
    auth::Action,
    call::Call,
    convert::{self, timestamp},
};

pub(crate) fn to_proto(p: Project) -> pb::Project {
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

pub async fn create_project(ctx: &Call<'_>, req: pb::CreateProjectRequest) -> Result<pb::Project> {
    let (_, name, m) = ctx.create(&req, Action::ManageProjects)?;
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

pub async fn update_project(ctx: &Call<'_>, req: pb::UpdateProjectRequest) -> Result<pb::Project> {
    let (project, name, mask) = ctx.update(&req, Action::ManageProjects)?;
    let m = ctx.mutation_of(&name, &req)?;
    let patch = ProjectPatch {
        display_name: mask.text("display_name", project.display_name)?,
        description: mask.text("description", project.description)?,
        labels: mask.labels(project.labels)?,
        etag: non_empty(project.etag),
    };
    ctx.store
        .update_project(&m, &name, patch)
        .await
        .map(to_proto)
}
