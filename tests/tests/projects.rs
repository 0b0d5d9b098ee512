//! Projects: CRUD with masks and etags, keyset paging, the project quota, and deletion
//! guarded by live instances.

use agentry_e2e::*;
use tonic::Code;

backend_tests!(project_crud_round_trips, |app| async move {
    let acme = app.tenant("acme").await;
    let mut admin = acme.admin.clone();
    let labels: std::collections::BTreeMap<_, _> = [("team".to_owned(), "web".to_owned())].into();
    let spec = pb::Project {
        display_name: "Web".into(),
        description: "site".into(),
        labels: labels.clone(),
        ..Default::default()
    };
    let created = admin
        .create_project(req::create_project_with(&acme.name, "web", spec))
        .await
        .must();
    assert_eq!(created.name, acme.project_name("web"));
    assert_eq!(
        (created.display_name.as_str(), created.description.as_str()),
        ("Web", "site")
    );
    assert_eq!(created.labels, labels);
    assert!(!created.etag.is_empty() && created.create_time.is_some());
    assert_eq!(
        admin
            .get_project(req::get_project(&created.name))
            .await
            .must(),
        created
    );

    let duplicate = admin
        .create_project(req::create_project(&acme.name, "web"))
        .await;
    assert_status(duplicate, Code::AlreadyExists, "RESOURCE_ALREADY_EXISTS");

    let change = pb::Project {
        description: "the website".into(),
        display_name: "ignored".into(),
        ..created.clone()
    };
    let updated = admin
        .update_project(req::update_project(change.clone(), &["description"]))
        .await
        .must();
    assert_eq!(
        (updated.description.as_str(), updated.display_name.as_str()),
        ("the website", "Web")
    );
    assert_eq!(updated.labels, labels);
    assert_ne!(updated.etag, created.etag);

    let stale = admin
        .update_project(req::update_project(change, &["description"]))
        .await;
    let status = assert_status(stale, Code::Aborted, "ETAG_MISMATCH");
    assert_eq!(
        error_metadata(&status, "current_etag"),
        Some(updated.etag.clone())
    );

    let stale_delete = req::delete_project(&created.name).etag(&created.etag);
    assert_status(
        admin.delete_project(stale_delete).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    admin
        .delete_project(req::delete_project(&created.name).etag(&updated.etag))
        .await
        .expect("current etag");
    let gone = admin.get_project(req::get_project(&created.name)).await;
    assert_status(gone, Code::NotFound, "RESOURCE_NOT_FOUND");
    let again = admin
        .delete_project(req::delete_project(&created.name))
        .await;
    assert_status(again, Code::NotFound, "RESOURCE_NOT_FOUND");
    let update_gone = admin
        .update_project(req::update_project(updated, &["description"]))
        .await;
    assert_status(update_gone, Code::NotFound, "RESOURCE_NOT_FOUND");
});

backend_tests!(
    projects_page_through_all_exactly_once_in_id_order,
    |app| async move {
        let acme = app.tenant("acme").await;
        let ids = [
            "golf", "alpha", "foxtrot", "charlie", "echo", "bravo", "delta",
        ];
        for id in ids {
            acme.project(id).await;
        }
        let mut admin = acme.admin.clone();
        let (mut seen, mut pages, mut token) = (vec![], vec![], String::new());
        loop {
            let page = admin
                .list_projects(req::list_projects(&acme.name).page(3, &token))
                .await
                .must();
            pages.push(page.projects.len());
            seen.extend(page.projects.into_iter().map(|p| p.name));
            token = page.next_page_token;
            if token.is_empty() || pages.len() > 10 {
                break;
            }
        }
        let mut expected: Vec<_> = ids.iter().map(|id| acme.project_name(id)).collect();
        expected.sort();
        assert_eq!(seen, expected);
        assert_eq!(pages, [3, 3, 1]);
    }
);

backend_tests!(
    paging_is_stable_when_rows_are_added_behind_the_cursor,
    |app| async move {
        let acme = app.tenant("acme").await;
        for id in ["b", "d", "f"] {
            acme.project(id).await;
        }
        let mut admin = acme.admin.clone();
        let first = admin
            .list_projects(req::list_projects(&acme.name).page(2, ""))
            .await
            .must();
        acme.project("a").await; // sorts before the cursor: must not shift the next page
        acme.project("e").await; // after the cursor: shows up
        let rest = admin
            .list_projects(req::list_projects(&acme.name).page(10, &first.next_page_token))
            .await
            .must();
        let names: Vec<_> = first
            .projects
            .iter()
            .chain(&rest.projects)
            .map(|p| p.name.clone())
            .collect();
        let expected: Vec<_> = ["b", "d", "e", "f"]
            .iter()
            .map(|id| acme.project_name(id))
            .collect();
        assert_eq!(names, expected);
    }
);

backend_tests!(project_quota_is_resource_exhausted, |app| async move {
    let acme = app
        .tenant_with_quotas(
            "acme",
            pb::Quotas {
                max_projects: 2,
                ..Default::default()
            },
        )
        .await;
    acme.project("one").await;
    acme.project("two").await;
    let mut admin = acme.admin.clone();
    assert_quota_exceeded(
        admin
            .create_project(req::create_project(&acme.name, "three"))
            .await,
    );
    let get = admin
        .get_project(req::get_project(&acme.project_name("three")))
        .await;
    assert_status(get, Code::NotFound, "RESOURCE_NOT_FOUND");

    admin
        .delete_project(req::delete_project(&acme.project_name("one")))
        .await
        .must();
    admin
        .create_project(req::create_project(&acme.name, "three"))
        .await
        .expect("a deleted project frees its slot");
});

backend_tests!(
    delete_project_with_live_instances_needs_force,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.instance_with_agent("web", "helper", "bot").await;
        let mut admin = acme.admin.clone();
        let refused = admin
            .delete_project(req::delete_project(&acme.project_name("web")))
            .await;
        assert_status(refused, Code::FailedPrecondition, "HAS_CHILDREN");
        admin
            .get_instance(req::get_instance(&acme.instance_name("web", "bot")))
            .await
            .expect("kept");

        admin
            .delete_project(req::delete_project(&acme.project_name("web")).force())
            .await
            .expect("force deletes");
        let gone = admin
            .get_project(req::get_project(&acme.project_name("web")))
            .await;
        assert_status(gone, Code::NotFound, "RESOURCE_NOT_FOUND");
        admin
            .get_agent(req::get_agent(&acme.agent_name("helper"), 0))
            .await
            .expect("agents belong to the workspace");
    }
);

backend_tests!(
    project_with_only_terminated_instances_deletes_without_force,
    |app| async move {
        let acme = app.tenant("acme").await;
        let bot = acme.instance_with_agent("web", "helper", "bot").await;
        let mut admin = acme.admin.clone();
        admin
            .delete_instance(req::delete_instance(&bot.name))
            .await
            .must();
        admin
            .delete_project(req::delete_project(&acme.project_name("web")))
            .await
            .expect("no live instance");
    }
);

backend_tests!(
    concurrent_creates_never_exceed_the_project_quota,
    |app| async move {
        let quotas = pb::Quotas {
            max_projects: 3,
            ..Default::default()
        };
        let acme = app.tenant_with_quotas("acme", quotas).await;
        let calls = (0..10).map(|i| {
            let mut admin = acme.admin.clone();
            let request = req::create_project(&acme.name, &format!("p{i}"));
            async move { admin.create_project(request).await }
        });
        let results = futures::future::join_all(calls).await;
        let created = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(created, 3, "exactly the quota is created: {results:?}");
        for refused in results.into_iter().filter(Result::is_err) {
            assert_quota_exceeded(refused);
        }
        let listed = acme
            .admin
            .clone()
            .list_projects(req::list_projects(&acme.name))
            .await
            .must();
        assert_eq!(listed.projects.len(), 3);
    }
);
