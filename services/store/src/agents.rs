//! Agent definitions: a head row (`agents`) pointing at the latest of its immutable,
//! numbered revisions (`agent_revisions`, append-only by trigger). Every update appends a
//! full snapshot, so any revision reads back exactly as it was.

use agentry_core::{
    Error, Result,
    model::{Agent, AgentSpec, Page},
    names::AgentName,
    port::{AgentStore, DeleteGuard},
    time::now_micros,
};
use async_trait::async_trait;
// The commands are core's; re-exported for the store's callers.
pub use agentry_core::agent::{AgentPatch, NewAgent};
use sea_query::{Alias, Expr, LockType, Order, Query, SelectStatement};

use crate::{
    PageRequest, Store,
    db::{Tx, named},
    keyset_page,
    mutation::{Mutation, mutate},
    paginate,
    rows::{check_etag, columns, decode, decode_all, insert_row, json, to_json, values},
    tables::{AgentRevisions, Agents, Instances},
    workspaces::read_workspace,
};

columns!(
    /// The columns of an agent's head row, in the order inserts bind.
    HEAD_COLUMNS: Agents [WorkspaceId, AgentId, AgentUid, LatestRevision, CreateTime, UpdateTime]
);

#[derive(sqlx::FromRow)]
struct AgentRow {
    workspace_id: String,
    agent_id: String,
    agent_uid: String,
    latest_revision: i64,
    create_time: i64,
    revision: i64,
    spec: String,
    revision_create_time: i64,
}

/// An agent revision and the incarnation it belongs to.
pub(crate) struct AgentRecord {
    pub(crate) agent: Agent,
    pub(crate) uid: String,
}

decode!(AgentRow => AgentRecord, |row| Ok(Self {
    agent: Agent {
        workspace: row.workspace_id,
        id: row.agent_id,
        revision: row.revision,
        latest_revision: row.latest_revision,
        create_time: row.create_time,
        revision_create_time: row.revision_create_time,
        spec: json("spec", &row.spec)?,
    },
    uid: row.agent_uid,
}));

decode!(AgentRow => Agent, |row| Ok(AgentRecord::try_from(row)?.agent));

/// Which revisions a head is joined with.
#[derive(Clone, Copy)]
enum Revisions {
    Latest,
    Exact(i64),
    All,
}

/// Heads joined with their revisions.
fn select(revisions: Revisions) -> SelectStatement {
    let same_incarnation = Expr::col((AgentRevisions::Table, AgentRevisions::WorkspaceId))
        .equals((Agents::Table, Agents::WorkspaceId))
        .and(
            Expr::col((AgentRevisions::Table, AgentRevisions::AgentUid))
                .equals((Agents::Table, Agents::AgentUid)),
        );
    let revision = Expr::col((AgentRevisions::Table, AgentRevisions::Revision));
    let on = match revisions {
        Revisions::Latest => {
            same_incarnation.and(revision.equals((Agents::Table, Agents::LatestRevision)))
        }
        Revisions::Exact(n) => same_incarnation.and(revision.eq(n)),
        Revisions::All => same_incarnation,
    };
    Query::select()
        .columns([
            (Agents::Table, Agents::WorkspaceId),
            (Agents::Table, Agents::AgentId),
            (Agents::Table, Agents::AgentUid),
            (Agents::Table, Agents::LatestRevision),
            (Agents::Table, Agents::CreateTime),
        ])
        .columns([
            (AgentRevisions::Table, AgentRevisions::Revision),
            (AgentRevisions::Table, AgentRevisions::Spec),
        ])
        .expr_as(
            Expr::col((AgentRevisions::Table, AgentRevisions::CreateTime)),
            Alias::new("revision_create_time"),
        )
        .from(Agents::Table)
        .inner_join(AgentRevisions::Table, on)
        .to_owned()
}

fn by_name(name: &AgentName, revision: Option<i64>) -> SelectStatement {
    select(revision.map_or(Revisions::Latest, Revisions::Exact))
        .and_where(Expr::col((Agents::Table, Agents::WorkspaceId)).eq(name.workspace.as_str()))
        .and_where(Expr::col((Agents::Table, Agents::AgentId)).eq(name.agent.as_str()))
        .to_owned()
}

fn revision_not_found(name: &AgentName, revision: Option<i64>) -> Error {
    match revision {
        Some(n) => Error::not_found(format!("{name} revision {n}")),
        None => Error::not_found(name.to_string()),
    }
}

/// The agent at `revision` (latest when `None`) inside a write transaction.
pub(crate) async fn agent_in_tx(
    tx: &mut Tx,
    name: &AgentName,
    revision: Option<i64>,
) -> Result<AgentRecord> {
    let row: Option<AgentRow> = tx.fetch_optional(&by_name(name, revision)).await?;
    row.ok_or_else(|| revision_not_found(name, revision))?
        .try_into()
}

async fn insert_revision(
    tx: &mut Tx,
    workspace: &str,
    id: &str,
    uid: &str,
    revision: i64,
    spec: &AgentSpec,
    now: i64,
) -> Result<()> {
    let insert = insert_row(
        AgentRevisions::Table,
        columns!(AgentRevisions [WorkspaceId, AgentUid, Revision, AgentId, Spec, CreateTime]),
        values![workspace, uid, revision, id, to_json(spec), now,],
    );
    tx.execute(&insert).await.map(|_| ())
}

#[async_trait]
impl AgentStore for Store {
    async fn create_agent(&self, m: &Mutation, new: NewAgent) -> Result<Agent> {
        mutate!(self, m, |tx| async {
            read_workspace(tx, &new.workspace).await?;
            let now = now_micros();
            let uid = uuid::Uuid::now_v7().to_string();
            let head = insert_row(
                Agents::Table,
                HEAD_COLUMNS,
                values![new.workspace, new.id, uid, 1i64, now, now,],
            );
            tx.execute(&head).await.map_err(|e| named(e, &m.resource))?;
            insert_revision(tx, &new.workspace, &new.id, &uid, 1, &new.spec, now).await?;
            Ok(Agent {
                workspace: new.workspace.clone(),
                id: new.id.clone(),
                revision: 1,
                latest_revision: 1,
                spec: new.spec.clone(),
                create_time: now,
                revision_create_time: now,
            })
        })
    }

    async fn get_agent(&self, name: &AgentName, revision: Option<i64>) -> Result<Agent> {
        let row: Option<AgentRow> = self.db.fetch_optional(&by_name(name, revision)).await?;
        Ok(AgentRecord::try_from(row.ok_or_else(|| revision_not_found(name, revision))?)?.agent)
    }

    async fn list_agents(&self, workspace: &str, page: &PageRequest) -> Result<Page<Agent>> {
        let stmt = select(Revisions::Latest)
            .and_where(Expr::col((Agents::Table, Agents::WorkspaceId)).eq(workspace))
            .to_owned();
        let key = (Agents::Table, Agents::AgentId);
        keyset_page::<AgentRow, Agent>(&self.db, stmt, key, page, |a| a.id.clone()).await
    }

    async fn list_agent_revisions(
        &self,
        name: &AgentName,
        page: &PageRequest,
    ) -> Result<Page<Agent>> {
        // Every revision of the current incarnation, newest first.
        let mut stmt = select(Revisions::All)
            .and_where(Expr::col((Agents::Table, Agents::WorkspaceId)).eq(name.workspace.as_str()))
            .and_where(Expr::col((Agents::Table, Agents::AgentId)).eq(name.agent.as_str()))
            .to_owned();
        if let Some(after) = &page.after {
            let after: i64 = after
                .parse()
                .map_err(|_| Error::internal("revision cursor is not a number"))?;
            stmt.and_where(Expr::col((AgentRevisions::Table, AgentRevisions::Revision)).lt(after));
        }
        stmt.order_by(
            (AgentRevisions::Table, AgentRevisions::Revision),
            Order::Desc,
        )
        .limit(page.size as u64 + 1);
        let rows: Vec<AgentRow> = self.db.fetch_all(&stmt).await?;
        if rows.is_empty() && page.after.is_none() {
            return Err(Error::not_found(name.to_string()));
        }
        let items: Vec<Agent> = decode_all(rows)?;
        Ok(paginate(items, page.size, |a| a.revision.to_string()))
    }

    async fn update_agent(
        &self,
        m: &Mutation,
        name: &AgentName,
        patch: AgentPatch,
    ) -> Result<Agent> {
        mutate!(self, m, |tx| async {
            // Locking the head serializes concurrent updates: revisions stay gapless.
            let head: Option<(String,)> = tx
                .fetch_optional(
                    &Query::select()
                        .column(Agents::AgentUid)
                        .from(Agents::Table)
                        .and_where(Expr::col(Agents::WorkspaceId).eq(name.workspace.as_str()))
                        .and_where(Expr::col(Agents::AgentId).eq(name.agent.as_str()))
                        .lock(LockType::Update)
                        .to_owned(),
                )
                .await?;
            if head.is_none() {
                return Err(Error::not_found(name.to_string()));
            }
            let AgentRecord {
                agent: mut current,
                uid,
            } = agent_in_tx(tx, name, None).await?;
            check_etag(current.latest_revision, patch.etag.as_deref())?;
            patch.apply(&mut current.spec)?;
            let now = now_micros();
            let revision = current.latest_revision + 1;
            insert_revision(
                tx,
                &name.workspace,
                &name.agent,
                &uid,
                revision,
                &current.spec,
                now,
            )
            .await?;
            tx.execute(
                &Query::update()
                    .table(Agents::Table)
                    .values([
                        (Agents::LatestRevision, revision.into()),
                        (Agents::UpdateTime, now.into()),
                    ])
                    .and_where(Expr::col(Agents::WorkspaceId).eq(name.workspace.as_str()))
                    .and_where(Expr::col(Agents::AgentId).eq(name.agent.as_str()))
                    .to_owned(),
            )
            .await?;
            Ok(Agent {
                revision,
                latest_revision: revision,
                revision_create_time: now,
                ..current
            })
        })
    }

    async fn delete_agent(
        &self,
        m: &Mutation,
        name: &AgentName,
        guard: &DeleteGuard,
    ) -> Result<()> {
        let (force, etag) = (guard.force, guard.etag.as_deref());
        mutate!(self, m, |tx| async {
            let AgentRecord { agent, uid } = agent_in_tx(tx, name, None).await?;
            check_etag(agent.latest_revision, etag)?;
            let live = Expr::col(Instances::WorkspaceId)
                .eq(name.workspace.as_str())
                .and(Expr::col(Instances::AgentUid).eq(uid.as_str()))
                .and(Expr::col(Instances::Status).ne("TERMINATED"));
            if force {
                tx.execute(
                    &Query::update()
                        .table(Instances::Table)
                        .values([
                            (Instances::Status, "TERMINATED".into()),
                            (Instances::HeartbeatExpireTime, Option::<i64>::None.into()),
                            (Instances::Etag, Expr::col(Instances::Etag).add(1)),
                            (Instances::UpdateTime, now_micros().into()),
                        ])
                        .cond_where(live)
                        .to_owned(),
                )
                .await?;
            } else {
                let pinned = tx.exists(Instances::Table, live).await?;
                if pinned {
                    return Err(Error::precondition(
                        "HAS_CHILDREN",
                        format!("live instances still pin {name}; delete them first or set force"),
                    ));
                }
            }
            let head = Expr::col(Agents::WorkspaceId)
                .eq(name.workspace.as_str())
                .and(Expr::col(Agents::AgentId).eq(name.agent.as_str()));
            tx.delete(Agents::Table, head).await?;
            Ok(())
        })
    }
}
