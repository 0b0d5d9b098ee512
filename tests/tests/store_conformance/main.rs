//! Store conformance: one body of tests run against SQLite and against Postgres, on the
//! storage layer directly. These pin what no single gRPC call shows: transactions,
//! append-only triggers, audit records, concurrency under quotas and idempotency races.

use std::collections::BTreeSet;

use agentry_core::port::{
    AgentStore, ApiKeyStore, DeleteGuard, InstanceStore, ProjectStore, WorkspaceStore,
};
use agentry_core::{
    Error,
    instance::StatusChange,
    model::{AgentSpec, Quotas},
    names::{AgentName, InstanceName, ProjectName},
    status::InstanceStatus,
};
use agentry_e2e::{Backend, FreshDatabase, fresh_database};
use agentry_store::{
    AgentPatch, Mutation, NewAgent, NewApiKey, NewInstance, NewProject, NewWorkspace, PageRequest,
    Store,
};
use serde_json::json;

macro_rules! conformance {
    ($name:ident, |$store:ident, $db:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let ($db, $store) = open(Backend::Sqlite).await;
                $body
            }

            #[tokio::test]
            async fn postgres() {
                let ($db, $store) = open(Backend::Postgres).await;
                $body
            }
        }
    };
}

async fn open(backend: Backend) -> (FreshDatabase, Store) {
    let db = fresh_database(backend).await;
    let store = Store::connect(&db.url, 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    (db, store)
}

fn mutation(
    workspace: &str,
    method: &'static str,
    resource: &str,
    request_id: &str,
    hash: &[u8],
) -> Mutation {
    Mutation {
        workspace: workspace.into(),
        scope: Some(workspace.into()),
        principal: "root".into(),
        method,
        resource: resource.into(),
        request_id: agentry_core::absent::non_empty(request_id),
        request_hash: hash.to_vec(),
        audit: true,
    }
}

async fn workspace(store: &Store, id: &str, quotas: Quotas) {
    let new = NewWorkspace {
        id: id.into(),
        display_name: String::new(),
        description: String::new(),
        quotas,
        labels: Default::default(),
    };
    store
        .create_workspace(&mutation(id, "CreateWorkspace", id, "", b""), new)
        .await
        .expect("create workspace");
}

fn new_project(workspace: &str, id: &str) -> NewProject {
    NewProject {
        workspace: workspace.into(),
        id: id.into(),
        display_name: String::new(),
        description: String::new(),
        labels: Default::default(),
    }
}

fn spec() -> AgentSpec {
    AgentSpec {
        display_name: "Echo".into(),
        description: String::new(),
        agent_type: String::new(),
        capabilities: vec![],
        tools: vec![],
        config_schema: Some(json!({"type": "object", "properties": {"n": {"type": "integer"}}})),
        default_config: Some(json!({"n": 1})),
        labels: Default::default(),
        enabled: true,
    }
}

async fn agent(store: &Store, ws: &str, id: &str) {
    let m = mutation(ws, "CreateAgent", id, "", b"");
    store
        .create_agent(
            &m,
            NewAgent {
                workspace: ws.into(),
                id: id.into(),
                spec: spec(),
            },
        )
        .await
        .expect("create agent");
}

fn new_instance(ws: &str, project: &str, id: &str, agent: &str) -> NewInstance {
    NewInstance {
        name: InstanceName {
            workspace: ws.into(),
            project: project.into(),
            instance: id.into(),
        },
        display_name: String::new(),
        agent: AgentName {
            workspace: ws.into(),
            agent: agent.into(),
        },
        agent_revision: None,
        config: json!({}),
        heartbeat_ttl_ms: 1000,
        labels: Default::default(),
    }
}

conformance!(
    agent_revisions_and_audit_log_are_append_only,
    |store, db| {
        workspace(&store, "acme", Quotas::default()).await;
        agent(&store, "acme", "echo").await;
        for sql in [
            "UPDATE agent_revisions SET spec = '{}'",
            "DELETE FROM agent_revisions",
            "UPDATE audit_log SET outcome = 'FORGED'",
            "DELETE FROM audit_log",
        ] {
            assert!(db.execute(sql).await.is_err(), "{sql} was allowed");
        }
        assert_eq!(db.count("agent_revisions").await, 1);
        assert_eq!(db.count("audit_log").await, 2);
    }
);

conformance!(only_committed_mutations_are_audited, |store, db| {
    workspace(&store, "acme", Quotas::default()).await;
    let m = mutation(
        "acme",
        "CreateProject",
        "workspaces/acme/projects/web",
        "",
        b"",
    );
    store
        .create_project(&m, new_project("acme", "web"))
        .await
        .unwrap();
    let duplicate = store
        .create_project(&m, new_project("acme", "web"))
        .await
        .unwrap_err();
    assert!(
        matches!(duplicate, Error::AlreadyExists { .. }),
        "{duplicate:?}"
    );
    let missing = store
        .create_project(&m, new_project("nobody", "web"))
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");
    assert_eq!(
        db.count("audit_log").await,
        2,
        "the workspace and one project"
    );
});

conformance!(
    a_request_id_replays_the_first_result_and_refuses_another_request,
    |store, db| {
        workspace(&store, "acme", Quotas::default()).await;
        let m = mutation(
            "acme",
            "CreateProject",
            "workspaces/acme/projects/web",
            "req-1",
            b"hash-a",
        );
        let first = store
            .create_project(&m, new_project("acme", "web"))
            .await
            .unwrap();
        let again = store
            .create_project(&m, new_project("acme", "web"))
            .await
            .unwrap();
        assert_eq!(first, again);
        let other = mutation(
            "acme",
            "CreateProject",
            "workspaces/acme/projects/api",
            "req-1",
            b"hash-b",
        );
        let err = store
            .create_project(&other, new_project("acme", "api"))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "REQUEST_ID_REUSED");
        assert_eq!(db.count("projects").await, 1);
    }
);

conformance!(
    concurrent_retries_with_one_request_id_create_once,
    |store, db| {
        workspace(&store, "acme", Quotas::default()).await;
        let calls = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let m = mutation(
                    "acme",
                    "CreateProject",
                    "workspaces/acme/projects/web",
                    "same",
                    b"same-hash",
                );
                store.create_project(&m, new_project("acme", "web")).await
            })
        });
        let results: Vec<_> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let first = results[0].as_ref().expect("every retry succeeds").clone();
        for result in &results {
            assert_eq!(result.as_ref().expect("every retry succeeds"), &first);
        }
        assert_eq!(db.count("projects").await, 1);
    }
);

conformance!(
    the_project_quota_holds_under_concurrent_creates,
    |store, db| {
        workspace(
            &store,
            "acme",
            Quotas {
                max_projects: 3,
                ..Quotas::default()
            },
        )
        .await;
        let calls = (0..12).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("p{i}");
                let m = mutation("acme", "CreateProject", &id, "", b"");
                store.create_project(&m, new_project("acme", &id)).await
            })
        });
        let results: Vec<_> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let created = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(Error::QuotaExceeded { .. })))
            .count();
        assert_eq!((created, refused), (3, 9), "{results:?}");
        assert_eq!(db.count("projects").await, 3);
    }
);

conformance!(
    concurrent_agent_updates_append_gapless_revisions,
    |store, db| {
        workspace(&store, "acme", Quotas::default()).await;
        agent(&store, "acme", "echo").await;
        let calls = (0..10).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = AgentName {
                    workspace: "acme".into(),
                    agent: "echo".into(),
                };
                let patch = AgentPatch {
                    description: Some(format!("edit {i}")),
                    ..AgentPatch::default()
                };
                store
                    .update_agent(
                        &mutation("acme", "UpdateAgent", "echo", "", b""),
                        &name,
                        patch,
                    )
                    .await
            })
        });
        for result in futures::future::join_all(calls).await {
            result.unwrap().expect("every update appends a revision");
        }
        let name = AgentName {
            workspace: "acme".into(),
            agent: "echo".into(),
        };
        let page = store
            .list_agent_revisions(
                &name,
                &PageRequest {
                    size: 100,
                    after: None,
                },
            )
            .await
            .unwrap();
        let revisions: Vec<i64> = page.items.iter().map(|a| a.revision).collect();
        assert_eq!(revisions, (1..=11).rev().collect::<Vec<_>>());
        assert_eq!(db.count("agent_revisions").await, 11);
    }
);

conformance!(keyset_pages_return_every_row_exactly_once, |store, _db| {
    workspace(&store, "acme", Quotas::default()).await;
    for i in 0..7 {
        let id = format!("p{i}");
        store
            .create_project(
                &mutation("acme", "CreateProject", &id, "", b""),
                new_project("acme", &id),
            )
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_projects(
                "acme",
                &PageRequest {
                    size: 3,
                    after: after.clone(),
                },
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|p| p.id.clone()));
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("p{i}")).collect::<Vec<_>>());
});

conformance!(
    a_lapsed_heartbeat_goes_offline_and_a_heartbeat_restores_the_status,
    |store, _db| {
        workspace(&store, "acme", Quotas::default()).await;
        store
            .create_project(
                &mutation("acme", "CreateProject", "web", "", b""),
                new_project("acme", "web"),
            )
            .await
            .unwrap();
        agent(&store, "acme", "echo").await;
        let m = mutation("acme", "CreateInstance", "i", "", b"");
        store
            .create_instance(&m, new_instance("acme", "web", "watched", "echo"))
            .await
            .unwrap();
        store
            .create_instance(&m, new_instance("acme", "web", "silent", "echo"))
            .await
            .unwrap();
        let watched = InstanceName {
            workspace: "acme".into(),
            project: "web".into(),
            instance: "watched".into(),
        };
        let silent = InstanceName {
            workspace: "acme".into(),
            project: "web".into(),
            instance: "silent".into(),
        };
        for to in [InstanceStatus::Initializing, InstanceStatus::Active] {
            store
                .set_instance_status(
                    &mutation("acme", "SetInstanceStatus", "i", "", b""),
                    &watched,
                    StatusChange {
                        to,
                        message: String::new(),
                        etag: None,
                    },
                )
                .await
                .unwrap();
        }
        let beat = store.heartbeat_instance(&watched).await.unwrap();
        let lapse = beat.last_heartbeat_time.unwrap() + 1_001_000;
        assert_eq!(
            store.reap_instances(lapse - 2_000).await.unwrap(),
            0,
            "not lapsed yet"
        );
        assert_eq!(
            store.reap_instances(lapse).await.unwrap(),
            1,
            "only the instance that ever heartbeated"
        );
        assert_eq!(
            store.get_instance(&watched).await.unwrap().status,
            InstanceStatus::Offline
        );
        assert_eq!(
            store.get_instance(&silent).await.unwrap().status,
            InstanceStatus::Idle
        );
        assert_eq!(
            store.reap_instances(lapse + 10_000_000).await.unwrap(),
            0,
            "offline instances are not reaped twice"
        );
        let back = store.heartbeat_instance(&watched).await.unwrap();
        assert_eq!(back.status, InstanceStatus::Active);
    }
);

conformance!(
    the_reaper_never_revives_or_touches_terminated_instances,
    |store, _db| {
        workspace(&store, "acme", Quotas::default()).await;
        store
            .create_project(
                &mutation("acme", "CreateProject", "web", "", b""),
                new_project("acme", "web"),
            )
            .await
            .unwrap();
        agent(&store, "acme", "echo").await;
        store
            .create_instance(
                &mutation("acme", "CreateInstance", "i", "", b""),
                new_instance("acme", "web", "gone", "echo"),
            )
            .await
            .unwrap();
        let name = InstanceName {
            workspace: "acme".into(),
            project: "web".into(),
            instance: "gone".into(),
        };
        store.heartbeat_instance(&name).await.unwrap();
        let deleted = store
            .delete_instance(
                &mutation("acme", "DeleteInstance", "i", "", b""),
                &name,
                None,
            )
            .await
            .unwrap();
        assert_eq!(deleted.status, InstanceStatus::Terminated);
        assert_eq!(store.reap_instances(i64::MAX / 2).await.unwrap(), 0);
        let err = store.heartbeat_instance(&name).await.unwrap_err();
        assert_eq!(err.reason(), "INSTANCE_TERMINATED");
    }
);

conformance!(
    deleting_a_workspace_keeps_history_and_revokes_everything_else,
    |store, db| {
        workspace(&store, "acme", Quotas::default()).await;
        store
            .create_project(
                &mutation("acme", "CreateProject", "web", "req-p", b"h"),
                new_project("acme", "web"),
            )
            .await
            .unwrap();
        agent(&store, "acme", "echo").await;
        let key = store
            .create_api_key(
                &mutation("acme", "CreateApiKey", "k", "", b""),
                NewApiKey {
                    workspace: "acme".into(),
                    display_name: String::new(),
                    role: agentry_core::model::Role::Admin,
                    expire_time: None,
                },
            )
            .await
            .unwrap();
        let refused = store
            .delete_workspace(
                &mutation("acme", "DeleteWorkspace", "acme", "", b""),
                "acme",
                &DeleteGuard::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.reason(), "HAS_CHILDREN");
        store
            .delete_workspace(
                &mutation("acme", "DeleteWorkspace", "acme", "", b""),
                "acme",
                &DeleteGuard {
                    force: true,
                    etag: None,
                },
            )
            .await
            .unwrap();
        assert!(
            store
                .find_api_key("acme", &key.key.id)
                .await
                .unwrap()
                .is_none()
        );
        let project = ProjectName {
            workspace: "acme".into(),
            project: "web".into(),
        };
        assert!(matches!(
            store.get_project(&project).await,
            Err(Error::NotFound { .. })
        ));
        assert_eq!(
            db.count("agent_revisions").await,
            1,
            "revisions outlive the workspace"
        );
        assert_eq!(
            db.count("idempotency_keys").await,
            0,
            "old results are never replayed for a new workspace"
        );
        let tables: BTreeSet<&str> = ["projects", "agents", "api_keys", "instances"].into();
        for table in tables {
            assert_eq!(db.count(table).await, 0, "{table} rows remain");
        }
    }
);

// After the macro and helpers above, which it uses.
mod contexts;
mod execution;
mod group;
mod rollups;
mod stats;
mod timers;
