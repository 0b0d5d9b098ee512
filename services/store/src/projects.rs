//! Projects: namespaces inside a workspace, counted against `max_projects`.

use agentry_core::{
    Error, Reason, Result,
    error::QuotaViolation,
    model::{Page, Project},
    names::ProjectName,
    port::{DeleteGuard, NewProject, ProjectPatch, ProjectStore},
    time::now_micros,
    wake::WakeKey,
};
use async_trait::async_trait;
use sea_query::{Condition, Expr, LockType, Query, SelectStatement, SimpleExpr};

use crate::{
    PageRequest, Store,
    db::Tx,
    feed::Wakes,
    keyset_page,
    mutation::{Mutation, mutate, mutate_waking},
    rows::{
        self, ProjectKeyed, check_etag, columns, decode, found, insert_row, labels, select_all,
        to_json, values,
    },
    tables::{Contexts, Instances, Projects},
    workspaces::lock_workspace,
};

columns!(
    /// Every column of `projects`, in the order rows decode and inserts bind.
    COLUMNS: Projects [
        WorkspaceId, ProjectId, DisplayName, Description, Labels, Etag, CreateTime, UpdateTime
    ]
);

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

decode!(ProjectRow => Project, |row| Ok(Self {
    workspace: row.workspace_id,
    id: row.project_id,
    display_name: row.display_name,
    description: row.description,
    etag: row.etag,
    create_time: row.create_time,
    update_time: row.update_time,
    labels: labels(&row.labels)?,
}));

/// The row of project `name`.
fn key(name: &ProjectName) -> Condition {
    Projects::in_project(name)
}

/// A project's row, in [`COLUMNS`] order.
fn row(p: &Project) -> [SimpleExpr; COLUMNS.len()] {
    values![
        p.workspace,
        p.id,
        p.display_name,
        p.description,
        to_json(&p.labels),
        p.etag,
        p.create_time,
        p.update_time,
    ]
}

fn select() -> SelectStatement {
    select_all(Projects::Table, COLUMNS)
}

fn by_name(name: &ProjectName) -> SelectStatement {
    select().cond_where(key(name)).to_owned()
}

pub(crate) async fn lock_project(tx: &mut Tx, name: &ProjectName) -> Result<Project> {
    let locked = by_name(name).lock(LockType::Update).to_owned();
    found(tx.fetch_optional::<ProjectRow>(&locked).await?, name)
}

#[async_trait]
impl ProjectStore for Store {
    async fn create_project(&self, m: &Mutation, new: NewProject) -> Result<Project> {
        mutate!(self, m, |tx| async {
            // The workspace lock serializes creates, so the quota count cannot race.
            let workspace = lock_workspace(tx, &new.workspace).await?;
            let projects = Expr::col(Projects::WorkspaceId).eq(new.workspace.as_str());
            let count = tx.count(Projects::Table, projects).await?;
            if count >= i64::from(workspace.quotas.max_projects) {
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
            let insert = insert_row(Projects::Table, COLUMNS, row(&project));
            tx.insert(&insert, &m.resource).await?;
            Ok(project)
        })
    }

    async fn get_project(&self, name: &ProjectName) -> Result<Project> {
        found(
            self.db.fetch_optional::<ProjectRow>(&by_name(name)).await?,
            name,
        )
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
            check_etag(project.etag, patch.etag.as_deref())?;
            rows::patch(&mut project.display_name, &patch.display_name);
            rows::patch(&mut project.description, &patch.description);
            rows::patch(&mut project.labels, &patch.labels);
            rows::bump(&mut project.etag, &mut project.update_time);
            let update = Query::update()
                .table(Projects::Table)
                .values([
                    (Projects::DisplayName, project.display_name.clone().into()),
                    (Projects::Description, project.description.clone().into()),
                    (Projects::Labels, to_json(&project.labels).into()),
                    (Projects::Etag, project.etag.into()),
                    (Projects::UpdateTime, project.update_time.into()),
                ])
                .cond_where(key(name))
                .to_owned();
            tx.execute(&update).await?;
            Ok(project)
        })
    }

    async fn delete_project(
        &self,
        m: &Mutation,
        name: &ProjectName,
        guard: &DeleteGuard,
    ) -> Result<()> {
        let (force, etag) = (guard.force, guard.etag.as_deref());
        // Watchers of its contexts and runs end, on every replica.
        let woken = Wakes::of(WakeKey::under(&name.workspace, Some(&name.project)));
        mutate_waking!(self, m, woken, |tx| async {
            let project = lock_project(tx, name).await?;
            check_etag(project.etag, etag)?;
            if !force {
                let live = Condition::all()
                    .add(Instances::in_project(name))
                    .add(Expr::col(Instances::Status).ne("TERMINATED"));
                let has_instances = tx.exists(Instances::Table, live).await?;
                let contexts = Condition::all().add(Contexts::in_project(name));
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
            tx.delete(Projects::Table, key(name)).await?;
            // After the contexts' rows went (with the project): deleting them waited for
            // any write that held one, so the documents such a write stored are seen here.
            crate::contexts::delete_project_blobs(tx, name).await?;
            Ok(())
        })
    }
}
