//! Workspaces: the tenants. Deleting one removes its projects, instances, agent heads
//! and API keys by cascade; agent revisions and the audit log stay (append-only).

use agentry_core::{
    Error, Reason, Result,
    model::{Page, Workspace},
    names::WorkspaceName,
    port::{DeleteGuard, NewWorkspace, WorkspacePatch, WorkspaceStore},
    time::now_micros,
    wake::WakeKey,
};
use async_trait::async_trait;
use sea_query::{Condition, Expr, LockType, Query, SelectStatement, SimpleExpr};

use crate::{
    PageRequest, Store,
    db::Tx,
    execution::slots,
    feed::Wakes,
    keyset_page,
    mutation::{Mutation, mutate, mutate_waking},
    rows::{
        self, check_etag, columns, decode, found, insert_row, json, labels, select_all, to_json,
        values,
    },
    tables::{ContextBlobs, IdempotencyKeys, Projects, Workspaces},
};

columns!(
    /// Every column of `workspaces`, in the order rows decode and inserts bind.
    COLUMNS: Workspaces [
        WorkspaceId, DisplayName, Description, Quotas, Labels, Etag, CreateTime, UpdateTime
    ]
);

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

decode!(WorkspaceRow => Workspace, |row| Ok(Self {
    id: row.workspace_id,
    display_name: row.display_name,
    description: row.description,
    etag: row.etag,
    create_time: row.create_time,
    update_time: row.update_time,
    quotas: json("quotas", &row.quotas)?,
    labels: labels(&row.labels)?,
}));

/// A workspace's row, in [`COLUMNS`] order.
fn row(w: &Workspace) -> [SimpleExpr; COLUMNS.len()] {
    values![
        w.id,
        w.display_name,
        w.description,
        to_json(&w.quotas),
        to_json(&w.labels),
        w.etag,
        w.create_time,
        w.update_time,
    ]
}

fn by_id(id: &str) -> SelectStatement {
    select_all(Workspaces::Table, COLUMNS)
        .and_where(Expr::col(Workspaces::WorkspaceId).eq(id))
        .to_owned()
}

fn name(id: &str) -> WorkspaceName {
    WorkspaceName {
        workspace: id.to_owned(),
    }
}

/// The workspace row, locked until the transaction ends (a no-op lock on SQLite, where
/// the single writer already serializes).
pub(crate) async fn lock_workspace(tx: &mut Tx, id: &str) -> Result<Workspace> {
    let locked = by_id(id).lock(LockType::Update).to_owned();
    found(tx.fetch_optional::<WorkspaceRow>(&locked).await?, name(id))
}

/// The workspace row inside a transaction, without a lock: for reading quotas and
/// checking existence where no count must be serialized.
pub(crate) async fn read_workspace(tx: &mut Tx, id: &str) -> Result<Workspace> {
    found(
        tx.fetch_optional::<WorkspaceRow>(&by_id(id)).await?,
        name(id),
    )
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
            let insert = insert_row(Workspaces::Table, COLUMNS, row(&workspace));
            tx.insert(&insert, &m.resource).await?;
            slots::add(tx, &workspace.id, 1, workspace.quotas.max_concurrent_runs).await?;
            Ok(workspace)
        })
    }

    async fn get_workspace(&self, id: &str) -> Result<Workspace> {
        found(
            self.db.fetch_optional::<WorkspaceRow>(&by_id(id)).await?,
            name(id),
        )
    }

    async fn list_workspaces(&self, page: &PageRequest) -> Result<Page<Workspace>> {
        keyset_page::<WorkspaceRow, Workspace>(
            &self.db,
            select_all(Workspaces::Table, COLUMNS),
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
        let mut freed = Wakes::default();
        mutate_waking!(self, m, freed, |tx| async {
            let mut workspace = lock_workspace(tx, id).await?;
            check_etag(workspace.etag, patch.etag.as_deref())?;
            rows::patch(&mut workspace.display_name, &patch.display_name);
            rows::patch(&mut workspace.description, &patch.description);
            let before = workspace.quotas.max_concurrent_runs;
            workspace.quotas = patch.quotas.apply(workspace.quotas);
            let after = workspace.quotas.max_concurrent_runs;
            if after != before {
                slots::check_limit(after)?;
                slots::resize(tx, id, after).await?;
                freed.push(WakeKey::any_queue(id));
            }
            rows::patch(&mut workspace.labels, &patch.labels);
            rows::bump(&mut workspace.etag, &mut workspace.update_time);
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
        })
    }

    async fn delete_workspace(&self, m: &Mutation, id: &str, guard: &DeleteGuard) -> Result<()> {
        let (force, etag) = (guard.force, guard.etag.as_deref());
        // Watchers of its contexts and runs end, on every replica.
        let woken = Wakes::of(WakeKey::under(id, None));
        mutate_waking!(self, m, woken, |tx| async {
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
            tx.delete(Workspaces::Table, Expr::col(Workspaces::WorkspaceId).eq(id))
                .await?;
            tx.delete(
                ContextBlobs::Table,
                Expr::col(ContextBlobs::WorkspaceId).eq(id),
            )
            .await?;
            // Results stored for the old workspace must not be replayed for a new one.
            let keys = Expr::col(IdempotencyKeys::WorkspaceId).eq(id);
            tx.delete(IdempotencyKeys::Table, keys).await?;
            Ok(())
        })
    }
}
