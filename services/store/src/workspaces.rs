//! Workspaces: the tenants. Deleting one removes its projects, instances, agent heads
//! and API keys by cascade; agent revisions and the audit log stay (append-only).

use agentry_core::{
    Error, Reason, Result,
    model::{Page, Workspace},
    names::WorkspaceName,
    port::{NewWorkspace, WorkspacePatch, WorkspaceStore},
    time::now_micros,
    wake::WakeKey,
};
use async_trait::async_trait;
use sea_query::{Condition, Expr, LockType, Query, SelectStatement};

use crate::{
    PageRequest, Store,
    db::{Tx, named},
    execution::slots,
    feed::Wakes,
    keyset_page,
    mutation::{Mutation, mutate},
    rows::{check_etag, json, labels, to_json},
    tables::{ContextBlobs, IdempotencyKeys, Projects, Workspaces},
};

#[derive(sqlx::FromRow)]
struct WorkspaceRow {
    workspace_id: String,
    display_name: String,
    description: String,
    quotas: String,
    labels: String,
    etag: i64,
    create_time: i64,
    update_time: i64,
}

impl TryFrom<WorkspaceRow> for Workspace {
    type Error = Error;

    fn try_from(row: WorkspaceRow) -> Result<Self> {
        Ok(Self {
            quotas: json("quotas", &row.quotas)?,
            labels: labels(&row.labels)?,
            id: row.workspace_id,
            display_name: row.display_name,
            description: row.description,
            etag: row.etag,
            create_time: row.create_time,
            update_time: row.update_time,
        })
    }
}

/// Every column of `workspaces`, in the order rows decode and inserts bind.
const COLUMNS: [Workspaces; 8] = [
    Workspaces::WorkspaceId,
    Workspaces::DisplayName,
    Workspaces::Description,
    Workspaces::Quotas,
    Workspaces::Labels,
    Workspaces::Etag,
    Workspaces::CreateTime,
    Workspaces::UpdateTime,
];

fn select() -> SelectStatement {
    Query::select()
        .columns(COLUMNS)
        .from(Workspaces::Table)
        .to_owned()
}

fn by_id(id: &str) -> SelectStatement {
    select()
        .and_where(Expr::col(Workspaces::WorkspaceId).eq(id))
        .to_owned()
}

fn not_found(id: &str) -> Error {
    Error::not_found(
        WorkspaceName {
            workspace: id.to_owned(),
        }
        .to_string(),
    )
}

/// The workspace row, locked until the transaction ends (a no-op lock on SQLite, where
/// the single writer already serializes).
pub(crate) async fn lock_workspace(tx: &mut Tx, id: &str) -> Result<Workspace> {
    let row: Option<WorkspaceRow> = tx
        .fetch_optional(&by_id(id).lock(LockType::Update).to_owned())
        .await?;
    row.ok_or_else(|| not_found(id))?.try_into()
}

/// The workspace row inside a transaction, without a lock: for reading quotas and
/// checking existence where no count must be serialized.
pub(crate) async fn read_workspace(tx: &mut Tx, id: &str) -> Result<Workspace> {
    let row: Option<WorkspaceRow> = tx.fetch_optional(&by_id(id)).await?;
    row.ok_or_else(|| not_found(id))?.try_into()
}

#[async_trait]
impl WorkspaceStore for Store {
    async fn create_workspace(&self, m: &Mutation, new: NewWorkspace) -> Result<Workspace> {
        slots::check_limit(new.quotas.max_concurrent_runs)?;
        mutate!(self, m, |tx| async {
            let now = now_micros();
            let workspace = Workspace {
                id: new.id.clone(),
                display_name: new.display_name.clone(),
                description: new.description.clone(),
                quotas: new.quotas,
                labels: new.labels.clone(),
                etag: 1,
                create_time: now,
                update_time: now,
            };
            let insert = Query::insert()
                .into_table(Workspaces::Table)
                .columns(COLUMNS)
                .values_panic([
                    workspace.id.clone().into(),
                    workspace.display_name.clone().into(),
                    workspace.description.clone().into(),
                    to_json(&workspace.quotas).into(),
                    to_json(&workspace.labels).into(),
                    workspace.etag.into(),
                    now.into(),
                    now.into(),
                ])
                .to_owned();
            tx.execute(&insert)
                .await
                .map_err(|e| named(e, &m.resource))?;
            slots::add(tx, &workspace.id, 1, workspace.quotas.max_concurrent_runs).await?;
            Ok(workspace)
        })
    }

    async fn get_workspace(&self, id: &str) -> Result<Workspace> {
        let row: Option<WorkspaceRow> = self.db.fetch_optional(&by_id(id)).await?;
        row.ok_or_else(|| not_found(id))?.try_into()
    }

    async fn list_workspaces(&self, page: &PageRequest) -> Result<Page<Workspace>> {
        keyset_page::<WorkspaceRow, Workspace>(
            &self.db,
            select(),
            Workspaces::WorkspaceId,
            page,
            |w| w.id.clone(),
        )
        .await
    }

    async fn update_workspace(
        &self,
        m: &Mutation,
        id: &str,
        patch: WorkspacePatch,
    ) -> Result<Workspace> {
        // The concurrent-run limit changed: waiting pollers look again (raised, they may
        // claim now; lowered, a poll that met the slots locked by the change may too).
        let freed = Wakes::of(WakeKey::any_queue(id));
        let mut resized = false;
        let updated = mutate!(self, m, |tx| async {
            let mut workspace = lock_workspace(tx, id).await?;
            check_etag(workspace.etag, &patch.etag)?;
            if let Some(v) = &patch.display_name {
                workspace.display_name = v.clone();
            }
            if let Some(v) = &patch.description {
                workspace.description = v.clone();
            }
            let before = workspace.quotas.max_concurrent_runs;
            workspace.quotas = patch.quotas.apply(workspace.quotas);
            let after = workspace.quotas.max_concurrent_runs;
            if after != before {
                slots::check_limit(after)?;
                slots::resize(tx, id, after).await?;
                resized = true;
                freed.notify(tx, &self.replica).await?;
            }
            if let Some(v) = &patch.labels {
                workspace.labels = v.clone();
            }
            workspace.etag += 1;
            workspace.update_time = now_micros().max(workspace.update_time + 1);
            let update = Query::update()
                .table(Workspaces::Table)
                .values([
                    (
                        Workspaces::DisplayName,
                        workspace.display_name.clone().into(),
                    ),
                    (
                        Workspaces::Description,
                        workspace.description.clone().into(),
                    ),
                    (Workspaces::Quotas, to_json(&workspace.quotas).into()),
                    (Workspaces::Labels, to_json(&workspace.labels).into()),
                    (Workspaces::Etag, workspace.etag.into()),
                    (Workspaces::UpdateTime, workspace.update_time.into()),
                ])
                .and_where(Expr::col(Workspaces::WorkspaceId).eq(id))
                .to_owned();
            tx.execute(&update).await?;
            Ok(workspace)
        });
        if resized && updated.is_ok() {
            self.wake(&freed);
        }
        updated
    }

    async fn delete_workspace(
        &self,
        m: &Mutation,
        id: &str,
        force: bool,
        etag: &str,
    ) -> Result<()> {
        let woken = Wakes::of(WakeKey::under(id, None));
        let deleted = mutate!(self, m, |tx| async {
            let workspace = lock_workspace(tx, id).await?;
            check_etag(workspace.etag, etag)?;
            if !force {
                let has_projects = tx
                    .exists(
                        Projects::Table,
                        Condition::all().add(Expr::col(Projects::WorkspaceId).eq(id)),
                    )
                    .await?;
                if has_projects {
                    return Err(Error::precondition(
                        Reason::HasChildren,
                        format!(
                            "{} still has projects; delete them first or set force",
                            m.resource
                        ),
                    ));
                }
            }
            // Watchers of its contexts and runs end now, on every replica.
            woken.notify(tx, &self.replica).await?;
            tx.execute(
                &Query::delete()
                    .from_table(Workspaces::Table)
                    .and_where(Expr::col(Workspaces::WorkspaceId).eq(id))
                    .to_owned(),
            )
            .await?;
            tx.execute(
                &Query::delete()
                    .from_table(ContextBlobs::Table)
                    .and_where(Expr::col(ContextBlobs::WorkspaceId).eq(id))
                    .to_owned(),
            )
            .await?;
            // Results stored for the old workspace must not be replayed for a new one.
            tx.execute(
                &Query::delete()
                    .from_table(IdempotencyKeys::Table)
                    .and_where(Expr::col(IdempotencyKeys::WorkspaceId).eq(id))
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
