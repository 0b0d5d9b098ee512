//! Authentication (missing, unknown, revoked and expired keys) and tenant isolation:
//! another workspace's names are refused before anything is looked up, so the answer is
//! the same whether or not the resource exists.

use std::time::{Duration, SystemTime};

use agentry_e2e::*;
use pb::Role;
use tonic::{Code, Response, Status};

backend_tests!(missing_key_is_unauthenticated, |app| async move {
    let acme = app.tenant("acme").await;
    let mut anonymous = app.registry("").await;
    let result = anonymous
        .get_workspace(req::get_workspace(&acme.name))
        .await;
    assert_status(result, Code::Unauthenticated, "MISSING_CREDENTIALS");
    let result = anonymous.list_workspaces(req::list_workspaces()).await;
    assert_status(result, Code::Unauthenticated, "MISSING_CREDENTIALS");
});

backend_tests!(unknown_keys_are_unauthenticated, |app| async move {
    let acme = app.tenant("acme").await;
    let key_id = uuid::Uuid::now_v7().simple();
    let well_shaped = format!("agk_acme_{key_id}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let mut altered = acme.admin_key.clone();
    let last = altered.pop().expect("non-empty key");
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let wrong_root = format!("{}x", app.root_key);
    for key in ["nonsense", &well_shaped, &altered, &wrong_root] {
        let mut client = app.registry(key).await;
        let result = client.get_workspace(req::get_workspace(&acme.name)).await;
        assert_status(result, Code::Unauthenticated, "INVALID_API_KEY");
    }
});

backend_tests!(
    key_without_the_bearer_scheme_is_unauthenticated,
    |app| async move {
        let acme = app.tenant("acme").await;
        let basic = format!("Basic {}", acme.admin_key);
        for header in [acme.admin_key.as_str(), basic.as_str(), "Bearer", "Bearer "] {
            let mut client = app.registry_with_header(header).await;
            let result = client.get_workspace(req::get_workspace(&acme.name)).await;
            assert_eq!(
                result.expect_err(header).code(),
                Code::Unauthenticated,
                "authorization: {header:?}"
            );
        }
    }
);

backend_tests!(revoked_key_is_unauthenticated, |app| async move {
    let acme = app.tenant("acme").await;
    let mut reader = app.registry(&acme.key(Role::Reader).await).await;
    reader
        .get_workspace(req::get_workspace(&acme.name))
        .await
        .expect("a fresh key works");

    let mut admin = acme.admin.clone();
    let keys = admin
        .list_api_keys(req::list_api_keys(&acme.name))
        .await
        .must()
        .api_keys;
    let reader_key = keys
        .iter()
        .find(|k| k.role == Role::Reader as i32)
        .expect("the reader key is listed");
    admin
        .delete_api_key(req::delete_api_key(&reader_key.name))
        .await
        .must();

    let result = reader.get_workspace(req::get_workspace(&acme.name)).await;
    assert_status(result, Code::Unauthenticated, "API_KEY_REVOKED");
    let keys = admin
        .list_api_keys(req::list_api_keys(&acme.name))
        .await
        .must()
        .api_keys;
    assert!(
        keys.iter().all(|k| k.name != reader_key.name),
        "a revoked key is no longer listed"
    );
});

backend_tests!(expired_key_is_unauthenticated, |app| async move {
    let acme = app.tenant("acme").await;
    let mut request = req::create_api_key(&acme.name, Role::Reader as i32);
    let expire_time = SystemTime::now() + Duration::from_millis(1000);
    request.api_key.as_mut().unwrap().expire_time = Some(expire_time.into());
    let created = acme.admin.clone().create_api_key(request).await.must();
    assert!(
        created.api_key.unwrap().expire_time.is_some(),
        "expire_time is echoed"
    );

    let mut client = app.registry(&created.secret).await;
    client
        .get_workspace(req::get_workspace(&acme.name))
        .await
        .expect("works before expire_time");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let result = client.get_workspace(req::get_workspace(&acme.name)).await;
    assert_status(result, Code::Unauthenticated, "API_KEY_EXPIRED");
});

backend_tests!(
    key_expiring_in_the_past_is_invalid_argument,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut request = req::create_api_key(&acme.name, Role::Reader as i32);
        let expire_time = SystemTime::now() - Duration::from_secs(60);
        request.api_key.as_mut().unwrap().expire_time = Some(expire_time.into());
        let result = acme.admin.clone().create_api_key(request).await;
        assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
);

backend_tests!(
    keys_of_another_workspace_are_listed_nowhere,
    |app| async move {
        let acme = app.tenant("acme").await;
        let globex = app.tenant("globex").await;
        globex.key(Role::Reader).await;
        let keys = acme
            .admin
            .clone()
            .list_api_keys(req::list_api_keys(&acme.name))
            .await
            .must()
            .api_keys;
        assert_eq!(keys.len(), 1, "only acme's admin key: {keys:?}");
        assert!(keys[0].name.starts_with("workspaces/acme/apiKeys/"));
        assert_eq!(keys[0].role, Role::Admin as i32);
    }
);

/// Every workspace-scoped method of the registry, called on names inside `ws`.
async fn call_everything_in(client: &mut Registry, ws: &str) -> Vec<(&'static str, Status)> {
    fn failed<T: std::fmt::Debug>(
        method: &'static str,
        result: Result<Response<T>, Status>,
    ) -> (&'static str, Status) {
        (method, result.expect_err(method))
    }
    let ws = format!("workspaces/{ws}");
    let project = format!("{ws}/projects/web");
    let agent = format!("{ws}/agents/helper");
    let instance = format!("{project}/instances/bot");
    let key = format!("{ws}/apiKeys/0190c5a4-6e3e-7b7a-9c1e-2f4d5e6a7b8c");
    let c = client;
    let workspace = pb::Workspace {
        name: ws.clone(),
        display_name: "x".into(),
        ..Default::default()
    };
    let project_update = pb::Project {
        name: project.clone(),
        display_name: "x".into(),
        ..Default::default()
    };
    let agent_update = pb::Agent {
        name: agent.clone(),
        description: "x".into(),
        ..Default::default()
    };
    let new_instance = pb::Instance {
        agent: agent.clone(),
        ..Default::default()
    };
    let instance_update = pb::Instance {
        name: instance.clone(),
        display_name: "x".into(),
        ..Default::default()
    };
    vec![
        failed(
            "GetWorkspace",
            c.get_workspace(req::get_workspace(&ws)).await,
        ),
        failed(
            "UpdateWorkspace",
            c.update_workspace(req::update_workspace(workspace, &["display_name"]))
                .await,
        ),
        failed(
            "CreateProject",
            c.create_project(req::create_project(&ws, "new")).await,
        ),
        failed(
            "GetProject",
            c.get_project(req::get_project(&project)).await,
        ),
        failed(
            "ListProjects",
            c.list_projects(req::list_projects(&ws)).await,
        ),
        failed(
            "UpdateProject",
            c.update_project(req::update_project(project_update, &["display_name"]))
                .await,
        ),
        failed(
            "DeleteProject",
            c.delete_project(req::delete_project(&project).force())
                .await,
        ),
        failed(
            "CreateApiKey",
            c.create_api_key(req::create_api_key(&ws, Role::Reader as i32))
                .await,
        ),
        failed(
            "ListApiKeys",
            c.list_api_keys(req::list_api_keys(&ws)).await,
        ),
        failed(
            "DeleteApiKey",
            c.delete_api_key(req::delete_api_key(&key)).await,
        ),
        failed(
            "CreateAgent",
            c.create_agent(req::create_agent(&ws, "new", simple_agent()))
                .await,
        ),
        failed("GetAgent", c.get_agent(req::get_agent(&agent, 0)).await),
        failed("ListAgents", c.list_agents(req::list_agents(&ws)).await),
        failed(
            "UpdateAgent",
            c.update_agent(req::update_agent(agent_update, &["description"]))
                .await,
        ),
        failed(
            "ListAgentRevisions",
            c.list_agent_revisions(req::list_agent_revisions(&agent))
                .await,
        ),
        failed(
            "CreateInstance",
            c.create_instance(req::create_instance(&project, "new", new_instance))
                .await,
        ),
        failed(
            "GetInstance",
            c.get_instance(req::get_instance(&instance)).await,
        ),
        failed(
            "ListInstances",
            c.list_instances(req::list_instances(&project)).await,
        ),
        failed(
            "UpdateInstance",
            c.update_instance(req::update_instance(instance_update, &["display_name"]))
                .await,
        ),
        failed(
            "SetInstanceStatus",
            c.set_instance_status(req::set_status(&instance, pb::InstanceStatus::Error))
                .await,
        ),
        failed(
            "HeartbeatInstance",
            c.heartbeat_instance(req::heartbeat(&instance)).await,
        ),
        failed(
            "DeleteInstance",
            c.delete_instance(req::delete_instance(&instance)).await,
        ),
        failed(
            "DeleteAgent",
            c.delete_agent(req::delete_agent(&agent).force()).await,
        ),
    ]
}

backend_tests!(
    another_workspace_is_refused_whether_or_not_it_exists,
    |app| async move {
        let acme = app.tenant("acme").await;
        let globex = app.tenant("globex").await;
        globex.instance_with_agent("web", "helper", "bot").await;

        for intruder_key in [acme.admin_key.clone(), acme.key(Role::Reader).await] {
            let mut intruder = app.registry(&intruder_key).await;
            let existing = call_everything_in(&mut intruder, "globex").await;
            let missing = call_everything_in(&mut intruder, "ghost").await;
            for ((method, on_existing), (_, on_missing)) in existing.into_iter().zip(missing) {
                let on_existing = assert_status(
                    Err::<(), _>(on_existing),
                    Code::PermissionDenied,
                    "WORKSPACE_MISMATCH",
                );
                let on_missing = assert_status(
                    Err::<(), _>(on_missing),
                    Code::PermissionDenied,
                    "WORKSPACE_MISMATCH",
                );
                assert_eq!(
                    on_existing.message().replace("globex", "X"),
                    on_missing.message().replace("ghost", "X"),
                    "{method}: the answer must not reveal whether the other workspace's resource exists"
                );
            }
        }

        // globex is untouched.
        let mut owner = globex.admin.clone();
        let bot = owner
            .get_instance(req::get_instance(&globex.instance_name("web", "bot")))
            .await
            .must();
        assert_eq!(bot.status, pb::InstanceStatus::Idle as i32);
        assert_eq!(
            owner
                .list_projects(req::list_projects(&globex.name))
                .await
                .must()
                .projects
                .len(),
            1
        );
        assert_eq!(
            owner
                .list_agents(req::list_agents(&globex.name))
                .await
                .must()
                .agents[0]
                .revision,
            1
        );
        assert_eq!(
            owner
                .get_workspace(req::get_workspace(&globex.name))
                .await
                .must(),
            globex.workspace
        );
    }
);

backend_tests!(
    instance_cannot_use_an_agent_of_another_workspace,
    |app| async move {
        let acme = app.tenant("acme").await;
        let globex = app.tenant("globex").await;
        acme.project("web").await;
        let foreign = globex.agent("helper", simple_agent()).await;
        let instance = pb::Instance {
            agent: foreign.name,
            ..Default::default()
        };
        let request = req::create_instance(&acme.project_name("web"), "bot", instance);
        let status = acme
            .admin
            .clone()
            .create_instance(request)
            .await
            .expect_err("a foreign agent is refused");
        assert!(
            matches!(
                status.code(),
                Code::PermissionDenied | Code::InvalidArgument
            ),
            "unexpected: {status:?}"
        );
        let get = acme
            .admin
            .clone()
            .get_instance(req::get_instance(&acme.instance_name("web", "bot")))
            .await;
        assert_status(get, Code::NotFound, "RESOURCE_NOT_FOUND");
    }
);

backend_tests!(root_reaches_every_workspace, |app| async move {
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let mut root = app.root().await;
    for tenant in [&acme, &globex] {
        root.get_workspace(req::get_workspace(&tenant.name))
            .await
            .expect("root reads");
        root.create_project(req::create_project(&tenant.name, "ops"))
            .await
            .expect("root writes");
        root.list_api_keys(req::list_api_keys(&tenant.name))
            .await
            .expect("root lists keys");
    }
    let listed = root.list_workspaces(req::list_workspaces()).await.must();
    let names: Vec<_> = listed.workspaces.into_iter().map(|w| w.name).collect();
    assert_eq!(names, ["workspaces/acme", "workspaces/globex"]);
});
