//! Workspaces: default and explicit quotas, updates with masks and etags, paging, and
//! deletion (refused with children unless forced; the workspace's keys die with it).

use agentry_e2e::*;
use tonic::Code;

fn default_quotas() -> pb::Quotas {
    pb::Quotas {
        max_instances_per_project: 100,
        max_concurrent_runs: 10,
        context_keep_last: 50,
        max_context_bytes: 1_048_576,
        max_projects: 100,
    }
}

fn with_quotas(quotas: Option<pb::Quotas>) -> pb::Workspace {
    pb::Workspace {
        display_name: "ACME".into(),
        quotas,
        ..Default::default()
    }
}

backend_tests!(new_workspace_gets_default_quotas, |app| async move {
    let mut root = app.root().await;
    let created = root
        .create_workspace(req::create_workspace("acme", with_quotas(None)))
        .await
        .must();
    assert_eq!(created.name, "workspaces/acme");
    assert_eq!(created.display_name, "ACME");
    assert_eq!(created.quotas, Some(default_quotas()));
    assert!(created.create_time.is_some() && created.update_time.is_some());
    assert!(!created.etag.is_empty());
    assert_eq!(
        root.get_workspace(req::get_workspace(&created.name))
            .await
            .must(),
        created
    );
});

backend_tests!(
    zero_quota_fields_take_defaults_and_others_are_kept,
    |app| async move {
        let quotas = pb::Quotas {
            max_projects: 3,
            max_instances_per_project: 7,
            ..Default::default()
        };
        let request = req::create_workspace("acme", with_quotas(Some(quotas)));
        let created = app.root().await.create_workspace(request).await.must();
        let expected = pb::Quotas {
            max_projects: 3,
            max_instances_per_project: 7,
            ..default_quotas()
        };
        assert_eq!(created.quotas, Some(expected));
    }
);

backend_tests!(negative_quota_is_invalid, |app| async move {
    let mut root = app.root().await;
    let bad = [
        pb::Quotas {
            max_projects: -1,
            ..Default::default()
        },
        pb::Quotas {
            max_instances_per_project: -5,
            ..Default::default()
        },
        pb::Quotas {
            max_context_bytes: -1,
            ..Default::default()
        },
    ];
    for quotas in bad {
        let result = root
            .create_workspace(req::create_workspace("acme", with_quotas(Some(quotas))))
            .await;
        assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    assert!(
        root.list_workspaces(req::list_workspaces())
            .await
            .must()
            .workspaces
            .is_empty(),
        "nothing written"
    );
});

backend_tests!(duplicate_workspace_already_exists, |app| async move {
    let mut root = app.root().await;
    root.create_workspace(req::create_workspace("acme", with_quotas(None)))
        .await
        .must();
    let result = root
        .create_workspace(req::create_workspace("acme", with_quotas(None)))
        .await;
    assert_status(result, Code::AlreadyExists, "RESOURCE_ALREADY_EXISTS");
    let missing = root
        .get_workspace(req::get_workspace("workspaces/nope"))
        .await;
    assert_status(missing, Code::NotFound, "RESOURCE_NOT_FOUND");
});

backend_tests!(workspaces_page_in_id_order, |app| async move {
    let mut root = app.root().await;
    for id in ["echo", "alpha", "delta", "bravo", "charlie"] {
        root.create_workspace(req::create_workspace(id, with_quotas(None)))
            .await
            .must();
    }
    let (mut names, mut token) = (vec![], String::new());
    loop {
        let page = root
            .list_workspaces(req::list_workspaces().page(2, &token))
            .await
            .must();
        assert!(page.workspaces.len() <= 2);
        names.extend(page.workspaces.into_iter().map(|w| w.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let ids: Vec<_> = names
        .iter()
        .map(|n| n.trim_start_matches("workspaces/"))
        .collect();
    assert_eq!(ids, ["alpha", "bravo", "charlie", "delta", "echo"]);
});

backend_tests!(update_workspace_honours_mask_and_etag, |app| async move {
    let acme = app.tenant("acme").await;
    let before = acme.workspace.clone();
    let mut admin = acme.admin.clone();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let change = pb::Workspace {
        display_name: "Renamed".into(),
        description: "not in the mask".into(),
        ..before.clone()
    };
    let updated = admin
        .update_workspace(req::update_workspace(change, &["display_name"]))
        .await
        .must();
    assert_eq!(updated.display_name, "Renamed");
    assert_eq!(
        updated.description, before.description,
        "fields outside the mask are kept"
    );
    assert_ne!(updated.etag, before.etag);
    assert!(nanos(&updated.update_time) > nanos(&before.update_time));
    assert_eq!(updated.create_time, before.create_time);

    let stale = pb::Workspace {
        display_name: "Lost".into(),
        ..before.clone()
    };
    let result = admin
        .update_workspace(req::update_workspace(stale, &["display_name"]))
        .await;
    let status = assert_status(result, Code::Aborted, "ETAG_MISMATCH");
    assert_eq!(
        error_metadata(&status, "current_etag"),
        Some(updated.etag.clone())
    );

    let unknown = pb::Workspace {
        name: acme.name.clone(),
        ..Default::default()
    };
    let result = admin
        .update_workspace(req::update_workspace(unknown, &["no_such_field"]))
        .await;
    assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        admin
            .get_workspace(req::get_workspace(&acme.name))
            .await
            .must(),
        updated,
        "failures wrote nothing"
    );
});

backend_tests!(root_updates_a_single_quota_leaf, |app| async move {
    let acme = app.tenant("acme").await;
    let quotas = pb::Quotas {
        max_projects: 2,
        max_concurrent_runs: 99,
        ..Default::default()
    };
    let change = pb::Workspace {
        name: acme.name.clone(),
        quotas: Some(quotas),
        ..Default::default()
    };
    let request = req::update_workspace(change, &["quotas.max_projects"]);
    let updated = app.root().await.update_workspace(request).await.must();
    assert_eq!(
        updated.quotas,
        Some(pb::Quotas {
            max_projects: 2,
            ..default_quotas()
        })
    );
    assert_eq!(updated.display_name, acme.workspace.display_name);
});

backend_tests!(
    delete_workspace_with_projects_needs_force,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.instance_with_agent("web", "helper", "bot").await;
        let mut root = app.root().await;
        let result = root
            .delete_workspace(req::delete_workspace(&acme.name))
            .await;
        assert_status(result, Code::FailedPrecondition, "HAS_CHILDREN");
        acme.admin
            .clone()
            .get_workspace(req::get_workspace(&acme.name))
            .await
            .expect("still there");

        root.delete_workspace(req::delete_workspace(&acme.name).force())
            .await
            .expect("force deletes");
        let get = root.get_workspace(req::get_workspace(&acme.name)).await;
        assert_status(get, Code::NotFound, "RESOURCE_NOT_FOUND");
        let orphan = acme
            .admin
            .clone()
            .get_workspace(req::get_workspace(&acme.name))
            .await;
        assert_eq!(
            orphan.expect_err("keys die with their workspace").code(),
            Code::Unauthenticated
        );
        let project = root
            .get_project(req::get_project(&acme.project_name("web")))
            .await;
        assert_status(project, Code::NotFound, "RESOURCE_NOT_FOUND");

        // The id is free again, and nothing of the old workspace shows through.
        let again = app.tenant("acme").await;
        let mut admin = again.admin.clone();
        assert!(
            admin
                .list_projects(req::list_projects(&again.name))
                .await
                .must()
                .projects
                .is_empty()
        );
        assert!(
            admin
                .list_agents(req::list_agents(&again.name))
                .await
                .must()
                .agents
                .is_empty()
        );
        assert_eq!(
            admin
                .list_api_keys(req::list_api_keys(&again.name))
                .await
                .must()
                .api_keys
                .len(),
            1
        );
        let old_key = app
            .registry(&acme.admin_key)
            .await
            .get_workspace(req::get_workspace(&again.name))
            .await;
        assert_eq!(
            old_key.expect_err("the old admin key stays dead").code(),
            Code::Unauthenticated
        );
    }
);

backend_tests!(delete_empty_workspace_needs_no_force, |app| async move {
    let mut root = app.root().await;
    let created = root
        .create_workspace(req::create_workspace("acme", with_quotas(None)))
        .await
        .must();
    let stale = req::delete_workspace(&created.name).etag("not-the-etag");
    assert_status(
        root.delete_workspace(stale).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    root.delete_workspace(req::delete_workspace(&created.name).etag(&created.etag))
        .await
        .expect("deletes");
    let again = root
        .delete_workspace(req::delete_workspace(&created.name))
        .await;
    assert_status(again, Code::NotFound, "RESOURCE_NOT_FOUND");
});

backend_tests!(root_cannot_set_a_negative_quota, |app| async move {
    let acme = app.tenant("acme").await;
    let quotas = pb::Quotas {
        max_instances_per_project: -1,
        ..Default::default()
    };
    let change = pb::Workspace {
        name: acme.name.clone(),
        quotas: Some(quotas),
        ..Default::default()
    };
    let request = req::update_workspace(change, &["quotas.max_instances_per_project"]);
    let result = app.root().await.update_workspace(request).await;
    assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    let now = acme
        .admin
        .clone()
        .get_workspace(req::get_workspace(&acme.name))
        .await
        .must();
    assert_eq!(now, acme.workspace);
});
