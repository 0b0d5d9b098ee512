//! Agent instances: a pinned agent revision, a validated config, the status machine of
//! design §4 (docs/design.md) and heartbeat liveness. The reaper moves instances whose heartbeat lapsed to
//! OFFLINE, remembering the status a later heartbeat restores.

use agentry_core::{
    Error, Result,
    instance::{StatusChange, check_instance_quota},
    model::{Instance, Page},
    names::{AgentName, InstanceName, ProjectName},
    port::InstanceStore,
    status::InstanceStatus,
    time::{UnixMicros, now_micros},
};
use async_trait::async_trait;
// The commands are core's; re-exported for the store's callers.
pub use agentry_core::instance::{InstanceFilter, InstancePatch, NewInstance};
use sea_query::{Condition, Expr, LockType, Query, SelectStatement};
use serde_json::Value;

use crate::{
    PageRequest, Store,
    agents::{AgentRecord, agent_in_tx},
    db::Tx,
    keyset_page,
    mutation::{Mutation, mutate},
    projects::lock_project,
    rows::{
        ProjectKeyed, check_etag, columns, decode, found, insert_row, json, labels, select_all,
        to_json, values,
    },
    tables::Instances,
    workspaces::read_workspace,
};

#[derive(sqlx::FromRow, serde::Deserialize)]
struct InstanceRow {
    workspace_id: String,
    project_id: String,
    instance_id: String,
    display_name: String,
    agent_id: String,
    agent_revision: i64,
    config: String,
    effective_config: String,
    status: String,
    status_before_offline: Option<String>,
    status_message: String,
    heartbeat_ttl_ms: i64,
    last_heartbeat_time: Option<i64>,
    labels: String,
    etag: i64,
    create_time: i64,
    update_time: i64,
}

fn status(column: &str, text: &str) -> Result<InstanceStatus> {
    InstanceStatus::parse(text)
        .ok_or_else(|| Error::internal(format!("column {column} holds unknown status {text:?}")))
}

/// An instance and the status a heartbeat would restore.
struct InstanceRecord {
    instance: Instance,
    status_before_offline: Option<InstanceStatus>,
}

decode!(InstanceRow => InstanceRecord, |row| Ok(Self {
    status_before_offline: row
        .status_before_offline
        .as_deref()
        .map(|s| status("status_before_offline", s))
        .transpose()?,
    instance: Instance {
        workspace: row.workspace_id,
        project: row.project_id,
        id: row.instance_id,
        display_name: row.display_name,
        agent: row.agent_id,
        agent_revision: row.agent_revision,
        status_message: row.status_message,
        heartbeat_ttl_ms: row.heartbeat_ttl_ms,
        last_heartbeat_time: row.last_heartbeat_time,
        create_time: row.create_time,
        update_time: row.update_time,
        etag: row.etag,
        config: json("config", &row.config)?,
        effective_config: json("effective_config", &row.effective_config)?,
        status: status("status", &row.status)?,
        labels: labels(&row.labels)?,
    },
}));

decode!(InstanceRow => Instance, |row| Ok(InstanceRecord::try_from(row)?.instance));

columns!(COLUMNS: Instances [
    WorkspaceId, ProjectId, InstanceId, DisplayName, AgentId, AgentRevision, Config,
    EffectiveConfig, Status, StatusBeforeOffline, StatusMessage, HeartbeatTtlMs, LastHeartbeatTime,
    Labels, Etag, CreateTime, UpdateTime
]);

/// The row of instance `name`.
pub(crate) fn instance_row(name: &InstanceName) -> Condition {
    Condition::all()
        .add(Instances::in_project(name))
        .add(Expr::col(Instances::InstanceId).eq(name.instance.as_str()))
}

fn by_name(name: &InstanceName) -> SelectStatement {
    select_all(Instances::Table, COLUMNS)
        .cond_where(instance_row(name))
        .to_owned()
}

/// The instance inside a transaction, without a lock (sessions and runs read its pin).
pub(crate) async fn read_instance(tx: &mut Tx, name: &InstanceName) -> Result<Instance> {
    found(
        tx.fetch_optional::<InstanceRow>(&by_name(name)).await?,
        name,
    )
}

/// Postgres: the instance of the row `of` (a `sessions` or `runs` row, by alias) as
/// JSON text, for a statement that reads it along with that row (NULL when there is
/// none); [`instance_from_json`] decodes it.
macro_rules! instance_json {
    ($of:literal) => {
        concat!(
            "(SELECT to_jsonb(i)::text FROM instances i WHERE i.workspace_id = ",
            $of,
            ".workspace_id AND i.project_id = ",
            $of,
            ".project_id AND i.instance_id = ",
            $of,
            ".instance_id)"
        )
    };
}
pub(crate) use instance_json;

/// The instance that [`instance_json`] read, or, when it read none (`read` is `None`),
/// the instance read by name as [`read_instance`] does (NOT_FOUND when there is none).
pub(crate) async fn instance_from_json(
    tx: &mut Tx,
    read: Option<&str>,
    name: &InstanceName,
) -> Result<Instance> {
    match read {
        Some(text) => json::<InstanceRow>("instance", text)?.try_into(),
        None => read_instance(tx, name).await,
    }
}

/// The instance, locked for a change when the caller's `etag` (none: any) is current,
/// and the status a heartbeat would restore.
async fn lock_instance(
    tx: &mut Tx,
    name: &InstanceName,
    etag: Option<&str>,
) -> Result<(Instance, Option<InstanceStatus>)> {
    let locked = by_name(name).lock(LockType::Update).to_owned();
    let record: InstanceRecord = found(tx.fetch_optional::<InstanceRow>(&locked).await?, name)?;
    check_etag(record.instance.etag, etag)?;
    Ok((record.instance, record.status_before_offline))
}

/// Writes every mutable column of `instance` back.
async fn save(
    tx: &mut Tx,
    instance: &Instance,
    uid: Option<&str>,
    before_offline: Option<InstanceStatus>,
    heartbeat_expire_time: Option<UnixMicros>,
) -> Result<()> {
    let mut update = Query::update();
    update
        .table(Instances::Table)
        .values([
            (Instances::DisplayName, instance.display_name.clone().into()),
            (Instances::AgentRevision, instance.agent_revision.into()),
            (Instances::Config, to_json(&instance.config).into()),
            (
                Instances::EffectiveConfig,
                to_json(&instance.effective_config).into(),
            ),
            (Instances::Status, instance.status.as_str().into()),
            (
                Instances::StatusBeforeOffline,
                before_offline.map(|s| s.as_str()).into(),
            ),
            (
                Instances::StatusMessage,
                instance.status_message.clone().into(),
            ),
            (Instances::HeartbeatTtlMs, instance.heartbeat_ttl_ms.into()),
            (
                Instances::LastHeartbeatTime,
                instance.last_heartbeat_time.into(),
            ),
            (Instances::HeartbeatExpireTime, heartbeat_expire_time.into()),
            (Instances::Labels, to_json(&instance.labels).into()),
            (Instances::Etag, instance.etag.into()),
            (Instances::UpdateTime, instance.update_time.into()),
        ])
        .cond_where(Instances::in_project(instance))
        .and_where(Expr::col(Instances::InstanceId).eq(instance.id.as_str()));
    if let Some(uid) = uid {
        update.value(Instances::AgentUid, uid);
    }
    tx.execute(&update).await.map(|_| ())
}

/// Loads the pinned revision, merges and validates the config.
async fn resolve_config(
    tx: &mut Tx,
    agent: &AgentName,
    revision: Option<i64>,
    config: &Value,
) -> Result<(AgentRecord, Value)> {
    let record = agent_in_tx(tx, agent, revision).await?;
    let effective = record.agent.spec.instance_config(agent, config)?;
    Ok((record, effective))
}

#[async_trait]
impl InstanceStore for Store {
    async fn create_instance(&self, m: &Mutation, new: NewInstance) -> Result<Instance> {
        mutate!(self, m, |tx| async {
            let project = new.name.project();
            // The project lock serializes creates in the project, so the quota holds.
            lock_project(tx, &project).await?;
            let workspace = read_workspace(tx, &new.name.workspace).await?;
            let quota = workspace.quotas.max_instances_per_project;
            let live = Condition::all()
                .add(Instances::in_project(&project))
                .add(Expr::col(Instances::Status).ne("TERMINATED"));
            let live = tx.count(Instances::Table, live).await?;
            check_instance_quota(&project, live, quota)?;
            let (record, effective) =
                resolve_config(tx, &new.agent, new.agent_revision, &new.config).await?;
            let now = now_micros();
            let instance = Instance::new(&new, record.agent.revision, effective, now);
            let insert = insert_row(
                Instances::Table,
                [
                    Instances::WorkspaceId,
                    Instances::ProjectId,
                    Instances::InstanceId,
                    Instances::DisplayName,
                    Instances::AgentId,
                    Instances::AgentUid,
                    Instances::AgentRevision,
                    Instances::Config,
                    Instances::EffectiveConfig,
                    Instances::Status,
                    Instances::StatusMessage,
                    Instances::HeartbeatTtlMs,
                    Instances::Labels,
                    Instances::Etag,
                    Instances::CreateTime,
                    Instances::UpdateTime,
                ],
                values![
                    instance.workspace,
                    instance.project,
                    instance.id,
                    instance.display_name,
                    instance.agent,
                    record.uid,
                    instance.agent_revision,
                    to_json(&instance.config),
                    to_json(&instance.effective_config),
                    instance.status.as_str(),
                    String::new(),
                    instance.heartbeat_ttl_ms,
                    to_json(&instance.labels),
                    instance.etag,
                    now,
                    now,
                ],
            );
            tx.insert(&insert, &m.resource).await?;
            Ok(instance)
        })
    }

    async fn get_instance(&self, name: &InstanceName) -> Result<Instance> {
        found(
            self.db
                .fetch_optional::<InstanceRow>(&by_name(name))
                .await?,
            name,
        )
    }

    async fn list_instances(
        &self,
        project: &ProjectName,
        filter: &InstanceFilter,
        page: &PageRequest,
    ) -> Result<Page<Instance>> {
        let mut stmt = select_all(Instances::Table, COLUMNS)
            .cond_where(Instances::in_project(project))
            .to_owned();
        if let Some(status) = filter.status {
            stmt.and_where(Expr::col(Instances::Status).eq(status.as_str()));
        }
        if let Some(agent) = &filter.agent {
            stmt.and_where(Expr::col(Instances::AgentId).eq(agent.as_str()));
        }
        keyset_page::<InstanceRow, Instance>(&self.db, stmt, Instances::InstanceId, page, |i| {
            i.id.clone()
        })
        .await
    }

    async fn update_instance(
        &self,
        m: &Mutation,
        name: &InstanceName,
        patch: InstancePatch,
    ) -> Result<Instance> {
        mutate!(self, m, |tx| async {
            let (mut instance, status_before_offline) =
                lock_instance(tx, name, patch.etag.as_deref()).await?;
            let mut uid = None;
            if let Some(revision) = patch.apply(&mut instance)? {
                let agent = AgentName {
                    workspace: name.workspace.clone(),
                    agent: instance.agent.clone(),
                };
                let (record, effective) =
                    resolve_config(tx, &agent, revision, &instance.config).await?;
                instance.agent_revision = record.agent.revision;
                instance.effective_config = effective;
                uid = Some(record.uid);
            }
            instance.touch(now_micros());
            save(
                tx,
                &instance,
                uid.as_deref(),
                status_before_offline,
                instance.heartbeat_expire_time(),
            )
            .await?;
            Ok(instance)
        })
    }

    async fn delete_instance(
        &self,
        m: &Mutation,
        name: &InstanceName,
        etag: Option<&str>,
    ) -> Result<Instance> {
        mutate!(self, m, |tx| async {
            let (mut instance, _) = lock_instance(tx, name, etag).await?;
            if instance.terminate(now_micros()) {
                save(tx, &instance, None, None, None).await?;
            }
            Ok(instance)
        })
    }

    async fn set_instance_status(
        &self,
        m: &Mutation,
        name: &InstanceName,
        change: StatusChange,
    ) -> Result<Instance> {
        let (to, message, etag) = (change.to, change.message.as_str(), change.etag.as_deref());
        mutate!(self, m, |tx| async {
            let (mut instance, status_before_offline) = lock_instance(tx, name, etag).await?;
            if !instance.set_status(to, message, now_micros())? {
                return Ok(instance);
            }
            save(
                tx,
                &instance,
                None,
                status_before_offline,
                instance.heartbeat_expire_time(),
            )
            .await?;
            Ok(instance)
        })
    }

    async fn heartbeat_instance(&self, name: &InstanceName) -> Result<Instance> {
        let mut tx = self.db.begin().await?;
        let (mut instance, status_before_offline) = lock_instance(&mut tx, name, None).await?;
        instance.heartbeat(status_before_offline, now_micros())?;
        save(
            &mut tx,
            &instance,
            None,
            None,
            instance.heartbeat_expire_time(),
        )
        .await?;
        tx.commit().await?;
        Ok(instance)
    }

    async fn reap_instances(&self, now: UnixMicros) -> Result<u64> {
        let stmt = Query::update()
            .table(Instances::Table)
            .values([
                (
                    Instances::StatusBeforeOffline,
                    Expr::col(Instances::Status).into(),
                ),
                (Instances::Status, "OFFLINE".into()),
                (Instances::HeartbeatExpireTime, Option::<i64>::None.into()),
                (Instances::Etag, Expr::col(Instances::Etag).add(1)),
                (Instances::UpdateTime, now.into()),
            ])
            .and_where(Expr::col(Instances::HeartbeatExpireTime).lt(now))
            .and_where(Expr::col(Instances::Status).is_not_in(["OFFLINE", "TERMINATED"]))
            .to_owned();
        self.db.execute(&stmt).await
    }
}
