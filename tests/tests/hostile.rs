//! Bad and hostile input: malformed names and ids, page sizes and forged page tokens,
//! oversized messages, enum values outside the proto. Every case must be refused with
//! INVALID_ARGUMENT (or the transport's own limit), write nothing, and leave the server
//! serving.

use agentry_e2e::*;
use tonic::Code;

fn bad_workspace_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "",
        "workspaces",
        "workspaces/",
        "workspaces/UPPER",
        "projects/x",
        "workspaces/a/",
        "workspaces/a\u{0}b",
        "workspaces/9lives",
        "workspaces/under_score",
        "workspaces/ünïcode",
        "/workspaces/a",
        "workspaces//a",
        "workspaces/a/projects/p",
    ]
    .map(String::from)
    .into();
    names.push(format!("workspaces/{}", "a".repeat(64)));
    names.push(format!("workspaces/{}", "a".repeat(100_000)));
    names
}

backend_tests!(
    malformed_workspace_names_are_invalid_argument,
    |app| async move {
        let mut root = app.root().await;
        for name in bad_workspace_names() {
            let status = assert_invalid(
                root.get_workspace(req::get_workspace(&name)).await,
                "INVALID_ARGUMENT",
                "name",
            );
            assert!(
                status.message().len() < 4096,
                "the error echoes {} bytes of input",
                status.message().len()
            );
            let list = root.list_projects(req::list_projects(&name)).await;
            assert_invalid(list, "INVALID_ARGUMENT", "parent");
            let create = root.create_project(req::create_project(&name, "web")).await;
            assert_invalid(create, "INVALID_ARGUMENT", "parent");
        }
        assert!(
            root.list_workspaces(req::list_workspaces())
                .await
                .must()
                .workspaces
                .is_empty()
        );
    }
);

backend_tests!(
    malformed_child_names_are_invalid_argument,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        let bad_projects = [
            "workspaces/acme/projects/p/extra",
            "workspaces/acme/projects/",
            "workspaces/acme/projects/P",
            "workspaces/acme/agents/p",
            "workspaces/acme/projects/p/instances/i",
            "workspaces/acme",
        ];
        for name in bad_projects {
            assert_invalid(
                admin.get_project(req::get_project(name)).await,
                "INVALID_ARGUMENT",
                "name",
            );
            assert_invalid(
                admin.list_instances(req::list_instances(name)).await,
                "INVALID_ARGUMENT",
                "parent",
            );
        }
        for name in [
            "workspaces/acme/agents/",
            "workspaces/acme/agents/A",
            "workspaces/acme/agents/a/revisions/1",
        ] {
            assert_invalid(
                admin.get_agent(req::get_agent(name, 0)).await,
                "INVALID_ARGUMENT",
                "name",
            );
            let revisions = admin
                .list_agent_revisions(req::list_agent_revisions(name))
                .await;
            assert_invalid(revisions, "INVALID_ARGUMENT", "name");
        }
        let bad_instances = [
            "workspaces/acme/projects/p/instances/../x",
            "workspaces/acme/projects/p/instances",
            "workspaces/acme/instances/i",
            "workspaces/acme/projects/p/instances/i\u{0}",
        ];
        for name in bad_instances {
            assert_invalid(
                admin.get_instance(req::get_instance(name)).await,
                "INVALID_ARGUMENT",
                "name",
            );
            assert_invalid(
                admin.heartbeat_instance(req::heartbeat(name)).await,
                "INVALID_ARGUMENT",
                "name",
            );
        }
        for name in [
            "workspaces/acme/apiKeys/not-a-uuid",
            "workspaces/acme/apiKeys/",
            "workspaces/acme/keys/x",
        ] {
            assert_invalid(
                admin.delete_api_key(req::delete_api_key(name)).await,
                "INVALID_ARGUMENT",
                "name",
            );
        }
    }
);

backend_tests!(
    bad_ids_are_invalid_argument_and_write_nothing,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        acme.agent("helper", simple_agent()).await;
        let mut root = app.root().await;
        let mut admin = acme.admin.clone();
        let long = "a".repeat(64);
        for id in [
            "",
            "Upper",
            "1abc",
            "a_b",
            "a/b",
            "a b",
            "-a",
            "é",
            long.as_str(),
        ] {
            let ws = root
                .create_workspace(req::create_workspace(id, pb::Workspace::default()))
                .await;
            assert_invalid(ws, "INVALID_ARGUMENT", "workspace_id");
            let project = admin
                .create_project(req::create_project(&acme.name, id))
                .await;
            assert_invalid(project, "INVALID_ARGUMENT", "project_id");
            let agent = admin
                .create_agent(req::create_agent(&acme.name, id, simple_agent()))
                .await;
            assert_invalid(agent, "INVALID_ARGUMENT", "agent_id");
            let instance = pb::Instance {
                agent: acme.agent_name("helper"),
                ..Default::default()
            };
            let instance = admin
                .create_instance(req::create_instance(
                    &acme.project_name("web"),
                    id,
                    instance,
                ))
                .await;
            assert_invalid(instance, "INVALID_ARGUMENT", "instance_id");
        }
        assert_eq!(
            root.list_workspaces(req::list_workspaces())
                .await
                .must()
                .workspaces
                .len(),
            1
        );
        assert_eq!(
            admin
                .list_projects(req::list_projects(&acme.name))
                .await
                .must()
                .projects
                .len(),
            1
        );
        assert_eq!(
            admin
                .list_agents(req::list_agents(&acme.name))
                .await
                .must()
                .agents
                .len(),
            1
        );
        let instances = admin
            .list_instances(req::list_instances(&acme.project_name("web")))
            .await;
        assert!(instances.must().instances.is_empty());
    }
);

backend_tests!(
    oversized_message_is_refused_and_writes_nothing,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        let project = pb::Project {
            description: "x".repeat(5 << 20),
            ..Default::default()
        };
        let huge = req::create_project_with(&acme.name, "huge", project);
        let status = admin
            .create_project(huge)
            .await
            .expect_err("a 5 MiB request is refused");
        assert_status(
            Err::<(), _>(status),
            Code::ResourceExhausted,
            "MESSAGE_TOO_LARGE",
        );
        let get = admin
            .get_project(req::get_project(&acme.project_name("huge")))
            .await;
        assert_status(get, Code::NotFound, "RESOURCE_NOT_FOUND");
        acme.project("small").await;
    }
);

backend_tests!(unknown_enum_values_are_invalid_argument, |app| async move {
    let acme = app.tenant("acme").await;
    let bot = acme.instance_with_agent("web", "helper", "bot").await;
    let mut admin = acme.admin.clone();
    let status = admin
        .set_instance_status(req::set_raw_status(&bot.name, 99))
        .await;
    assert_status(status, Code::InvalidArgument, "INVALID_ARGUMENT");
    let key = admin
        .create_api_key(req::create_api_key(&acme.name, 42))
        .await;
    assert_status(key, Code::InvalidArgument, "INVALID_ARGUMENT");
    let tools = vec![pb::Tool {
        name: "rm".into(),
        description: String::new(),
        risk: 7,
    }];
    let agent = pb::Agent {
        tools,
        ..simple_agent()
    };
    let agent = admin
        .create_agent(req::create_agent(&acme.name, "risky", agent))
        .await;
    assert_status(agent, Code::InvalidArgument, "INVALID_ARGUMENT");

    let get = admin
        .get_agent(req::get_agent(&acme.agent_name("risky"), 0))
        .await;
    assert_status(get, Code::NotFound, "RESOURCE_NOT_FOUND");
    assert_eq!(
        admin
            .get_instance(req::get_instance(&bot.name))
            .await
            .must(),
        bot
    );
    assert_eq!(
        admin
            .list_api_keys(req::list_api_keys(&acme.name))
            .await
            .must()
            .api_keys
            .len(),
        1
    );
});

backend_tests!(
    negative_agent_revision_is_invalid_argument,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.agent("helper", simple_agent()).await;
        let get = acme
            .admin
            .clone()
            .get_agent(req::get_agent(&acme.agent_name("helper"), -1))
            .await;
        assert_status(get, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
);

backend_tests!(
    missing_resource_in_a_request_is_invalid_argument,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let mut admin = acme.admin.clone();
        let agent = pb::CreateAgentRequest {
            agent: None,
            ..req::create_agent(&acme.name, "a", simple_agent())
        };
        assert_status(
            admin.create_agent(agent).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        let update = pb::UpdateProjectRequest::default();
        assert_status(
            admin.update_project(update).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        let instance = pb::CreateInstanceRequest {
            instance: None,
            ..req::create_instance(&acme.project_name("web"), "i", pb::Instance::default())
        };
        assert_status(
            admin.create_instance(instance).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        let key = pb::CreateApiKeyRequest {
            api_key: None,
            ..req::create_api_key(&acme.name, 2)
        };
        assert_status(
            admin.create_api_key(key).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
);

backend_tests!(
    hostile_labels_and_strings_round_trip_or_are_refused,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        let odd = "quote' \" semicolon; -- drop table projects; \u{202e} emoji 🦀 nul-free";
        let labels = [("k".to_owned(), odd.to_owned())].into();
        let project = pb::Project {
            display_name: odd.into(),
            description: odd.into(),
            labels,
            ..Default::default()
        };
        let created = admin
            .create_project(req::create_project_with(&acme.name, "web", project))
            .await
            .must();
        assert_eq!(
            admin
                .get_project(req::get_project(&created.name))
                .await
                .must(),
            created
        );
        assert_eq!(created.description, odd, "stored verbatim");
        assert_eq!(
            admin
                .list_projects(req::list_projects(&acme.name))
                .await
                .must()
                .projects
                .len(),
            1
        );
    }
);

backend_tests!(
    unknown_update_mask_paths_are_invalid_and_write_nothing,
    |app| async move {
        let acme = app.tenant("acme").await;
        let bot = acme.instance_with_agent("web", "helper", "bot").await;
        let project = acme
            .admin
            .clone()
            .get_project(req::get_project(&acme.project_name("web")))
            .await
            .must();
        let mut admin = acme.admin.clone();
        for path in ["no_such_field", "name", "create_time", "display_name.x"] {
            let change = pb::Project {
                display_name: "changed".into(),
                ..project.clone()
            };
            let result = admin
                .update_project(req::update_project(change, &[path]))
                .await;
            assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
            let change = pb::Instance {
                display_name: "changed".into(),
                ..bot.clone()
            };
            let result = admin
                .update_instance(req::update_instance(change, &[path, "display_name"]))
                .await;
            assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
        }
        assert_eq!(
            admin
                .get_project(req::get_project(&project.name))
                .await
                .must(),
            project
        );
        assert_eq!(
            admin
                .get_instance(req::get_instance(&bot.name))
                .await
                .must(),
            bot
        );
    }
);

backend_tests!(
    malformed_request_ids_are_invalid_argument,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        let long = "r".repeat(10_000);
        for request_id in [long.as_str(), "tab\there", "nul\0byte"] {
            let request = req::create_project(&acme.name, "web").request_id(request_id);
            let result = admin.create_project(request).await;
            assert_invalid(result, "INVALID_ARGUMENT", "request_id");
        }
        let projects = admin
            .list_projects(req::list_projects(&acme.name))
            .await
            .must();
        assert!(projects.projects.is_empty(), "nothing was written");
    }
);
