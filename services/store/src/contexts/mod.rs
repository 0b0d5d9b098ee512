//! Contexts: metadata rows (`contexts`) over gapless, immutable versions
//! (`context_versions`) whose documents live once per context in `context_blobs`,
//! addressed by the SHA-256 of their canonical JSON and reference counted by the
//! context's own versions (so the context row's lock covers them: writers of different
//! contexts never share a blob row).
//!
//! Every write locks the context row, so versions stay gapless under any number of
//! writers and replicas (on SQLite the single writer does the same). Retention
//! compaction raises `floor_version` before deleting below it: the database trigger only
//! lets versions below the floor go, so history cannot be removed any other way.

mod compaction;
mod group;
mod group_sql;
mod heads;
mod reads;
mod versions;
mod write;

use agentry_core::{
    Result,
    absent::{non_empty, or_empty},
    model::{Context, Page},
    names::{ContextName, InstanceName, ProjectName},
    port::{ContextStore, NewContext},
    time::now_micros,
    wake::WakeKey,
};
use async_trait::async_trait;
use sea_query::{Condition, Expr, LockType, SelectStatement};

pub use compaction::COMPACTION_BATCH;
pub(crate) use group::GroupCommit;
pub(crate) use heads::HeadBatcher;
pub(crate) use write::Writers;

use crate::{
    PageRequest, Store,
    db::Tx,
    feed::Wakes,
    instances::instance_row,
    keyset_page,
    mutation::{Mutation, mutate, mutate_waking},
    projects::lock_project,
    rows::{ProjectKeyed, columns, decode, found, insert_row, labels, select_all, to_json, values},
    tables::{Contexts, Instances},
    workspaces::read_workspace,
};

columns!(
    /// Every column of `contexts`, in the order rows decode and inserts bind.
    COLUMNS: Contexts [
        WorkspaceId, ProjectId, ContextId, Owner, Description, KeepLast, HeadVersion, FloorVersion,
        Labels, CreateTime, UpdateTime
    ]
);

#[derive(sqlx::FromRow)]
pub(crate) struct ContextRow {
    workspace_id: String,
    project_id: String,
    context_id: String,
    owner: String,
    description: String,
    keep_last: i32,
    head_version: i64,
    floor_version: i64,
    labels: String,
    create_time: i64,
    update_time: i64,
}

decode!(ContextRow => Context, |row| Ok(Self {
    workspace: row.workspace_id,
    project: row.project_id,
    id: row.context_id,
    owner: non_empty(row.owner),
    description: row.description,
    keep_last: row.keep_last,
    head_version: row.head_version,
    floor_version: row.floor_version,
    create_time: row.create_time,
    update_time: row.update_time,
    labels: labels(&row.labels)?,
}));

/// The row of context `name`.
pub(crate) fn context_row(name: &ContextName) -> Condition {
    Condition::all()
        .add(Contexts::in_project(name))
        .add(Expr::col(Contexts::ContextId).eq(name.context.as_str()))
}

pub(crate) fn where_context<T: sea_query::ConditionalStatement>(stmt: &mut T, name: &ContextName) {
    stmt.cond_where(Contexts::in_project(name))
        .and_where(Expr::col(Contexts::ContextId).eq(name.context.as_str()));
}

fn by_name(name: &ContextName) -> SelectStatement {
    let mut stmt = select_all(Contexts::Table, COLUMNS);
    where_context(&mut stmt, name);
    stmt
}

pub(crate) async fn lock_context(tx: &mut Tx, name: &ContextName) -> Result<Context> {
    let locked = by_name(name).lock(LockType::Update).to_owned();
    found(tx.fetch_optional::<ContextRow>(&locked).await?, name)
}

#[async_trait]
impl ContextStore for Store {
    async fn create_context(
        &self,
        m: &Mutation,
        new: NewContext,
    ) -> Result<(Context, Option<agentry_core::model::ContextVersion>)> {
        let created = mutate!(self, m, |tx| async {
            let project = new.name.project();
            lock_project(tx, &project).await?;
            let workspace = read_workspace(tx, &project.workspace).await?;
            if let Some(owner) = &new.owner {
                let owner = InstanceName::new(&project.workspace, &project.project, owner);
                tx.must_exist(Instances::Table, instance_row(&owner), &owner)
                    .await?;
            }
            let now = now_micros();
            let mut context = Context {
                workspace: project.workspace.clone(),
                project: project.project.clone(),
                id: new.name.context.clone(),
                owner: new.owner.clone(),
                description: new.description.clone(),
                keep_last: if new.keep_last == 0 {
                    workspace.quotas.context_keep_last
                } else {
                    new.keep_last
                },
                head_version: 0,
                floor_version: 1,
                labels: new.labels.clone(),
                create_time: now,
                update_time: now,
            };
            let insert = insert_row(
                Contexts::Table,
                COLUMNS,
                values![
                    context.workspace,
                    context.project,
                    context.id,
                    or_empty(&context.owner),
                    context.description,
                    context.keep_last,
                    0i64,
                    1i64,
                    to_json(&context.labels),
                    now,
                    now,
                ],
            );
            tx.insert(&insert, &m.resource).await?;
            let version = match &new.data {
                Some(data) => {
                    let write = versions::Append {
                        data: data.clone(),
                        op: agentry_core::model::ContextOp::Create,
                        rollback_of: 0,
                        author: m.principal.clone(),
                        description: String::new(),
                        request_id: m.request_id.clone(),
                        max_bytes: workspace.quotas.max_context_bytes,
                    };
                    let (version, _) = versions::append(tx, &new.name, &mut context, write).await?;
                    Some(version)
                }
                None => None,
            };
            Ok((context, version))
        })?;
        if created.1.is_some() {
            self.wake_everywhere(&Wakes::of(context_key(&new.name)));
        }
        Ok(created)
    }

    async fn get_context(&self, name: &ContextName) -> Result<Context> {
        found(
            self.db.fetch_optional::<ContextRow>(&by_name(name)).await?,
            name,
        )
    }

    async fn list_contexts(
        &self,
        project: &ProjectName,
        owner: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Context>> {
        let mut stmt = select_all(Contexts::Table, COLUMNS)
            .cond_where(Contexts::in_project(project))
            .to_owned();
        if let Some(owner) = owner {
            stmt.and_where(Expr::col(Contexts::Owner).eq(owner));
        }
        keyset_page::<ContextRow, Context>(&self.db, stmt, Contexts::ContextId, page, |c| {
            c.id.clone()
        })
        .await
    }

    async fn delete_context(&self, m: &Mutation, name: &ContextName) -> Result<()> {
        // Watchers on every replica learn of it (and end NOT_FOUND).
        let wakes = Wakes::of(context_key(name));
        mutate_waking!(self, m, wakes, |tx| async {
            lock_context(tx, name).await?;
            // Deleting the context cascades to its versions; its blobs are its own.
            tx.delete(Contexts::Table, context_row(name)).await?;
            compaction::delete_blobs(tx, name).await
        })
    }
}

/// The wake key of a context: what its watchers wait on.
pub(crate) fn context_key(name: &ContextName) -> WakeKey {
    WakeKey::context(&name.workspace, &name.project, &name.context)
}

pub(crate) use compaction::delete_project_blobs;
