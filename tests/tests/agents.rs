//! Agent definitions: immutable numbered revisions, schema validation, deletion guarded
//! by the instances that pin a definition.

use agentry_e2e::*;
use tonic::{Code, Status};

fn full_agent() -> pb::Agent {
    let tool = |name: &str, risk: pb::ToolRisk| pb::Tool {
        name: name.into(),
        description: "d".into(),
        risk: risk as i32,
    };
    pb::Agent {
        display_name: "Researcher".into(),
        description: "finds things".into(),
        agent_type: "langgraph".into(),
        capabilities: vec!["search".into(), "summarize".into()],
        tools: vec![
            tool("web_search", pb::ToolRisk::ReadOnly),
            tool("send_mail", pb::ToolRisk::Destructive),
        ],
        config_schema: Some(to_struct(json!({
            "type": "object",
            "properties": {"model": {"type": "string"}, "temperature": {"type": "number", "maximum": 2}},
            "required": ["model"]
        }))),
        default_config: Some(to_struct(json!({"model": "small", "temperature": 1.0}))),
        labels: [("tier".to_owned(), "gold".to_owned())].into(),
        enabled: Some(true),
        ..Default::default()
    }
}

async fn update_description(acme: &Tenant, agent: &str, description: &str) -> pb::Agent {
    let change = pb::Agent {
        name: acme.agent_name(agent),
        description: description.into(),
        ..Default::default()
    };
    acme.admin
        .clone()
        .update_agent(req::update_agent(change, &["description"]))
        .await
        .must()
}

async fn get_agent(acme: &Tenant, agent: &str, revision: i64) -> Result<pb::Agent, Status> {
    acme.admin
        .clone()
        .get_agent(req::get_agent(&acme.agent_name(agent), revision))
        .await
        .inner()
}

fn revision_numbers(revisions: &[pb::Agent]) -> Vec<i64> {
    revisions.iter().map(|a| a.revision).collect()
}

backend_tests!(
    create_agent_starts_at_revision_one_and_round_trips,
    |app| async move {
        let acme = app.tenant("acme").await;
        let created = acme.agent("researcher", full_agent()).await;
        let want = full_agent();
        assert_eq!(created.name, acme.agent_name("researcher"));
        assert_eq!(created.revision, 1);
        assert_eq!(
            (&created.display_name, &created.description),
            (&want.display_name, &want.description)
        );
        assert_eq!(created.agent_type, want.agent_type);
        assert_eq!(created.capabilities, want.capabilities);
        assert_eq!(created.tools, want.tools);
        assert_eq!(created.labels, want.labels);
        assert_eq!(created.enabled, Some(true));
        assert_eq!(created.config_schema, want.config_schema);
        assert_eq!(
            from_struct(created.default_config.as_ref().unwrap()),
            json!({"model": "small", "temperature": 1.0})
        );
        assert!(
            created.create_time.is_some()
                && created.revision_create_time.is_some()
                && !created.etag.is_empty()
        );
        assert_eq!(get_agent(&acme, "researcher", 0).await.unwrap(), created);
        assert_eq!(get_agent(&acme, "researcher", 1).await.unwrap(), created);
    }
);

backend_tests!(
    update_agent_appends_revisions_and_keeps_history,
    |app| async move {
        let acme = app.tenant("acme").await;
        let first = acme.agent("researcher", full_agent()).await;
        let second = update_description(&acme, "researcher", "second").await;
        let third = update_description(&acme, "researcher", "third").await;
        assert_eq!((second.revision, third.revision), (2, 3));
        assert_eq!(
            third.display_name, first.display_name,
            "fields outside the mask carry over"
        );
        assert_eq!(third.tools, first.tools);
        assert_eq!(third.config_schema, first.config_schema);
        assert_eq!(
            third.create_time, first.create_time,
            "create_time is the definition's"
        );
        assert!(nanos(&third.revision_create_time) >= nanos(&second.revision_create_time));
        assert_ne!(third.etag, second.etag);
        assert_ne!(second.etag, first.etag);

        assert_eq!(get_agent(&acme, "researcher", 0).await.unwrap(), third);
        assert_eq!(
            get_agent(&acme, "researcher", 1).await.unwrap().description,
            "finds things"
        );
        assert_eq!(get_agent(&acme, "researcher", 2).await.unwrap(), second);
        assert_status(
            get_agent(&acme, "researcher", 4).await,
            Code::NotFound,
            "RESOURCE_NOT_FOUND",
        );

        let mut admin = acme.admin.clone();
        let name = acme.agent_name("researcher");
        let all = admin
            .list_agent_revisions(req::list_agent_revisions(&name))
            .await
            .must();
        let descriptions: Vec<_> = all
            .revisions
            .iter()
            .map(|a| (a.revision, a.description.as_str()))
            .collect();
        assert_eq!(
            descriptions,
            [(3, "third"), (2, "second"), (1, "finds things")]
        );
        assert!(all.next_page_token.is_empty());

        let page = admin
            .list_agent_revisions(req::list_agent_revisions(&name).page(2, ""))
            .await
            .must();
        assert_eq!(revision_numbers(&page.revisions), [3, 2]);
        let request = req::list_agent_revisions(&name).page(2, &page.next_page_token);
        let rest = admin.list_agent_revisions(request).await.must();
        assert_eq!(revision_numbers(&rest.revisions), [1]);
        assert!(rest.next_page_token.is_empty());

        let listed = admin
            .list_agents(req::list_agents(&acme.name))
            .await
            .must()
            .agents;
        assert_eq!(
            revision_numbers(&listed),
            [3],
            "one agent, shown at its latest revision"
        );
    }
);

backend_tests!(
    update_agent_with_a_stale_etag_is_aborted,
    |app| async move {
        let acme = app.tenant("acme").await;
        let first = acme.agent("researcher", full_agent()).await;
        let second = update_description(&acme, "researcher", "second").await;
        let stale = pb::Agent {
            description: "lost".into(),
            ..first
        };
        let result = acme
            .admin
            .clone()
            .update_agent(req::update_agent(stale, &["description"]))
            .await;
        let status = assert_status(result, Code::Aborted, "ETAG_MISMATCH");
        assert_eq!(error_metadata(&status, "current_etag"), Some(second.etag));
        assert_eq!(
            get_agent(&acme, "researcher", 0).await.unwrap().revision,
            2,
            "no revision appended"
        );
    }
);

backend_tests!(unknown_update_mask_path_is_invalid, |app| async move {
    let acme = app.tenant("acme").await;
    acme.agent("helper", simple_agent()).await;
    let mut admin = acme.admin.clone();
    for path in ["no_such_field", "config_schemas"] {
        let change = pb::Agent {
            name: acme.agent_name("helper"),
            ..Default::default()
        };
        let result = admin.update_agent(req::update_agent(change, &[path])).await;
        assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    assert_eq!(get_agent(&acme, "helper", 0).await.unwrap().revision, 1);
});

backend_tests!(invalid_config_schema_is_rejected, |app| async move {
    let acme = app.tenant("acme").await;
    let mut admin = acme.admin.clone();
    let bad_schemas = [
        json!({"type": "no-such-type"}),
        json!({"$ref": "https://example.com/schema.json"}),
    ];
    for schema in bad_schemas.clone() {
        let agent = pb::Agent {
            config_schema: Some(to_struct(schema)),
            ..simple_agent()
        };
        let result = admin
            .create_agent(req::create_agent(&acme.name, "broken", agent))
            .await;
        assert_status(result, Code::InvalidArgument, "INVALID_SCHEMA");
    }
    assert_status(
        get_agent(&acme, "broken", 0).await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );

    acme.agent("good", simple_agent()).await;
    for schema in bad_schemas {
        let change = pb::Agent {
            name: acme.agent_name("good"),
            config_schema: Some(to_struct(schema)),
            ..Default::default()
        };
        let result = admin
            .update_agent(req::update_agent(change, &["config_schema"]))
            .await;
        assert_status(result, Code::InvalidArgument, "INVALID_SCHEMA");
    }
    assert_eq!(
        get_agent(&acme, "good", 0).await.unwrap().revision,
        1,
        "no revision appended"
    );
});

backend_tests!(duplicate_and_missing_agents, |app| async move {
    let acme = app.tenant("acme").await;
    acme.agent("researcher", simple_agent()).await;
    let mut admin = acme.admin.clone();
    let duplicate = admin
        .create_agent(req::create_agent(&acme.name, "researcher", simple_agent()))
        .await;
    assert_status(duplicate, Code::AlreadyExists, "RESOURCE_ALREADY_EXISTS");
    assert_status(
        get_agent(&acme, "nobody", 0).await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );
    let nobody = acme.agent_name("nobody");
    let change = pb::Agent {
        name: nobody.clone(),
        description: "x".into(),
        ..Default::default()
    };
    let update = admin
        .update_agent(req::update_agent(change, &["description"]))
        .await;
    assert_status(update, Code::NotFound, "RESOURCE_NOT_FOUND");
    let revisions = admin
        .list_agent_revisions(req::list_agent_revisions(&nobody))
        .await;
    assert_status(revisions, Code::NotFound, "RESOURCE_NOT_FOUND");
    let delete = admin.delete_agent(req::delete_agent(&nobody)).await;
    assert_status(delete, Code::NotFound, "RESOURCE_NOT_FOUND");
});

backend_tests!(
    delete_agent_pinned_by_a_live_instance_needs_force,
    |app| async move {
        let acme = app.tenant("acme").await;
        let bot = acme.instance_with_agent("web", "helper", "bot").await;
        let mut admin = acme.admin.clone();
        let refused = admin
            .delete_agent(req::delete_agent(&acme.agent_name("helper")))
            .await;
        assert_status(refused, Code::FailedPrecondition, "HAS_CHILDREN");
        get_agent(&acme, "helper", 0).await.expect("agent kept");
        assert_eq!(
            admin
                .get_instance(req::get_instance(&bot.name))
                .await
                .must(),
            bot,
            "instance untouched"
        );

        admin
            .delete_agent(req::delete_agent(&acme.agent_name("helper")).force())
            .await
            .expect("force deletes");
        assert_status(
            get_agent(&acme, "helper", 0).await,
            Code::NotFound,
            "RESOURCE_NOT_FOUND",
        );
        let bot = admin
            .get_instance(req::get_instance(&bot.name))
            .await
            .must();
        assert_eq!(
            bot.status,
            pb::InstanceStatus::Terminated as i32,
            "force terminates pinning instances"
        );
    }
);

backend_tests!(
    delete_agent_whose_instances_are_terminated_needs_no_force,
    |app| async move {
        let acme = app.tenant("acme").await;
        let bot = acme.instance_with_agent("web", "helper", "bot").await;
        let mut admin = acme.admin.clone();
        admin
            .delete_instance(req::delete_instance(&bot.name))
            .await
            .must();
        admin
            .delete_agent(req::delete_agent(&acme.agent_name("helper")))
            .await
            .expect("no live instance pins it");
        assert_status(
            get_agent(&acme, "helper", 0).await,
            Code::NotFound,
            "RESOURCE_NOT_FOUND",
        );
    }
);

backend_tests!(agents_page_in_id_order, |app| async move {
    let acme = app.tenant("acme").await;
    for id in ["delta", "alpha", "charlie", "bravo"] {
        acme.agent(id, simple_agent()).await;
    }
    let mut admin = acme.admin.clone();
    let first = admin
        .list_agents(req::list_agents(&acme.name).page(3, ""))
        .await
        .must();
    let second = admin
        .list_agents(req::list_agents(&acme.name).page(3, &first.next_page_token))
        .await
        .must();
    assert!(second.next_page_token.is_empty());
    let names: Vec<_> = first
        .agents
        .iter()
        .chain(&second.agents)
        .map(|a| a.name.clone())
        .collect();
    let expected: Vec<_> = ["alpha", "bravo", "charlie", "delta"]
        .iter()
        .map(|id| acme.agent_name(id))
        .collect();
    assert_eq!(names, expected);
});

backend_tests!(
    disabled_agent_is_a_new_revision_and_accepts_no_instances,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let created = acme
            .agent(
                "helper",
                pb::Agent {
                    enabled: None,
                    ..simple_agent()
                },
            )
            .await;
        assert_eq!(
            created.enabled,
            Some(true),
            "absent on create means enabled"
        );
        let change = pb::Agent {
            name: created.name.clone(),
            enabled: Some(false),
            ..Default::default()
        };
        let disabled = acme
            .admin
            .clone()
            .update_agent(req::update_agent(change, &["enabled"]))
            .await
            .must();
        assert_eq!((disabled.revision, disabled.enabled), (2, Some(false)));
        assert_eq!(
            get_agent(&acme, "helper", 1).await.unwrap().enabled,
            Some(true),
            "revision 1 is immutable"
        );

        let instance = pb::Instance {
            agent: created.name.clone(),
            ..Default::default()
        };
        let request = req::create_instance(&acme.project_name("web"), "bot", instance);
        let result = acme.admin.clone().create_instance(request).await;
        assert_status(result, Code::FailedPrecondition, "AGENT_DISABLED");
    }
);
