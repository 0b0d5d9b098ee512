//! The role matrix: what ADMIN, DEVELOPER, READER and WORKER keys may do inside their own
//! workspace, and that only ROOT manages workspaces and quotas.

use agentry_e2e::*;
use pb::{InstanceStatus as S, Role};
use tonic::{Code, Response, Status};

type Outcome = (&'static str, Result<(), Status>);

fn outcome<T>(method: &'static str, result: Result<Response<T>, Status>) -> Outcome {
    (method, result.map(|_| ()))
}

/// Workspace `acme` with project `web`, agent `helper` and its instance `bot`.
async fn setup(app: &TestApp) -> Tenant {
    let acme = app.tenant("acme").await;
    acme.instance_with_agent("web", "helper", "bot").await;
    acme
}

/// Every read a workspace key may make; all must succeed for every role.
async fn reads_succeed(c: &mut Registry, acme: &Tenant) {
    let (project, agent) = (acme.project_name("web"), acme.agent_name("helper"));
    c.get_workspace(req::get_workspace(&acme.name))
        .await
        .expect("GetWorkspace");
    c.get_project(req::get_project(&project))
        .await
        .expect("GetProject");
    c.list_projects(req::list_projects(&acme.name))
        .await
        .expect("ListProjects");
    c.get_agent(req::get_agent(&agent, 0))
        .await
        .expect("GetAgent");
    c.get_agent(req::get_agent(&agent, 1))
        .await
        .expect("GetAgent(revision)");
    c.list_agents(req::list_agents(&acme.name))
        .await
        .expect("ListAgents");
    c.list_agent_revisions(req::list_agent_revisions(&agent))
        .await
        .expect("ListAgentRevisions");
    c.get_instance(req::get_instance(&acme.instance_name("web", "bot")))
        .await
        .expect("GetInstance");
    c.list_instances(req::list_instances(&project))
        .await
        .expect("ListInstances");
}

/// One call per write a workspace key could attempt, on the names of [`setup`], ordered
/// so that a role allowed everything gets through all of them.
async fn attempt_writes(c: &mut Registry, acme: &Tenant) -> Vec<Outcome> {
    let ws = acme.name.clone();
    let project = acme.project_name("web");
    let agent = acme.agent_name("helper");
    let instance = acme.instance_name("web", "bot");
    let key = format!("{ws}/apiKeys/0190c5a4-6e3e-7b7a-9c1e-2f4d5e6a7b8c");
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
        outcome(
            "UpdateWorkspace",
            c.update_workspace(req::update_workspace(workspace, &["display_name"]))
                .await,
        ),
        outcome(
            "CreateProject",
            c.create_project(req::create_project(&ws, "new")).await,
        ),
        outcome(
            "UpdateProject",
            c.update_project(req::update_project(project_update, &["display_name"]))
                .await,
        ),
        outcome(
            "CreateApiKey",
            c.create_api_key(req::create_api_key(&ws, Role::Reader as i32))
                .await,
        ),
        outcome(
            "ListApiKeys",
            c.list_api_keys(req::list_api_keys(&ws)).await,
        ),
        outcome(
            "DeleteApiKey",
            c.delete_api_key(req::delete_api_key(&key)).await,
        ),
        outcome(
            "CreateAgent",
            c.create_agent(req::create_agent(&ws, "new", simple_agent()))
                .await,
        ),
        outcome(
            "UpdateAgent",
            c.update_agent(req::update_agent(agent_update, &["description"]))
                .await,
        ),
        outcome(
            "CreateInstance",
            c.create_instance(req::create_instance(&project, "new", new_instance))
                .await,
        ),
        outcome(
            "UpdateInstance",
            c.update_instance(req::update_instance(instance_update, &["display_name"]))
                .await,
        ),
        outcome(
            "SetInstanceStatus",
            c.set_instance_status(req::set_status(&instance, S::Initializing))
                .await,
        ),
        outcome(
            "HeartbeatInstance",
            c.heartbeat_instance(req::heartbeat(&instance)).await,
        ),
        outcome(
            "DeleteInstance",
            c.delete_instance(req::delete_instance(&instance)).await,
        ),
        outcome(
            "DeleteAgent",
            c.delete_agent(req::delete_agent(&agent).force()).await,
        ),
        outcome(
            "DeleteProject",
            c.delete_project(req::delete_project(&project).force())
                .await,
        ),
    ]
}

/// `denied` methods failed with ROLE_NOT_ALLOWED; `allowed` ones succeeded (DeleteApiKey
/// of a key that does not exist may be NOT_FOUND).
#[track_caller]
fn assert_matrix(role: Role, outcomes: Vec<Outcome>, denied: &[&str], allowed: &[&str]) {
    for (method, result) in outcomes {
        if denied.contains(&method) {
            assert_status(result, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
        } else if allowed.contains(&method) {
            match result {
                Err(status) if method == "DeleteApiKey" && status.code() == Code::NotFound => {}
                other => assert!(
                    other.is_ok(),
                    "{} must be allowed {method}: {other:?}",
                    role.as_str_name()
                ),
            }
        }
    }
}

const KEY_METHODS: [&str; 3] = ["CreateApiKey", "ListApiKeys", "DeleteApiKey"];
const PROJECT_WRITES: [&str; 3] = ["CreateProject", "UpdateProject", "DeleteProject"];
const AGENT_AND_INSTANCE_WRITES: [&str; 8] = [
    "CreateAgent",
    "UpdateAgent",
    "DeleteAgent",
    "CreateInstance",
    "UpdateInstance",
    "DeleteInstance",
    "SetInstanceStatus",
    "HeartbeatInstance",
];

backend_tests!(reader_cannot_write, |app| async move {
    let acme = setup(&app).await;
    let mut reader = app.registry(&acme.key(Role::Reader).await).await;
    reads_succeed(&mut reader, &acme).await;
    let outcomes = attempt_writes(&mut reader, &acme).await;
    let all: Vec<&str> = outcomes.iter().map(|(m, _)| *m).collect();
    assert_matrix(Role::Reader, outcomes, &all, &[]);

    let bot = reader
        .get_instance(req::get_instance(&acme.instance_name("web", "bot")))
        .await
        .must();
    assert_eq!(bot.status, S::Idle as i32, "nothing changed");
    assert!(
        bot.last_heartbeat_time.is_none(),
        "a reader's heartbeat is not recorded"
    );
    let agents = reader
        .list_agents(req::list_agents(&acme.name))
        .await
        .must()
        .agents;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].revision, 1);
});

backend_tests!(
    worker_reads_and_heartbeats_but_manages_nothing,
    |app| async move {
        let acme = setup(&app).await;
        let mut worker = app.registry(&acme.key(Role::Worker).await).await;
        reads_succeed(&mut worker, &acme).await;
        let outcomes = attempt_writes(&mut worker, &acme).await;
        let mut denied = vec!["UpdateWorkspace"];
        denied.extend(KEY_METHODS.iter().chain(&PROJECT_WRITES));
        denied.extend([
            "CreateAgent",
            "UpdateAgent",
            "DeleteAgent",
            "CreateInstance",
            "UpdateInstance",
            "DeleteInstance",
            "SetInstanceStatus",
        ]);
        assert_matrix(Role::Worker, outcomes, &denied, &["HeartbeatInstance"]);
        let bot = worker
            .get_instance(req::get_instance(&acme.instance_name("web", "bot")))
            .await
            .must();
        assert!(
            bot.last_heartbeat_time.is_some(),
            "the worker's heartbeat was recorded"
        );
    }
);

backend_tests!(
    developer_manages_agents_and_instances_not_projects_or_keys,
    |app| async move {
        let acme = setup(&app).await;
        let mut developer = app.registry(&acme.key(Role::Developer).await).await;
        reads_succeed(&mut developer, &acme).await;
        let outcomes = attempt_writes(&mut developer, &acme).await;
        let mut denied = vec!["UpdateWorkspace"];
        denied.extend(KEY_METHODS.iter().chain(&PROJECT_WRITES));
        assert_matrix(
            Role::Developer,
            outcomes,
            &denied,
            &AGENT_AND_INSTANCE_WRITES,
        );
    }
);

backend_tests!(admin_may_do_everything_in_its_workspace, |app| async move {
    let acme = setup(&app).await;
    let mut admin = acme.admin.clone();
    reads_succeed(&mut admin, &acme).await;
    let outcomes = attempt_writes(&mut admin, &acme).await;
    let all: Vec<&str> = outcomes.iter().map(|(m, _)| *m).collect();
    assert_matrix(Role::Admin, outcomes, &[], &all);
});

backend_tests!(only_root_manages_workspaces, |app| async move {
    let acme = app.tenant("acme").await;
    for role in [Role::Admin, Role::Developer, Role::Reader, Role::Worker] {
        let mut client = app.registry(&acme.key(role).await).await;
        let create = req::create_workspace("other", pb::Workspace::default());
        assert_status(
            client.create_workspace(create).await,
            Code::PermissionDenied,
            "ROLE_NOT_ALLOWED",
        );
        let list = client.list_workspaces(req::list_workspaces()).await;
        assert_status(list, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
        let delete = client
            .delete_workspace(req::delete_workspace(&acme.name).force())
            .await;
        assert_status(delete, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    }
    let listed = app
        .root()
        .await
        .list_workspaces(req::list_workspaces())
        .await
        .must();
    assert_eq!(
        listed.workspaces.len(),
        1,
        "no workspace was created or deleted by a non-root key"
    );
});

backend_tests!(
    admin_edits_its_workspace_but_not_its_quotas,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        let renamed = pb::Workspace {
            name: acme.name.clone(),
            display_name: "Acme Inc".into(),
            ..Default::default()
        };
        let renamed = admin
            .update_workspace(req::update_workspace(renamed, &["display_name"]))
            .await
            .must();
        assert_eq!(renamed.display_name, "Acme Inc");

        let quotas = Some(pb::Quotas {
            max_projects: 1000,
            ..renamed.quotas.unwrap()
        });
        for paths in [&["quotas"][..], &["quotas.max_projects"], &[]] {
            let workspace = pb::Workspace {
                quotas,
                ..renamed.clone()
            };
            let result = admin
                .update_workspace(req::update_workspace(workspace, paths))
                .await;
            assert_status(result, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
        }
        let now = admin
            .get_workspace(req::get_workspace(&acme.name))
            .await
            .must();
        assert_eq!(now.quotas.unwrap().max_projects, 100, "quotas unchanged");
    }
);

backend_tests!(api_keys_cannot_have_root_or_no_role, |app| async move {
    let acme = app.tenant("acme").await;
    let mut root = app.root().await;
    for role in [Role::Root, Role::Unspecified] {
        let result = root
            .create_api_key(req::create_api_key(&acme.name, role as i32))
            .await;
        assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    let keys = root
        .list_api_keys(req::list_api_keys(&acme.name))
        .await
        .must()
        .api_keys;
    assert_eq!(keys.len(), 1, "only the admin key exists");
});
