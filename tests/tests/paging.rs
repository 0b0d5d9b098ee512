//! List paging across methods: page_size defaults, clamping and negatives; page tokens
//! bound to the request that made them (parent, method) and proof against tampering.

use agentry_e2e::*;
use tonic::Code;

backend_tests!(
    page_size_defaults_to_50_clamps_and_rejects_negatives,
    |app| async move {
        let acme = app.tenant("acme").await;
        for i in 0..51 {
            acme.project(&format!("p{i:02}")).await;
        }
        let mut admin = acme.admin.clone();
        let default = admin
            .list_projects(req::list_projects(&acme.name))
            .await
            .must();
        assert_eq!(default.projects.len(), 50);
        assert!(!default.next_page_token.is_empty());
        let huge = admin
            .list_projects(req::list_projects(&acme.name).page(i32::MAX, ""))
            .await;
        let huge = huge.expect("a huge page size is clamped, not refused");
        assert_eq!(huge.get_ref().projects.len(), 51);
        assert!(
            huge.get_ref().next_page_token.is_empty(),
            "the last page has no token"
        );
        for negative in [-1, i32::MIN] {
            let result = admin
                .list_projects(req::list_projects(&acme.name).page(negative, ""))
                .await;
            assert_invalid(result, "INVALID_ARGUMENT", "page_size");
        }
        let keys = admin
            .list_api_keys(req::list_api_keys(&acme.name).page(-1, ""))
            .await;
        assert_invalid(keys, "INVALID_ARGUMENT", "page_size");
        let workspaces = app
            .root()
            .await
            .list_workspaces(req::list_workspaces().page(-1, ""))
            .await;
        assert_invalid(workspaces, "INVALID_ARGUMENT", "page_size");
    }
);

backend_tests!(
    page_tokens_only_work_for_the_request_that_made_them,
    |app| async move {
        let mut root = app.root().await;
        let acme = app.tenant("acme").await;
        let globex = app.tenant("globex").await;
        for id in ["a", "b", "c"] {
            acme.project(id).await;
            acme.agent(id, simple_agent()).await;
            globex.project(id).await;
        }
        let projects = |parent: &str, token: &str| req::list_projects(parent).page(1, token);
        let token = root
            .list_projects(projects(&acme.name, ""))
            .await
            .must()
            .next_page_token;
        assert!(!token.is_empty());
        root.list_projects(projects(&acme.name, &token))
            .await
            .expect("the token continues its own listing");
        let other_size = req::list_projects(&acme.name).page(2, &token);
        root.list_projects(other_size)
            .await
            .expect("page_size may change between pages (AIP-158)");

        let other_parent = root.list_projects(projects(&globex.name, &token)).await;
        assert_status(other_parent, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
        let other_method = root
            .list_agents(req::list_agents(&acme.name).page(1, &token))
            .await;
        assert_status(other_method, Code::InvalidArgument, "INVALID_PAGE_TOKEN");

        let mut tampered = token.clone().into_bytes();
        tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let truncated = &token[..token.len() - 1];
        let extended = format!("{token}AA");
        let long = "x".repeat(5000);
        for forged in [
            tampered.as_str(),
            truncated,
            &extended,
            "!!!",
            "AAAA",
            &long,
        ] {
            let result = root.list_projects(projects(&acme.name, forged)).await;
            assert_status(result, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
        }
    }
);
