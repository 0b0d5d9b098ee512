//! Workspace handlers.

use agentry_core::{
    Error, Result,
    absent::non_empty,
    model::{Quotas, QuotasPatch, Workspace},
    names::{WorkspaceName, validate_slug},
    port::{DeleteGuard, NewWorkspace, WorkspacePatch},
};
use agentry_proto::v1 as pb;

use crate::{
    auth::Action,
    call::Call,
    convert::{self, Mask, timestamp},
};

pub fn to_proto(w: Workspace) -> pb::Workspace {
    pb::Workspace {
        name: format!("workspaces/{}", w.id),
        display_name: w.display_name,
        description: w.description,
        quotas: Some(pb::Quotas {
            max_instances_per_project: w.quotas.max_instances_per_project,
            max_concurrent_runs: w.quotas.max_concurrent_runs,
            context_keep_last: w.quotas.context_keep_last,
            max_context_bytes: w.quotas.max_context_bytes,
            max_projects: w.quotas.max_projects,
        }),
        labels: w.labels,
        create_time: timestamp(w.create_time),
        update_time: timestamp(w.update_time),
        etag: w.etag.to_string(),
    }
}

fn non_negative<T: PartialOrd + Default + Copy>(field: &str, value: T) -> Result<T> {
    if value < T::default() {
        Err(Error::invalid(field, "must not be negative"))
    } else {
        Ok(value)
    }
}

fn quotas(q: pb::Quotas) -> Result<Quotas> {
    Ok(Quotas {
        max_instances_per_project: non_negative(
            "workspace.quotas.max_instances_per_project",
            q.max_instances_per_project,
        )?,
        max_concurrent_runs: non_negative(
            "workspace.quotas.max_concurrent_runs",
            q.max_concurrent_runs,
        )?,
        context_keep_last: non_negative("workspace.quotas.context_keep_last", q.context_keep_last)?,
        max_context_bytes: non_negative("workspace.quotas.max_context_bytes", q.max_context_bytes)?,
        max_projects: non_negative("workspace.quotas.max_projects", q.max_projects)?,
    })
}

/// The quota fields an update mask selects (`quotas` selects them all).
fn quotas_patch(mask: &Mask, q: Quotas) -> Result<QuotasPatch> {
    let all = mask.has("quotas");
    let pick = |field: &str| all || mask.has(&format!("quotas.{field}"));
    for path in mask.paths().iter().filter(|p| p.starts_with("quotas.")) {
        let field = &path["quotas.".len()..];
        if ![
            "max_instances_per_project",
            "max_concurrent_runs",
            "context_keep_last",
            "max_context_bytes",
            "max_projects",
        ]
        .contains(&field)
        {
            return Err(Error::invalid(
                "update_mask",
                format!("{} is not a quota", agentry_core::error::quote(path)),
            ));
        }
    }
    Ok(QuotasPatch {
        max_instances_per_project: pick("max_instances_per_project")
            .then_some(q.max_instances_per_project),
        max_concurrent_runs: pick("max_concurrent_runs").then_some(q.max_concurrent_runs),
        context_keep_last: pick("context_keep_last").then_some(q.context_keep_last),
        max_context_bytes: pick("max_context_bytes").then_some(q.max_context_bytes),
        max_projects: pick("max_projects").then_some(q.max_projects),
    })
}

pub async fn create_workspace(
    ctx: &Call<'_>,
    req: pb::CreateWorkspaceRequest,
) -> Result<pb::Workspace> {
    ctx.caller.check_role(Action::Operate)?;
    validate_slug("workspace_id", &req.workspace_id)?;
    let name = WorkspaceName {
        workspace: req.workspace_id.clone(),
    };
    let mut m = ctx.mutation_of(&name, &req)?;
    m.scope = None;
    let w = req.workspace.unwrap_or_default();
    let new = NewWorkspace {
        id: name.workspace.clone(),
        display_name: convert::text("workspace.display_name", w.display_name)?,
        description: convert::text("workspace.description", w.description)?,
        quotas: quotas(w.quotas.unwrap_or_default())?.or_defaults(),
        labels: convert::labels("workspace.labels", w.labels)?,
    };
    ctx.store.create_workspace(&m, new).await.map(to_proto)
}

pub async fn list_workspaces(
    ctx: &Call<'_>,
    req: pb::ListWorkspacesRequest,
) -> Result<pb::ListWorkspacesResponse> {
    ctx.caller.check_role(Action::Operate)?;
    let scope = "ListWorkspaces";
    let page = ctx.page_of(scope, &req)?;
    Ok(ctx.respond(scope, ctx.store.list_workspaces(&page).await?, to_proto))
}

pub async fn update_workspace(
    ctx: &Call<'_>,
    req: pb::UpdateWorkspaceRequest,
) -> Result<pb::Workspace> {
    let (w, name, mask) = ctx.update(&req, Action::ManageWorkspace)?;
    let changes_quotas = mask.paths().iter().any(|path| path.starts_with("quotas"));
    if changes_quotas {
        ctx.caller.check(&name.workspace, Action::Operate)?;
    }
    let m = ctx.mutation_of(&name, &req)?;
    let patch = WorkspacePatch {
        display_name: mask.text("display_name", w.display_name)?,
        description: mask.text("description", w.description)?,
        labels: mask.labels(w.labels)?,
        quotas: if changes_quotas {
            quotas_patch(&mask, quotas(w.quotas.unwrap_or_default())?)?
        } else {
            QuotasPatch::default()
        },
        etag: non_empty(w.etag),
    };
    ctx.store
        .update_workspace(&m, &name.workspace, patch)
        .await
        .map(to_proto)
}

pub async fn delete_workspace(ctx: &Call<'_>, req: pb::DeleteWorkspaceRequest) -> Result<()> {
    let name: WorkspaceName = ctx.authorize("name", &req.name, Action::Operate)?;
    let m = ctx.mutation_of(&name, &req)?;
    ctx.store
        .delete_workspace(
            &m,
            &name.workspace,
            &DeleteGuard {
                force: req.force,
                etag: non_empty(req.etag),
            },
        )
        .await?;
    ctx.keys.forget_workspace(&name.workspace);
    Ok(())
}
