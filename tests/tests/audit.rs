//! ListAuditRecords: the audit log, newest first, filtered by principal, method,
//! resource (and everything under it) and time, keyset-paged; ADMIN of the workspace or
//! ROOT only, and one tenant never sees another's records.

use agentry_e2e::*;
use tonic::Code;

async fn audit(client: &mut Registry, parent: &str, filter: &str) -> Vec<pb::AuditRecord> {
    let mut records = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_audit_records(req::list_audit_records(parent, filter).page(2, &token))
            .await
            .must();
        assert!(page.audit_records.len() <= 2);
        records.extend(page.audit_records);
        if page.next_page_token.is_empty() {
            return records;
        }
        token = page.next_page_token;
    }
}

fn methods(records: &[pb::AuditRecord]) -> Vec<&str> {
    records.iter().map(|r| r.method.as_str()).collect()
}

fn rfc3339(ts: &Option<prost_types::Timestamp>) -> String {
    let ts = ts.as_ref().expect("a create_time");
    let secs = ts.seconds;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ts.nanos / 1000
    )
}

backend_tests!(
    records_come_newest_first_and_filter_by_principal_method_resource_and_time,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        let developer = admin
            .create_api_key(req::create_api_key(&acme.name, pb::Role::Developer as i32))
            .await
            .must();
        let developer_name = developer.api_key.unwrap().name;
        let mut dev = app.registry(&developer.secret).await;
        acme.project("web").await;
        acme.project("webshop").await;
        dev.create_agent(req::create_agent(&acme.name, "helper", simple_agent()))
            .await
            .must();
        let instance = pb::Instance {
            agent: acme.agent_name("helper"),
            ..Default::default()
        };
        dev.create_instance(req::create_instance(
            &acme.project_name("web"),
            "bot",
            instance,
        ))
        .await
        .must();

        let all = audit(&mut admin, &acme.name, "").await;
        assert_eq!(
            methods(&all),
            [
                "CreateInstance",
                "CreateAgent",
                "CreateProject",
                "CreateProject",
                "CreateApiKey",
                "CreateApiKey",
                "CreateWorkspace",
            ]
        );
        let times: Vec<i128> = all.iter().map(|r| nanos(&r.create_time)).collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "newest first: {times:?}"
        );
        let instance_record = &all[0];
        assert_eq!(instance_record.principal, developer_name);
        assert_eq!(
            instance_record.resource,
            acme.instance_name("web", "bot"),
            "{instance_record:?}"
        );
        assert!(
            instance_record
                .name
                .starts_with("workspaces/acme/auditRecords/")
        );

        let by_root = audit(&mut admin, &acme.name, "principal = \"root\"").await;
        assert_eq!(methods(&by_root), ["CreateApiKey", "CreateWorkspace"]);
        let by_developer = audit(
            &mut admin,
            &acme.name,
            &format!("principal = \"{developer_name}\""),
        )
        .await;
        assert_eq!(methods(&by_developer), ["CreateInstance", "CreateAgent"]);
        let projects = audit(&mut admin, &acme.name, "method = CreateProject").await;
        let resources: Vec<&str> = projects.iter().map(|r| r.resource.as_str()).collect();
        assert_eq!(
            resources,
            [acme.project_name("webshop"), acme.project_name("web")]
        );

        // A resource and what is under it; `webshop` merely shares the prefix text.
        let web = audit(
            &mut admin,
            &acme.name,
            &format!("resource = \"{}\"", acme.project_name("web")),
        )
        .await;
        assert_eq!(methods(&web), ["CreateInstance", "CreateProject"]);
        let both = format!(
            "resource = \"{}\" AND method = \"CreateProject\" AND principal = \"{developer_name}\"",
            acme.project_name("web")
        );
        assert!(audit(&mut admin, &acme.name, &both).await.is_empty());

        let after = rfc3339(&all[2].create_time);
        let newer = audit(
            &mut admin,
            &acme.name,
            &format!("create_time > \"{after}\""),
        )
        .await;
        assert_eq!(newer, all[..2].to_vec());
        let older = audit(
            &mut admin,
            &acme.name,
            &format!("create_time < \"{after}\""),
        )
        .await;
        assert_eq!(older, all[3..].to_vec());

        // ROOT reads any workspace's log.
        assert_eq!(audit(&mut app.root().await, &acme.name, "").await, all);
    }
);

backend_tests!(
    pages_continue_only_the_listing_they_came_from,
    |app| async move {
        let acme = app.tenant("acme").await;
        let mut admin = acme.admin.clone();
        for id in ["a", "b", "c", "d"] {
            acme.project(id).await;
        }
        let first = admin
            .list_audit_records(
                req::list_audit_records(&acme.name, "method = CreateProject").page(3, ""),
            )
            .await
            .must();
        assert_eq!(first.audit_records.len(), 3);
        assert!(!first.next_page_token.is_empty());
        let second = admin
            .list_audit_records(
                req::list_audit_records(&acme.name, "method = CreateProject")
                    .page(3, &first.next_page_token),
            )
            .await
            .must();
        assert_eq!(second.audit_records.len(), 1);
        assert_eq!(second.audit_records[0].resource, acme.project_name("a"));
        assert!(second.next_page_token.is_empty());

        let other_filter = admin
            .list_audit_records(
                req::list_audit_records(&acme.name, "method = CreateApiKey")
                    .page(3, &first.next_page_token),
            )
            .await;
        assert_invalid(other_filter, "INVALID_PAGE_TOKEN", "page_token");

        // A record written between pages does not shift the listing.
        let head = admin
            .list_audit_records(req::list_audit_records(&acme.name, "").page(2, ""))
            .await
            .must();
        acme.project("e").await;
        let rest = admin
            .list_audit_records(
                req::list_audit_records(&acme.name, "").page(100, &head.next_page_token),
            )
            .await
            .must();
        assert_eq!(head.audit_records.len() + rest.audit_records.len(), 6);
        assert!(
            rest.audit_records
                .iter()
                .all(|r| r.resource != acme.project_name("e"))
        );
    }
);

backend_tests!(
    only_the_admin_and_root_read_the_log_of_their_own_workspace,
    |app| async move {
        let acme = app.tenant("acme").await;
        let globex = app.tenant("globex").await;
        globex.project("secret-plans").await;

        for role in [pb::Role::Developer, pb::Role::Reader, pb::Role::Worker] {
            let mut client = app.registry(&acme.key(role).await).await;
            let denied = client
                .list_audit_records(req::list_audit_records(&acme.name, ""))
                .await;
            assert_status(denied, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
        }
        let mut intruder = acme.admin.clone();
        for workspace in ["workspaces/globex", "workspaces/ghost"] {
            let denied = intruder
                .list_audit_records(req::list_audit_records(workspace, ""))
                .await;
            assert_status(denied, Code::PermissionDenied, "WORKSPACE_MISMATCH");
        }
        let own = audit(&mut intruder, &acme.name, "").await;
        assert!(
            own.iter()
                .all(|r| r.resource.starts_with("workspaces/acme")),
            "{own:?}"
        );
        let foreign_resource = intruder
            .list_audit_records(req::list_audit_records(
                &acme.name,
                "resource = \"workspaces/globex/projects/secret-plans\"",
            ))
            .await;
        assert_invalid(foreign_resource, "INVALID_ARGUMENT", "filter");
    }
);

backend_tests!(bad_filters_are_invalid_arguments, |app| async move {
    let acme = app.tenant("acme").await;
    let mut admin = acme.admin.clone();
    for filter in [
        "outcome = OK",
        "method = \"Create Run\"",
        "create_time > yesterday",
        "principal = \"nobody\"",
        "principal",
    ] {
        let result = admin
            .list_audit_records(req::list_audit_records(&acme.name, filter))
            .await;
        assert_invalid(result, "INVALID_ARGUMENT", "filter");
    }
    let result = admin
        .list_audit_records(req::list_audit_records("acme", ""))
        .await;
    assert_invalid(result, "INVALID_ARGUMENT", "parent");
});
