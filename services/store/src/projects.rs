//! Projects: namespaces inside a workspace, counted against `max_projects`.

use agentry_core::{
    Error, Reason, Result,
    error::QuotaViolation,
    model::{Page, Project},
    names::ProjectName,
    port::{NewProject, ProjectPatch, ProjectStore},
    time::now_micros,
    wake::WakeKey,
};
use async_trait::async_trait;
use sea_query::{Condition, Expr, Func, LockType, Query, SelectStatement};

use crate::{
    PageRequest, Store,
    db::{Tx, named},
    feed::Wakes,
    keyset_page,
    mutation::{Mutation, mutate},
    rows::{check_etag, labels, to_json},
    tables::{Contexts, Instances, Projects},
    workspaces::lock_workspace,
};

#[derive(sqlx::FromRow)]
struct ProjectRow {
    workspace_id: String,
    project_id: String,
    display_name: String,
    description: String,
    labels: String,
    etag: i64,
    create_time: i64,
    update_time: i64,
}

impl TryFrom<ProjectRow> for Project {
    type Error = Error;

    fn try_from(row: ProjectRow) -> Result<Self> {
        Ok(Self {
            labels: labels(&row.labels)?,
            workspace: row.workspace_id,
            id: row.project_id,
            display_name: row.display_name,
            description: row.description,
            etag: row.etag,
            create_time: row.create_time,
            update_time: row.update_time,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct Count {
    pub(crate) n: i64,
}

/// Every column of `projects`, in the order rows decode and inserts bind.
const COLUMNS: [Projects; 8] = [
    Projects::WorkspaceId,
    Projects::ProjectId,
    Projects::DisplayName,
    Projects::Description,
    Projects::Labels,
    Projects::Etag,
    Projects::CreateTime,
    Projects::UpdateTime,
];

fn select() -> SelectStatement {
    Query::select()
        .columns(COLUMNS)
        .from(Projects::Table)
        .to_owned()
}

fn by_name(name: &ProjectName) -> SelectStatement {
    select()
        .and_where(Expr::col(Projects::WorkspaceId).eq(name.workspace.as_str()))
        .and_where(Expr::col(Projects::ProjectId).eq(name.project.as_str()))
        .to_owned()
}

pub(crate) async fn lock_project(tx: &mut Tx, name: &ProjectName) -> Result<Project> {
    let row: Option<ProjectRow> = tx
        .fetch_optional(&by_name(name).lock(LockType::Update).to_owned())
        .await?;
    row.ok_or_else(|| Error::not_found(name.to_string()))?
        .try_into()
}

#[async_trait]
impl ProjectStore for Store {
    async fn create_project(&self, m: &Mutation, new: NewProject) -> Result<Project> {
        mutate!(self, m, |tx| async {
            // The workspace lock serializes creates, so the quota count cannot race.
            let workspace = lock_workspace(tx, &new.workspace).await?;
            let count: Count = tx
                .fetch_optional(
                    &Query::select()
                        .expr_as(
                            Func::count(Expr::col(Projects::ProjectId)),
                            sea_query::Alias::new("n"),
                        )
                        .from(Projects::Table)
                        .and_where(Expr::col(Projects::WorkspaceId).eq(new.workspace.as_str()))
                        .to_owned(),
                )
                .await?
                .unwrap_or(Count { n: 0 });
            if count.n >= i64::from(workspace.quotas.max_projects) {
                return Err(Error::QuotaExceeded {
                    violations: vec![QuotaViolation {
                        subject: format!("workspaces/{}", new.workspace),
                        description: format!(
                            "the workspace allows {} projects (quota max_projects)",
                            workspace.quotas.max_projects
                        ),
                    }],
                });
            }
            let now = now_micros();
            let project = Project {
                workspace: new.workspace.clone(),
                id: new.id.clone(),
                display_name: new.display_name.clone(),
                description: new.description.clone(),
                labels: new.labels.clone(),
                etag: 1,
                create_time: now,
                update_time: now,
            };
            let insert = Query::insert()
                .into_table(Projects::Table)
                .columns(COLUMNS)
                .values_panic([
                    project.workspace.clone().into(),
                    project.id.clone().into(),
                    project.display_name.clone().into(),
                    project.description.clone().into(),
                    to_json(&project.labels).into(),
                    project.etag.into(),
                    now.into(),
                    now.into(),
                ])
                .to_owned();
            tx.execute(&insert)
                .await
                .map_err(|e| named(e, &m.resource))?;
            Ok(project)
        })
    }

    async fn get_project(&self, name: &ProjectName) -> Result<Project> {
        let row: Option<ProjectRow> = self.db.fetch_optional(&by_name(name)).await?;
        row.ok_or_else(|| Error::not_found(name.to_string()))?
            .try_into()
    }

    async fn list_projects(&self, workspace: &str, page: &PageRequest) -> Result<Page<Project>> {
        let stmt = select()
            .and_where(Expr::col(Projects::WorkspaceId).eq(workspace))
            .to_owned();
        keyset_page::<ProjectRow, Project>(&self.db, stmt, Projects::ProjectId, page, |p| {
            p.id.clone()
        })
        .await
    }

    async fn update_project(
        &self,
        m: &Mutation,
        name: &ProjectName,
        patch: ProjectPatch,
    ) -> Result<Project> {
        mutate!(self, m, |tx| async {
            let mut project = lock_project(tx, name).await?;
            check_etag(project.etag, &patch.etag)?;
            if let Some(v) = &patch.display_name {
                project.display_name = v.clone();
            }
            if let Some(v) = &patch.description {
                project.description = v.clone();
            }
            if let Some(v) = &patch.labels {
                project.labels = v.clone();
            }
            project.etag += 1;
            project.update_time = now_micros().max(project.update_time + 1);
            let update = Query::update()
                .table(Projects::Table)
                .values([
                    (Projects::DisplayName, project.display_name.clone().into()),
                    (Projects::Description, project.description.clone().into()),
                    (Projects::Labels, to_json(&project.labels).into()),
                    (Projects::Etag, project.etag.into()),
                    (Projects::UpdateTime, project.update_time.into()),
                ])
                .and_where(Expr::col(Projects::WorkspaceId).eq(name.workspace.as_str()))
                .and_where(Expr::col(Projects::ProjectId).eq(name.project.as_str()))
                .to_owned();
            tx.execute(&update).await?;
            Ok(project)
        })
    }

    async fn delete_project(
        &self,
        m: &Mutation,
        name: &ProjectName,
        force: bool,
        etag: &str,
    ) -> Result<()> {
        let woken = Wakes::of(WakeKey::under(&name.workspace, Some(&name.project)));
        let deleted = mutate!(self, m, |tx| async {
            let project = lock_project(tx, name).await?;
            check_etag(project.etag, etag)?;
            if !force {
                let live = Condition::all()
                    .add(Expr::col(Instances::WorkspaceId).eq(name.workspace.as_str()))
                    .add(Expr::col(Instances::ProjectId).eq(name.project.as_str()))
                    .add(Expr::col(Instances::Status).ne("TERMINATED"));
                let has_instances = tx.exists(Instances::Table, live).await?;
                let contexts = Condition::all()
                    .add(Expr::col(Contexts::WorkspaceId).eq(name.workspace.as_str()))
                    .add(Expr::col(Contexts::ProjectId).eq(name.project.as_str()));
                let has_contexts = tx.exists(Contexts::Table, contexts).await?;
                if has_instances || has_contexts {
                    return Err(Error::precondition(
                        Reason::HasChildren,
                        format!(
                            "{name} still has live instances or contexts; delete them first or set force"
                        ),
                    ));
                }
            }
            crate::contexts::delete_project_blobs(tx, name).await?;
            // Watchers of its contexts and runs end now, on every replica.
            woken.notify(tx, &self.replica).await?;
            tx.execute(
                &Query::delete()
                    .from_table(Projects::Table)
                    .and_where(Expr::col(Projects::WorkspaceId).eq(name.workspace.as_str()))
                    .and_where(Expr::col(Projects::ProjectId).eq(name.project.as_str()))
                    .to_owned(),
            )
            .await?;
            Ok(())
        });
        if deleted.is_ok() {
            self.wake(&woken);
        }
        deleted
    }
}
