//! `request_id`: a retried write returns its first result and changes nothing; the same
//! id with a different request is INVALID_ARGUMENT `REQUEST_ID_REUSED`.

use agentry_e2e::*;
use pb::InstanceStatus as S;
use tonic::Code;

fn create_project(
    acme: &Tenant,
    id: &str,
    description: &str,
    request_id: &str,
) -> pb::CreateProjectRequest {
    let project = pb::Project {
        description: description.into(),
        ..Default::default()
    };
    req::create_project_with(&acme.name, id, project).request_id(request_id)
}

async fn project_count(acme: &Tenant) -> usize {
    acme.admin
        .clone()
        .list_projects(req::list_projects(&acme.name))
        .await
        .must()
        .projects
        .len()
}

backend_tests!(retried_create_returns_the_first_result, |app| async move {
    let acme = app.tenant("acme").await;
    let mut admin = acme.admin.clone();
    let first = admin
        .create_project(create_project(&acme, "web", "site", "req-1"))
        .await
        .must();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let retry = admin
        .create_project(create_project(&acme, "web", "site", "req-1"))
        .await;
    assert_eq!(
        retry
            .expect("a retry succeeds instead of ALREADY_EXISTS")
            .into_inner(),
        first
    );
    assert_eq!(project_count(&acme).await, 1);

    // Without a request_id the same request is a new create, which collides.
    let fresh = admin
        .create_project(create_project(&acme, "web", "site", ""))
        .await;
    assert_status(fresh, Code::AlreadyExists, "RESOURCE_ALREADY_EXISTS");
});

backend_tests!(
    retried_create_after_a_later_update_still_returns_the_first_result,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        let first = admin
            .create_project(create_project(&acme, "web", "site", "req-1"))
            .await
            .must();
        let change = pb::Project {
            description: "changed".into(),
            ..first.clone()
        };
        admin
            .update_project(req::update_project(change, &["description"]))
            .await
            .must();
        let retry = admin
            .create_project(create_project(&acme, "web", "site", "req-1"))
            .await
            .must();
        assert_eq!(retry, first);
        let now = admin
            .get_project(req::get_project(&first.name))
            .await
            .must();
        assert_eq!(now.description, "changed", "the replay did not write");
    }
);

backend_tests!(
    reused_request_id_with_a_different_request_is_rejected,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        admin
            .create_project(create_project(&acme, "web", "site", "req-1"))
            .await
            .must();
        let different_body = admin
            .create_project(create_project(&acme, "web", "other", "req-1"))
            .await;
        assert_status(different_body, Code::InvalidArgument, "REQUEST_ID_REUSED");
        let different_id = admin
            .create_project(create_project(&acme, "api", "site", "req-1"))
            .await;
        assert_status(different_id, Code::InvalidArgument, "REQUEST_ID_REUSED");
        let different_method =
            req::create_agent(&acme.name, "web", simple_agent()).request_id("req-1");
        assert_status(
            admin.create_agent(different_method).await,
            Code::InvalidArgument,
            "REQUEST_ID_REUSED",
        );

        assert_eq!(project_count(&acme).await, 1);
        assert_eq!(
            admin
                .get_project(req::get_project(&acme.project_name("web")))
                .await
                .must()
                .description,
            "site"
        );
        let agent = admin
            .get_agent(req::get_agent(&acme.agent_name("web"), 0))
            .await;
        assert_status(agent, Code::NotFound, "RESOURCE_NOT_FOUND");
    }
);

backend_tests!(request_ids_are_scoped_to_the_workspace, |app| async move {
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let a = acme
        .admin
        .clone()
        .create_project(create_project(&acme, "web", "site", "shared"))
        .await
        .must();
    let b = globex
        .admin
        .clone()
        .create_project(create_project(&globex, "web", "site", "shared"))
        .await;
    let b = b
        .expect("another tenant's request_id does not collide")
        .into_inner();
    assert_eq!(a.name, "workspaces/acme/projects/web");
    assert_eq!(b.name, "workspaces/globex/projects/web");
    let c = globex
        .admin
        .clone()
        .create_project(create_project(&globex, "api", "site", "shared"))
        .await;
    assert_status(c, Code::InvalidArgument, "REQUEST_ID_REUSED");
});

backend_tests!(
    replayed_create_api_key_returns_no_secret,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        let request = req::create_api_key(&acme.name, pb::Role::Reader as i32).request_id("key-1");
        let first = admin.create_api_key(request.clone()).await.must();
        assert!(!first.secret.is_empty());
        let replay = admin
            .create_api_key(request)
            .await
            .expect("replay succeeds")
            .into_inner();
        assert_eq!(replay.api_key, first.api_key);
        assert!(
            replay.secret.is_empty(),
            "the secret is never stored, so never replayed"
        );
        let keys = admin
            .list_api_keys(req::list_api_keys(&acme.name))
            .await
            .must()
            .api_keys;
        assert_eq!(keys.len(), 2, "the admin key and one reader key");
        let mut reader = app.registry(&first.secret).await;
        reader
            .get_workspace(req::get_workspace(&acme.name))
            .await
            .expect("the first secret works");
    }
);

backend_tests!(retried_update_returns_the_first_result, |app| async move {
    let acme = app.tenant("acme").await;
    let project = acme.project("web").await;
    let mut admin = acme.admin.clone();
    let change = pb::Project {
        description: "v2".into(),
        ..project.clone()
    };
    let update = req::update_project(change, &["description"]).request_id("upd-1");
    let first = admin.update_project(update.clone()).await.must();
    // The etag in the replayed request is stale by now; the replay must not trip over it.
    let replay = admin
        .update_project(update)
        .await
        .expect("replay succeeds")
        .into_inner();
    assert_eq!(replay, first, "same etag and update_time");
    assert_eq!(
        admin
            .get_project(req::get_project(&project.name))
            .await
            .must(),
        first,
        "no second update"
    );
});

backend_tests!(retried_delete_succeeds_again, |app| async move {
    let acme = app.tenant("acme").await;
    let project = acme.project("web").await;
    let mut admin = acme.admin.clone();
    let delete = req::delete_project(&project.name).request_id("del-1");
    admin.delete_project(delete.clone()).await.must();
    admin
        .delete_project(delete)
        .await
        .expect("a retried delete is not NOT_FOUND");
    let without_id = admin
        .delete_project(req::delete_project(&project.name))
        .await;
    assert_status(without_id, Code::NotFound, "RESOURCE_NOT_FOUND");
});

backend_tests!(retried_agent_writes_append_one_revision, |app| async move {
    let acme = app.tenant("acme").await;
    let mut admin = acme.admin.clone();
    let create = req::create_agent(&acme.name, "helper", simple_agent()).request_id("agent-1");
    let created = admin.create_agent(create.clone()).await.must();
    assert_eq!(
        admin
            .create_agent(create)
            .await
            .expect("replayed create")
            .into_inner(),
        created
    );
    let change = pb::Agent {
        name: created.name.clone(),
        description: "v2".into(),
        ..Default::default()
    };
    let update = req::update_agent(change, &["description"]).request_id("agent-2");
    let first = admin.update_agent(update.clone()).await.must();
    assert_eq!(
        admin
            .update_agent(update)
            .await
            .expect("replayed update")
            .into_inner(),
        first
    );
    assert_eq!(first.revision, 2);
    let revisions = admin
        .list_agent_revisions(req::list_agent_revisions(&created.name))
        .await
        .must();
    assert_eq!(
        revisions.revisions.len(),
        2,
        "one revision per distinct update"
    );
});

backend_tests!(
    retried_status_change_replays_without_moving_the_instance,
    |app| async move {
        let acme = app.tenant("acme").await;
        let bot = acme.instance_with_agent("web", "helper", "bot").await;
        let mut admin = acme.admin.clone();
        let to = |status, request_id| req::set_status(&bot.name, status).request_id(request_id);
        let initializing = admin
            .set_instance_status(to(S::Initializing, "st-1"))
            .await
            .must();
        admin
            .set_instance_status(to(S::Active, "st-2"))
            .await
            .must();
        let replay = admin.set_instance_status(to(S::Initializing, "st-1")).await;
        assert_eq!(
            replay
                .expect("a replay, not INVALID_TRANSITION")
                .into_inner(),
            initializing
        );
        let now = admin
            .get_instance(req::get_instance(&bot.name))
            .await
            .must();
        assert_eq!(
            now.status,
            S::Active as i32,
            "the replay did not move the instance"
        );
        let reused = admin.set_instance_status(to(S::Busy, "st-1")).await;
        assert_status(reused, Code::InvalidArgument, "REQUEST_ID_REUSED");
    }
);

backend_tests!(
    retried_instance_create_and_delete_replay,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let agent = acme.agent("helper", simple_agent()).await;
        let mut admin = acme.admin.clone();
        let instance = pb::Instance {
            agent: agent.name,
            ..Default::default()
        };
        let create =
            req::create_instance(&acme.project_name("web"), "bot", instance).request_id("inst-1");
        let created = admin.create_instance(create.clone()).await.must();
        assert_eq!(
            admin
                .create_instance(create)
                .await
                .expect("replayed create")
                .into_inner(),
            created
        );
        let delete = req::delete_instance(&created.name).request_id("inst-2");
        let deleted = admin.delete_instance(delete.clone()).await.must();
        assert_eq!(deleted.status, S::Terminated as i32);
        assert_eq!(
            admin
                .delete_instance(delete)
                .await
                .expect("replayed delete")
                .into_inner(),
            deleted
        );
    }
);

backend_tests!(
    retried_create_workspace_returns_the_first_result,
    |app| async move {
        let mut root = app.root().await;
        let workspace = pb::Workspace {
            display_name: "Acme".into(),
            ..Default::default()
        };
        let request = req::create_workspace("acme", workspace).request_id("ws-1");
        let first = root.create_workspace(request.clone()).await.must();
        assert_eq!(
            root.create_workspace(request.clone())
                .await
                .expect("replay")
                .into_inner(),
            first
        );
        let changed = pb::CreateWorkspaceRequest {
            workspace_id: "other".into(),
            ..request
        };
        assert_status(
            root.create_workspace(changed).await,
            Code::InvalidArgument,
            "REQUEST_ID_REUSED",
        );
        assert_eq!(
            root.list_workspaces(req::list_workspaces())
                .await
                .must()
                .workspaces
                .len(),
            1
        );
    }
);

backend_tests!(
    a_failed_write_does_not_burn_its_request_id,
    |app| async move {
        let acme = app
            .tenant_with_quotas(
                "acme",
                pb::Quotas {
                    max_projects: 1,
                    ..Default::default()
                },
            )
            .await;
        let mut admin = acme.admin.clone();
        acme.project("one").await;
        let create = create_project(&acme, "two", "", "req-q");
        assert_quota_exceeded(admin.create_project(create.clone()).await);
        admin
            .delete_project(req::delete_project(&acme.project_name("one")))
            .await
            .must();
        admin
            .create_project(create)
            .await
            .expect("the retry after the quota freed up goes through");
        assert_eq!(project_count(&acme).await, 1);
    }
);

backend_tests!(concurrent_retries_create_once_and_agree, |app| async move {
    let acme = app.tenant("acme").await;
    let calls = (0..8).map(|_| {
        let mut admin = acme.admin.clone();
        let request = create_project(&acme, "web", "site", "race-1");
        async move { admin.create_project(request).await.inner() }
    });
    let results = futures::future::join_all(calls).await;
    let first = results[0].clone().expect("every retry succeeds");
    for result in results {
        assert_eq!(
            result.expect("every retry succeeds"),
            first,
            "all retries return the one result"
        );
    }
    assert_eq!(project_count(&acme).await, 1);
});

backend_tests!(
    a_stored_result_is_a_tagged_record_and_an_untagged_one_still_replays,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        let first = admin
            .create_project(create_project(&acme, "web", "site", "req-tag"))
            .await
            .must();
        let db = app.database();
        let tagged = "idempotency_keys WHERE request_id = 'req-tag' AND response LIKE '{\"v\":1,%'";
        assert_eq!(
            db.count(tagged).await,
            1,
            "the stored result carries its format tag"
        );

        // A row written before the tag existed: the same JSON without it.
        let untag = "UPDATE idempotency_keys SET response = '{' || substr(response, 8) \
                     WHERE request_id = 'req-tag'";
        assert_eq!(db.execute(untag).await.unwrap(), 1);
        assert_eq!(db.count(tagged).await, 0);
        let retry = admin
            .create_project(create_project(&acme, "web", "site", "req-tag"))
            .await
            .must();
        assert_eq!(retry, first);
    }
);
