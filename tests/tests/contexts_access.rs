//! Who may do what with contexts: every workspace role reads and watches; ADMIN,
//! DEVELOPER and WORKER write; deleting a context (its whole history) takes ADMIN or
//! DEVELOPER; a key never reaches another workspace's contexts, whether they exist or
//! not; and calls without a key are refused.

mod contexts_support;

use std::time::Duration;

use agentry_e2e::*;
use contexts_support::*;
use pb::Role;
use tonic::{Code, Status};

/// Workspace `acme` with project `web` and context `plan` holding versions 1 and 2.
async fn setup(app: &TestApp) -> (Tenant, Ctx) {
    let acme = app.tenant("acme").await;
    acme.project("web").await;
    let admin = contexts(app.addr, &acme.admin_key).await;
    let (ctx, _) = Ctx::create(
        &admin,
        &acme.project_name("web"),
        "plan",
        keeping(0),
        Some(json!({"v": 1})),
    )
    .await;
    ctx.write_doc(json!({"v": 2})).await;
    (acme, ctx)
}

/// Every read of `ctx` through its client; panics on the first failure.
async fn reads_succeed(ctx: &Ctx, project: &str) {
    ctx.get().await;
    let list = pb::ListContextsRequest {
        parent: project.into(),
        ..Default::default()
    };
    ctx.client.clone().list_contexts(list).await.must();
    let head = ctx.get().await.head_version;
    assert_eq!(ctx.try_read(0).await.expect("ReadContext").version, head);
    assert_eq!(
        ctx.version_numbers().await,
        (1..=head).rev().collect::<Vec<_>>()
    );
    ctx.try_diff(1, 2).await.expect("DiffContextVersions");
    let mut stream = ctx.watch(0).await;
    assert_eq!(next_version(&mut stream).await.version, 1);
}

/// Each write a key could attempt on `ctx`, as (method, result).
async fn attempt_writes(ctx: &Ctx, project: &str) -> Vec<(&'static str, Result<(), Status>)> {
    let mut client = ctx.client.clone();
    let create = create(project, "other", keeping(0), Some(json!({})));
    vec![
        (
            "CreateContext",
            client.create_context(create).await.map(|_| ()),
        ),
        (
            "WriteContext",
            ctx.try_write(merge(json!({"w": 1}))).await.map(|_| ()),
        ),
        ("RollbackContext", ctx.try_rollback(1).await.map(|_| ())),
    ]
}

backend_tests!(
    readers_read_and_watch_contexts_but_cannot_write,
    |app| async move {
        let (acme, ctx) = setup(&app).await;
        let project = acme.project_name("web");
        let reader = ctx.with(&contexts(app.addr, &acme.key(Role::Reader).await).await);
        reads_succeed(&reader, &project).await;
        for (method, result) in attempt_writes(&reader, &project).await {
            let status = result.expect_err(method);
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{method}: {status:?}"
            );
            assert_status(
                Err::<(), _>(status),
                Code::PermissionDenied,
                "ROLE_NOT_ALLOWED",
            );
        }
        assert_status(
            reader.delete().await,
            Code::PermissionDenied,
            "ROLE_NOT_ALLOWED",
        );
        assert_eq!(ctx.version_numbers().await, [2, 1]);
        assert!(ctx.try_get().await.is_ok());
    }
);

backend_tests!(
    workers_and_developers_write_contexts_but_only_developers_delete,
    |app| async move {
        let (acme, ctx) = setup(&app).await;
        let project = acme.project_name("web");
        for (role, id) in [(Role::Worker, "by-worker"), (Role::Developer, "by-dev")] {
            let (key, key_name) = named_key(&acme, role).await;
            let client = contexts(app.addr, &key).await;
            let as_role = ctx.with(&client);
            reads_succeed(&as_role, &project).await;
            let written = as_role.write(merge(json!({"by": id}))).await;
            assert_eq!(written.author, key_name);
            let rolled = as_role.try_rollback(2).await.expect("RollbackContext");
            assert_eq!(rolled.version.unwrap().author, key_name);
            let (own, _) = Ctx::create(&client, &project, id, keeping(0), None).await;
            own.write_doc(json!({"mine": true})).await;
            let deleted = own.delete().await;
            if role == Role::Worker {
                assert_status(deleted, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
                assert!(own.try_get().await.is_ok(), "the refused delete deleted");
            } else {
                deleted.expect("a developer deletes a context");
                assert_eq!(own.try_get().await.unwrap_err().code(), Code::NotFound);
            }
        }
        assert_eq!(ctx.head().await, 6);
    }
);

backend_tests!(
    keys_of_another_workspace_never_reach_its_contexts,
    |app| async move {
        let (acme, ctx) = setup(&app).await;
        let beta = app.tenant("beta").await;
        beta.project("web").await;
        let project = acme.project_name("web");
        let foreign = contexts(app.addr, &beta.admin_key).await;
        // The same answer for an existing context and a missing one.
        let mut missing = ctx.with(&foreign);
        missing.name = format!("{project}/contexts/missing");
        for target in [ctx.with(&foreign), missing] {
            let mut results: Vec<(&str, Result<(), Status>)> = vec![
                ("GetContext", target.try_get().await.map(|_| ())),
                ("ReadContext", target.try_read(0).await.map(|_| ())),
                (
                    "DiffContextVersions",
                    target.try_diff(1, 2).await.map(|_| ()),
                ),
                (
                    "ListContextVersions",
                    target
                        .list_page(pb::ContextVersionView::Basic, "", 0, "")
                        .await
                        .map(|_| ()),
                ),
                ("WatchContext", target.try_watch(0).await.map(|_| ())),
                ("DeleteContext", target.delete().await),
            ];
            results.extend(attempt_writes(&target, &project).await);
            let list = pb::ListContextsRequest {
                parent: project.clone(),
                ..Default::default()
            };
            let listed = foreign.clone().list_contexts(list).await.map(|_| ());
            results.push(("ListContexts", listed));
            for (method, result) in results {
                let status = result.expect_err(method);
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{method}: {status:?}"
                );
                assert_status(
                    Err::<(), _>(status),
                    Code::PermissionDenied,
                    "WORKSPACE_MISMATCH",
                );
            }
        }
        assert_eq!(ctx.version_numbers().await, [2, 1]);
        // An open watch of acme sees nothing from beta's attempts.
        let mut stream = ctx.watch(-1).await;
        let _ = ctx
            .with(&foreign)
            .try_write(data(json!({"evil": true})))
            .await;
        assert_quiet(&mut stream, Duration::from_millis(1200)).await;
    }
);

backend_tests!(
    context_calls_without_a_valid_key_are_unauthenticated,
    |app| async move {
        let (_, ctx) = setup(&app).await;
        for key in ["", "agk_not_a_real_key"] {
            let anonymous = ctx.with(&contexts(app.addr, key).await);
            assert_eq!(
                anonymous.try_get().await.unwrap_err().code(),
                Code::Unauthenticated
            );
            let write = anonymous.try_write(data(json!({"x": 1}))).await;
            assert_eq!(write.unwrap_err().code(), Code::Unauthenticated);
            assert_eq!(
                anonymous.try_watch(0).await.unwrap_err().code(),
                Code::Unauthenticated
            );
        }
        assert_eq!(ctx.version_numbers().await, [2, 1]);
    }
);

backend_tests!(
    deleting_a_project_with_contexts_needs_force,
    |app| async move {
        let (acme, ctx) = setup(&app).await;
        let project = acme.project_name("web");
        let mut stream = ctx.watch(2).await;
        let refused = acme
            .admin
            .clone()
            .delete_project(req::delete_project(&project))
            .await;
        assert_status(refused, Code::FailedPrecondition, "HAS_CHILDREN");
        assert_eq!(ctx.version_numbers().await, [2, 1]);
        acme.admin
            .clone()
            .delete_project(req::delete_project(&project).force())
            .await
            .must();
        assert_eq!(ctx.try_get().await.unwrap_err().code(), Code::NotFound);
        assert_eq!(ctx.try_read(1).await.unwrap_err().code(), Code::NotFound);
        // The open watch learns that its context is gone.
        match next_within(&mut stream, Duration::from_secs(5)).await {
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
            Ok(other) => panic!("expected NOT_FOUND after the project went, got {other:?}"),
        }
    }
);
