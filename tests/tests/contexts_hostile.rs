//! Bad and hostile input to ContextService: deep nesting, documents over the size quota,
//! non-object roots, non-finite numbers, malformed names, oversized and malformed
//! patches, out-of-range settings. Every case is a canonical error, writes nothing (the
//! head and the version list stay as they were) and leaves the server serving.

mod contexts_support;

use agentry_e2e::*;
use contexts_support::*;
use prost_types::value::Kind;
use tonic::Code;

/// Workspace `acme` (with `quotas`), project `web` and context `doc` holding
/// `{"ok": true}` as version 1.
async fn setup(app: &TestApp, quotas: pb::Quotas) -> (Tenant, Ctx) {
    let acme = app.tenant_with_quotas("acme", quotas).await;
    acme.project("web").await;
    let client = contexts(app.addr, &acme.admin_key).await;
    let (ctx, _) = Ctx::create(
        &client,
        &acme.project_name("web"),
        "doc",
        keeping(0),
        Some(json!({"ok": true})),
    )
    .await;
    (acme, ctx)
}

/// The context still has exactly its first version, and still answers.
async fn assert_untouched(ctx: &Ctx) {
    assert_eq!(ctx.version_numbers().await, [1]);
    assert_eq!(ctx.get().await.head_version, 1);
    assert_eq!(ctx.doc(0).await, json!({"ok": true}));
}

fn raw(kind: Kind) -> prost_types::Value {
    prost_types::Value { kind: Some(kind) }
}

backend_tests!(
    deeply_nested_context_documents_are_invalid_argument,
    |app| async move {
        let (acme, ctx) = setup(&app, pb::Quotas::default()).await;
        // Moderate nesting is a normal document.
        let (fine, _) = Ctx::create(
            &ctx.client,
            &acme.project_name("web"),
            "fine",
            keeping(0),
            Some(nested(20)),
        )
        .await;
        assert_eq!(fine.doc(0).await, nested(20));

        let deep = nested(200);
        let attempts = [
            ctx.try_write(data(deep.clone())).await,
            ctx.try_write(merge(deep.clone())).await,
            ctx.try_write(patch(
                json!([{"op": "add", "path": "/deep", "value": deep}]),
            ))
            .await,
            ctx.try_write(data(json!({"list": [[[[[[[[[[nested(190)]]]]]]]]]]})))
                .await,
        ];
        for result in attempts {
            assert_eq!(result.unwrap_err().code(), Code::InvalidArgument);
        }
        let created = ctx
            .client
            .clone()
            .create_context(create(
                &acme.project_name("web"),
                "deep",
                keeping(0),
                Some(nested(200)),
            ))
            .await;
        assert_eq!(created.unwrap_err().code(), Code::InvalidArgument);
        assert_untouched(&ctx).await;
    }
);

backend_tests!(
    context_documents_over_the_size_quota_are_refused,
    |app| async move {
        let quotas = pb::Quotas {
            max_context_bytes: 1024,
            ..Default::default()
        };
        let (acme, ctx) = setup(&app, quotas).await;
        // `{"s":"…"}` is 8 bytes plus the string, counted in canonical UTF-8 bytes.
        let sized = |text: String| json!({ "s": text });
        let too_large = [
            sized("x".repeat(1017)),
            sized("é".repeat(509)),
            sized("\n".repeat(509)),
        ];
        for doc in &too_large {
            let result = ctx.try_write(data(doc.clone())).await;
            assert_invalid(result, "DOCUMENT_TOO_LARGE", "data");
        }
        let grow = ctx.try_write(merge(sized("x".repeat(2000)))).await;
        assert_status(grow, Code::InvalidArgument, "DOCUMENT_TOO_LARGE");
        let grow = ctx
            .try_write(patch(
                json!([{"op": "add", "path": "/s", "value": "x".repeat(2000)}]),
            ))
            .await;
        assert_status(grow, Code::InvalidArgument, "DOCUMENT_TOO_LARGE");
        let create_big = ctx
            .client
            .clone()
            .create_context(create(
                &acme.project_name("web"),
                "big",
                keeping(0),
                Some(too_large[0].clone()),
            ))
            .await;
        assert_status(create_big, Code::InvalidArgument, "DOCUMENT_TOO_LARGE");
        let mut big = ctx.clone();
        big.name = format!("{}/contexts/big", acme.project_name("web"));
        assert_eq!(
            big.try_get().await.unwrap_err().code(),
            Code::NotFound,
            "nothing created"
        );
        assert_untouched(&ctx).await;

        // Exactly at the limit is fine, in bytes, whatever the characters.
        let at_limit = ctx.write_doc(sized("é".repeat(508))).await;
        assert_eq!(at_limit.size_bytes, 1024);
        let at_limit = ctx.write_doc(sized("x".repeat(1016))).await;
        assert_eq!(at_limit.size_bytes, 1024);
        assert_eq!(ctx.head().await, 3);
    }
);

backend_tests!(
    context_documents_over_the_default_quota_of_one_mib_are_refused,
    |app| async move {
        let (_, ctx) = setup(&app, pb::Quotas::default()).await;
        let result = ctx.try_write(data(json!({"s": "x".repeat(1 << 20)}))).await;
        assert_invalid(result, "DOCUMENT_TOO_LARGE", "data");
        assert_untouched(&ctx).await;
        let fits = ctx.write_doc(json!({"s": "x".repeat((1 << 20) - 8)})).await;
        assert_eq!(fits.size_bytes, 1 << 20);
    }
);

backend_tests!(context_document_roots_must_be_objects, |app| async move {
    let (acme, ctx) = setup(&app, pb::Quotas::default()).await;
    let roots = [
        to_value(json!([1, 2])),
        to_value(json!("text")),
        to_value(json!(42)),
        to_value(json!(true)),
        to_value(json!(null)),
        prost_types::Value { kind: None },
    ];
    for (i, root) in roots.into_iter().enumerate() {
        let result = ctx
            .try_write(pb::write_context_request::Change::Data(root.clone()))
            .await;
        assert_invalid(result, "INVALID_ARGUMENT", "data");
        let request = pb::CreateContextRequest {
            data: Some(root),
            ..create(
                &acme.project_name("web"),
                &format!("root-{i}"),
                keeping(0),
                None,
            )
        };
        let created = ctx.client.clone().create_context(request).await;
        assert_invalid(created, "INVALID_ARGUMENT", "data");
    }
    // Patches that would leave a non-object root.
    for change in [
        merge(json!(["list"])),
        merge(json!(null)),
        patch(json!([{"op": "replace", "path": "", "value": [1]}])),
        patch(json!([{"op": "replace", "path": "", "value": "text"}])),
    ] {
        let result = ctx.try_write(change).await;
        assert_eq!(result.unwrap_err().code(), Code::InvalidArgument);
    }
    let remove_root = ctx
        .try_write(patch(json!([{"op": "remove", "path": ""}])))
        .await;
    assert_eq!(remove_root.unwrap_err().code(), Code::InvalidArgument);
    // Replacing the root with another object is an ordinary write.
    let listed = ctx.client.clone();
    let request = pb::ListContextsRequest {
        parent: acme.project_name("web"),
        ..Default::default()
    };
    assert_eq!(
        listed
            .clone()
            .list_contexts(request)
            .await
            .must()
            .contexts
            .len(),
        1
    );
    assert_untouched(&ctx).await;
    let v2 = ctx
        .write(patch(
            json!([{"op": "replace", "path": "", "value": {"new": 1}}]),
        ))
        .await;
    assert_eq!(v2.version, 2);
    assert_eq!(ctx.doc(0).await, json!({"new": 1}));
});

backend_tests!(
    non_finite_numbers_in_contexts_are_invalid_argument,
    |app| async move {
        let (_, ctx) = setup(&app, pb::Quotas::default()).await;
        for n in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let doc = raw(Kind::StructValue(prost_types::Struct {
                fields: [("n".to_owned(), raw(Kind::NumberValue(n)))].into(),
            }));
            let result = ctx
                .try_write(pb::write_context_request::Change::Data(doc.clone()))
                .await;
            assert_eq!(result.unwrap_err().code(), Code::InvalidArgument, "{n}");
            let result = ctx
                .try_write(pb::write_context_request::Change::MergePatch(doc))
                .await;
            assert_eq!(result.unwrap_err().code(), Code::InvalidArgument, "{n}");
        }
        assert_untouched(&ctx).await;
    }
);

backend_tests!(
    malformed_context_ids_and_names_are_refused,
    |app| async move {
        let (acme, ctx) = setup(&app, pb::Quotas::default()).await;
        let web = acme.project_name("web");
        let mut ids: Vec<String> = [
            "",
            "Bad",
            "under_score",
            "ünïcode",
            "a/b",
            "-lead",
            "9lives",
            "a b",
            "a\u{0}b",
            "a.b",
            "😀",
        ]
        .map(String::from)
        .into();
        ids.push("a".repeat(64));
        ids.push("a".repeat(100_000));
        for id in &ids {
            let result = ctx
                .client
                .clone()
                .create_context(create(&web, id, keeping(0), Some(json!({}))))
                .await;
            assert_invalid(result, "INVALID_ARGUMENT", "context_id");
        }
        let names = [
            String::new(),
            format!("{web}/contexts/"),
            format!("{web}/contexts/ünïcode"),
            format!("{web}/contexts/Doc"),
            format!("{web}/contexts/doc/versions/1"),
            format!("{}/contexts/doc", acme.name),
            format!("{web}/instances/doc"),
            format!("{web}//contexts/doc"),
            format!("/{web}/contexts/doc"),
            format!("{web}/contexts/{}", "a".repeat(64)),
        ];
        for name in names {
            let mut bad = ctx.clone();
            bad.name = name.clone();
            assert_invalid(bad.try_get().await, "INVALID_ARGUMENT", "name");
            assert_invalid(
                bad.try_write(data(json!({}))).await,
                "INVALID_ARGUMENT",
                "name",
            );
            assert_invalid(bad.try_read(0).await, "INVALID_ARGUMENT", "name");
            assert_invalid(bad.try_rollback(1).await, "INVALID_ARGUMENT", "name");
            assert_invalid(bad.try_diff(1, 1).await, "INVALID_ARGUMENT", "name");
            assert_invalid(bad.try_watch(0).await, "INVALID_ARGUMENT", "name");
            assert_invalid(bad.delete().await, "INVALID_ARGUMENT", "name");
        }
        let bad_parent = ctx
            .client
            .clone()
            .create_context(create(
                "workspaces/acme/projects/Web",
                "x",
                keeping(0),
                None,
            ))
            .await;
        assert_invalid(bad_parent, "INVALID_ARGUMENT", "parent");
        assert_untouched(&ctx).await;
    }
);

backend_tests!(
    oversized_and_malformed_context_patches_are_refused,
    |app| async move {
        let (_, ctx) = setup(&app, pb::Quotas::default()).await;
        let test_op = json!({"op": "test", "path": "/ok", "value": true});
        let huge = json!(vec![test_op.clone(); 10_001]);
        assert_invalid(
            ctx.try_write(patch(huge)).await,
            "INVALID_ARGUMENT",
            "json_patch",
        );
        // At the limit the patch is applied (here: tests only, so a noop).
        let at_limit = ctx
            .try_write(patch(json!(vec![test_op; 10_000])))
            .await
            .unwrap();
        assert!(at_limit.noop);
        // An empty patch changes nothing.
        assert!(ctx.try_write(patch(json!([]))).await.unwrap().noop);
        for op in ["", "ADD", "append", "delete"] {
            let result = ctx
                .try_write(patch(json!([{"op": op, "path": "/x", "value": 1}])))
                .await;
            assert_eq!(
                result.unwrap_err().code(),
                Code::InvalidArgument,
                "op {op:?}"
            );
        }
        assert_untouched(&ctx).await;
    }
);

backend_tests!(
    out_of_range_context_settings_are_refused,
    |app| async move {
        let (acme, ctx) = setup(&app, pb::Quotas::default()).await;
        let web = acme.project_name("web");
        for keep_last in [-1, 1_000_001, i32::MIN] {
            let result = ctx
                .client
                .clone()
                .create_context(create(&web, "kept", keeping(keep_last), None))
                .await;
            assert_invalid(result, "INVALID_ARGUMENT", "context.keep_last");
        }
        let long_description = pb::WriteContextRequest {
            description: "d".repeat(100_000),
            ..write(&ctx.name, data(json!({"x": 1})))
        };
        assert_invalid(
            ctx.send(long_description).await,
            "INVALID_ARGUMENT",
            "description",
        );
        for request_id in ["r".repeat(129), "with space".into(), "ünï".into()] {
            let request = pb::WriteContextRequest {
                request_id,
                ..write(&ctx.name, data(json!({"x": 1})))
            };
            assert_invalid(ctx.send(request).await, "INVALID_ARGUMENT", "request_id");
        }
        assert_eq!(
            ctx.try_read(-1).await.unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_untouched(&ctx).await;
    }
);
