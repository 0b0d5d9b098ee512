//! ContextService writes: creating contexts, compare-and-swap under contention, noop
//! detection, request_id replay, the version header (op, sha256 of canonical JSON,
//! size, author) and server-side merge and JSON patches.

mod contexts_support;

use agentry_e2e::*;
use contexts_support::*;
use pb::{ContextOp, Role};
use tonic::Code;

/// Workspace `acme`, project `web`, a ROOT context client.
async fn setup(app: &TestApp) -> (Tenant, Contexts) {
    let acme = app.tenant("acme").await;
    acme.project("web").await;
    let client = contexts(app.addr, &acme.admin_key).await;
    (acme, client)
}

/// A CAS client incrementing `n`: read the head, write n + 1 expecting that version,
/// retry on VERSION_CONFLICT. Like a real client it backs off with jitter, widening its
/// window on a conflict and narrowing it on success, so that 16 writers spend their time
/// writing rather than colliding. Writers alternate whole documents and JSON patches.
struct Writer {
    ctx: Ctx,
    by_patch: bool,
    seed: u64,
    window_ms: u64,
    conflicts: u64,
}

impl Writer {
    fn new(ctx: Ctx, id: u64) -> Self {
        Self {
            ctx,
            by_patch: id.is_multiple_of(2),
            seed: 0x9e37_79b9_7f4a_7c15 ^ (id + 1),
            window_ms: 1,
            conflicts: 0,
        }
    }

    /// xorshift64, for the jitter.
    fn random(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    async fn increment(&mut self) {
        loop {
            let head = self.ctx.try_read(0).await.expect("read the head");
            let n = doc_of(&head)["n"].as_i64().expect("n is a number");
            let change = if self.by_patch {
                patch(json!([{"op": "replace", "path": "/n", "value": n + 1}]))
            } else {
                data(json!({"n": n + 1}))
            };
            match self
                .ctx
                .send(cas(&self.ctx.name, change, head.version))
                .await
            {
                Ok(written) => {
                    assert!(!written.noop);
                    let version = written.version.expect("a version");
                    assert_eq!(version.version, head.version + 1, "CAS wrote past the head");
                    self.window_ms = (self.window_ms / 2).max(1);
                    return;
                }
                Err(status) if status.code() == Code::Aborted => {
                    assert_status(Err::<(), _>(status), Code::Aborted, "VERSION_CONFLICT");
                    self.conflicts += 1;
                    self.window_ms = (self.window_ms * 2).min(256);
                    let pause = self.random() % self.window_ms;
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Err(status) => panic!("increment failed: {status:?}"),
            }
        }
    }
}

backend_tests!(
    concurrent_cas_increments_of_a_context_lose_nothing_and_leave_no_gaps,
    |app| async move {
        let (acme, client) = setup(&app).await;
        let (writers, increments) = (16u64, 100u64);
        let (ctx, _) = Ctx::create(
            &client,
            &acme.project_name("web"),
            "counter",
            keeping(5000),
            Some(json!({"n": 0})),
        )
        .await;
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let mut writer = Writer::new(ctx, w);
                    for _ in 0..increments {
                        writer.increment().await;
                    }
                    writer.conflicts
                })
            })
            .collect();
        // About 30 s on a loaded 2-core machine; far slower means reads or writes degrade
        // with history length or contention, which should fail here rather than hang CI.
        let conflicts = tokio::time::timeout(std::time::Duration::from_secs(120), async {
            let mut conflicts = 0;
            for task in tasks {
                conflicts += task.await.expect("writer task");
            }
            conflicts
        })
        .await
        .expect("1600 CAS increments by 16 writers took over 120 s");
        let total = (writers * increments) as i64;
        assert!(
            conflicts > 0,
            "the writers never collided: no contention was tested"
        );
        let meta = ctx.get().await;
        assert_eq!(meta.head_version, total + 1, "{conflicts} conflicts");
        assert_eq!(meta.first_version, 1);
        assert_eq!(ctx.doc(0).await, json!({"n": total}));

        // Every version is there, and each one added exactly one to its predecessor.
        let mut versions = ctx.versions_where(pb::ContextVersionView::Full, "").await;
        versions.reverse();
        let numbers: Vec<i64> = versions.iter().map(|v| v.version).collect();
        assert_eq!(numbers, (1..=total + 1).collect::<Vec<_>>());
        for v in &versions {
            assert_eq!(
                doc_of(v),
                json!({"n": v.version - 1}),
                "version {}",
                v.version
            );
        }
    }
);

backend_tests!(
    create_context_reports_head_floor_and_owner,
    |app| async move {
        let (acme, client) = setup(&app).await;
        let web = acme.project_name("web");
        acme.instance_with_agent("api", "helper", "bot").await;
        acme.instance(
            "web",
            "bot",
            pb::Instance {
                agent: acme.agent_name("helper"),
                ..Default::default()
            },
        )
        .await;

        let (full, created) =
            Ctx::create(&client, &web, "full", keeping(7), Some(json!({"a": 1}))).await;
        assert_eq!((created.head_version, created.first_version), (1, 1));
        assert_eq!(created.keep_last, 7);
        let v1 = full.try_read(1).await.expect("version 1");
        assert_eq!(ContextOp::try_from(v1.op), Ok(ContextOp::Create));
        assert_eq!(v1.name, format!("{}/versions/1", full.name));

        // Without data there is no version yet, and keep_last 0 takes the workspace default.
        let (empty, created) = Ctx::create(&client, &web, "empty", keeping(0), None).await;
        assert_eq!((created.head_version, created.first_version), (0, 0));
        assert_eq!(created.keep_last, 50, "the default context_keep_last");
        assert_status(
            empty.try_read(0).await,
            Code::FailedPrecondition,
            "CONTEXT_EMPTY",
        );
        assert_eq!(empty.version_numbers().await, Vec::<i64>::new());
        // A write to an empty context becomes version 1 (a REPLACE).
        let v1 = empty.write_doc(json!({"x": true})).await;
        assert_eq!(v1.version, 1);
        assert_eq!(ContextOp::try_from(v1.op), Ok(ContextOp::Replace));
        assert_eq!((empty.get().await.first_version), 1);

        // The owner must be an existing instance of the same project.
        let owned = pb::Context {
            owner: acme.instance_name("web", "bot"),
            ..Default::default()
        };
        let (_, created) = Ctx::create(&client, &web, "owned", owned, None).await;
        assert_eq!(created.owner, acme.instance_name("web", "bot"));
        let foreign = pb::Context {
            owner: acme.instance_name("api", "bot"),
            ..Default::default()
        };
        let result = client
            .clone()
            .create_context(create(&web, "foreign", foreign, None))
            .await;
        assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
        let missing = pb::Context {
            owner: acme.instance_name("web", "ghost"),
            ..Default::default()
        };
        let result = client
            .clone()
            .create_context(create(&web, "orphan", missing, None))
            .await;
        assert_eq!(result.unwrap_err().code(), Code::NotFound);

        // ListContexts, with and without the owner filter.
        let list = |filter: String| {
            let mut client = client.clone();
            let parent = web.clone();
            async move {
                let request = pb::ListContextsRequest {
                    parent,
                    filter,
                    ..Default::default()
                };
                let listed = client.list_contexts(request).await.must();
                listed
                    .contexts
                    .into_iter()
                    .map(|c| c.name.rsplit('/').next().unwrap().to_owned())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(list(String::new()).await, ["empty", "full", "owned"]);
        let by_owner = format!("owner = \"{}\"", acme.instance_name("web", "bot"));
        assert_eq!(list(by_owner).await, ["owned"]);

        // Same id twice is ALREADY_EXISTS; a missing project is NOT_FOUND.
        let again = client
            .clone()
            .create_context(create(&web, "full", keeping(0), None))
            .await;
        assert_eq!(again.unwrap_err().code(), Code::AlreadyExists);
        let nowhere = client
            .clone()
            .create_context(create(&acme.project_name("nope"), "x", keeping(0), None))
            .await;
        assert_eq!(nowhere.unwrap_err().code(), Code::NotFound);
    }
);

backend_tests!(
    context_versions_record_op_hash_size_author_and_request,
    |app| async move {
        let (acme, _) = setup(&app).await;
        let (dev_key, dev_name) = named_key(&acme, Role::Developer).await;
        let dev = contexts(app.addr, &dev_key).await;
        let root = contexts(app.addr, &app.root_key).await;
        let (ctx, _) = Ctx::create(
            &dev,
            &acme.project_name("web"),
            "notes",
            keeping(0),
            Some(json!({"a": 1})),
        )
        .await;
        let v1 = ctx.try_read(1).await.unwrap();
        // sha256 of the bytes `{"a":1}`: the integral double 1.0 is canonical `1`.
        assert_eq!(
            v1.sha256,
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
        assert_eq!(v1.size_bytes, 7);
        assert_eq!(v1.author, dev_name);
        assert_eq!(doc_of(&v1), json!({"a": 1}));

        // Key order and nesting do not change the canonical form: keys sort at every level.
        let request = pb::WriteContextRequest {
            description: "reorder".into(),
            request_id: "req-2".into(),
            ..write(
                &ctx.name,
                data(json!({"z": [1.5, "é"], "a": {"y": true, "b": null}})),
            )
        };
        let v2 = ctx.with(&root).send(request).await.unwrap();
        let v2 = v2.version.unwrap();
        assert_eq!(v2.data, None, "WriteContext answers with a BASIC version");
        assert_eq!(v2.version, 2);
        assert_eq!(ContextOp::try_from(v2.op), Ok(ContextOp::Replace));
        // sha256 of `{"a":{"b":null,"y":true},"z":[1.5,"é"]}` (é as two UTF-8 bytes).
        assert_eq!(
            v2.sha256,
            "63ff26bb320db20da358d56b78a35f1341ba26058ac887e038057b7b122672ea"
        );
        assert_eq!(v2.size_bytes, 40);
        assert_eq!(v2.author, "root");
        assert_eq!(v2.description, "reorder");
        assert_eq!(v2.request_id, "req-2");

        let v3 = ctx.write(merge(json!({"m": 1}))).await;
        let v4 = ctx
            .write(patch(json!([{"op": "remove", "path": "/m"}])))
            .await;
        assert_eq!(ContextOp::try_from(v3.op), Ok(ContextOp::MergePatch));
        assert_eq!(ContextOp::try_from(v4.op), Ok(ContextOp::JsonPatch));
        assert_eq!(v4.sha256, v2.sha256, "same document, same hash");
        assert!(nanos(&v1.create_time) <= nanos(&v2.create_time));
        assert!(nanos(&v3.create_time) <= nanos(&v4.create_time));

        // ReadContext carries the same header as the write returned, plus the data.
        let read = ctx.try_read(2).await.unwrap();
        assert_eq!(
            pb::ContextVersion {
                data: None,
                ..read.clone()
            },
            v2
        );
        assert_eq!(
            doc_of(&read),
            json!({"a": {"b": null, "y": true}, "z": [1.5, "é"]})
        );
        assert_eq!(ctx.try_read(0).await.unwrap().version, 4);
        assert_eq!(ctx.try_read(99).await.unwrap_err().code(), Code::NotFound);
        assert_eq!(ctx.get().await.head_version, 4);
    }
);

backend_tests!(
    context_expected_version_guards_writes_and_equal_documents_are_noops,
    |app| async move {
        let (acme, client) = setup(&app).await;
        let web = acme.project_name("web");
        let (ctx, _) = Ctx::create(&client, &web, "cas", keeping(0), None).await;

        // expected_version 0: only while the context has no versions.
        let first = ctx.send(cas(&ctx.name, data(json!({"a": 1})), 0)).await;
        assert_eq!(first.unwrap().version.unwrap().version, 1);
        let again = ctx.send(cas(&ctx.name, data(json!({"a": 2})), 0)).await;
        assert_status_meta(
            again,
            Code::Aborted,
            "VERSION_CONFLICT",
            "current_version",
            1,
        );
        let stale = ctx.send(cas(&ctx.name, merge(json!({"b": 1})), 5)).await;
        assert_status_meta(
            stale,
            Code::Aborted,
            "VERSION_CONFLICT",
            "current_version",
            1,
        );
        let ok = ctx.send(cas(&ctx.name, merge(json!({"b": 1})), 1)).await;
        assert_eq!(ok.unwrap().version.unwrap().version, 2);
        assert_eq!(ctx.doc(0).await, json!({"a": 1, "b": 1}));

        // A result equal to the head appends nothing, whatever the change kind.
        let head = ctx.try_read(0).await.unwrap();
        for change in [
            data(json!({"b": 1, "a": 1})),
            data(json!({"b": 1.0, "a": 1})),
            merge(json!({"a": 1})),
            merge(json!({"absent": null})),
            patch(json!([{"op": "test", "path": "/a", "value": 1}])),
            patch(json!([{"op": "replace", "path": "/b", "value": 1}])),
        ] {
            let written = ctx.send(cas(&ctx.name, change, 2)).await.unwrap();
            assert!(written.noop);
            let version = written.version.unwrap();
            assert_eq!(version.version, 2);
            assert_eq!(version.sha256, head.sha256);
        }
        assert_eq!(ctx.version_numbers().await, [2, 1]);
        assert_eq!(ctx.head().await, 2);

        // A CAS conflict is checked before the noop test.
        let conflict = ctx
            .send(cas(&ctx.name, data(json!({"a": 1, "b": 1})), 1))
            .await;
        assert_status_meta(
            conflict,
            Code::Aborted,
            "VERSION_CONFLICT",
            "current_version",
            2,
        );

        // A negative expected_version and a missing change are invalid.
        let negative = ctx.send(cas(&ctx.name, data(json!({})), -1)).await;
        assert_status(negative, Code::InvalidArgument, "INVALID_ARGUMENT");
        let nothing = ctx
            .send(pb::WriteContextRequest {
                name: ctx.name.clone(),
                ..Default::default()
            })
            .await;
        assert_invalid(nothing, "INVALID_ARGUMENT", "change");
        assert_eq!(ctx.head().await, 2);
    }
);

backend_tests!(
    a_retried_context_write_returns_the_first_result_and_writes_once,
    |app| async move {
        let (acme, client) = setup(&app).await;
        let web = acme.project_name("web");
        let (ctx, _) = Ctx::create(&client, &web, "retry", keeping(0), Some(json!({"n": 0}))).await;
        let request = pb::WriteContextRequest {
            request_id: "inc-1".into(),
            ..write(&ctx.name, merge(json!({"n": 1})))
        };
        let first = ctx.send(request.clone()).await.unwrap();
        // Another writer moves the head; the retry still answers with the first result.
        ctx.write_doc(json!({"n": 100})).await;
        let retried = ctx.send(request.clone()).await.unwrap();
        assert_eq!(retried, first);
        assert_eq!(first.version.as_ref().unwrap().version, 2);
        assert_eq!(ctx.version_numbers().await, [3, 2, 1]);
        assert_eq!(ctx.doc(0).await, json!({"n": 100}));

        // The same id for a different write is refused.
        let different = pb::WriteContextRequest {
            request_id: "inc-1".into(),
            ..write(&ctx.name, merge(json!({"n": 2})))
        };
        assert_status(
            ctx.send(different).await,
            Code::InvalidArgument,
            "REQUEST_ID_REUSED",
        );

        // Rollbacks replay too.
        let rollback = pb::RollbackContextRequest {
            request_id: "rb-1".into(),
            ..contexts_support::rollback(&ctx.name, 1)
        };
        let first = client
            .clone()
            .rollback_context(rollback.clone())
            .await
            .must();
        let retried = client.clone().rollback_context(rollback).await.must();
        assert_eq!(first, retried);
        assert_eq!(ctx.version_numbers().await, [4, 3, 2, 1]);
    }
);

backend_tests!(context_merge_patches_follow_rfc_7396, |app| async move {
    let (acme, client) = setup(&app).await;
    let (ctx, _) = Ctx::create(
        &client,
        &acme.project_name("web"),
        "merge",
        keeping(0),
        Some(json!({
            "title": "plan",
            "drop": 1,
            "nested": {"keep": 1, "change": "a", "gone": true, "deep": {"x": 1}},
            "list": [1, 2, 3],
            "objects": [{"a": 1}]
        })),
    )
    .await;
    let cases = [
        // null removes; absent keys stay.
        (
            json!({"drop": null}),
            json!({"title": "plan", "nested": {"keep": 1, "change": "a", "gone": true, "deep": {"x": 1}}, "list": [1, 2, 3], "objects": [{"a": 1}]}),
        ),
        // nested objects merge recursively, with null removing inside them too.
        (
            json!({"nested": {"change": "b", "gone": null, "deep": {"y": 2}, "new": {"z": null}}}),
            json!({"title": "plan", "nested": {"keep": 1, "change": "b", "deep": {"x": 1, "y": 2}, "new": {}}, "list": [1, 2, 3], "objects": [{"a": 1}]}),
        ),
        // arrays are replaced wholesale, never merged element by element.
        (
            json!({"list": [9], "objects": [{"b": 2}]}),
            json!({"title": "plan", "nested": {"keep": 1, "change": "b", "deep": {"x": 1, "y": 2}, "new": {}}, "list": [9], "objects": [{"b": 2}]}),
        ),
        // a non-object member replaces an object, and an object replaces a scalar.
        (
            json!({"nested": "flat", "title": {"text": "plan"}}),
            json!({"title": {"text": "plan"}, "nested": "flat", "list": [9], "objects": [{"b": 2}]}),
        ),
    ];
    for (i, (merge_patch, expected)) in cases.into_iter().enumerate() {
        let v = ctx.write(merge(merge_patch)).await;
        assert_eq!(v.version, i as i64 + 2);
        assert_eq!(ctx.doc(0).await, expected, "merge case {i}");
    }
    // A merge patch into an empty context applies to {}.
    let (empty, _) = Ctx::create(
        &client,
        &acme.project_name("web"),
        "blank",
        keeping(0),
        None,
    )
    .await;
    let v = empty.write(merge(json!({"a": {"b": 1}, "c": null}))).await;
    assert_eq!(v.version, 1);
    assert_eq!(empty.doc(0).await, json!({"a": {"b": 1}}));
    // A non-object merge patch would make the root a non-object: refused, nothing written.
    let head = ctx.head().await;
    for bad in [json!([1]), json!("text"), json!(3)] {
        let result = ctx.try_write(merge(bad)).await;
        assert_eq!(result.unwrap_err().code(), Code::InvalidArgument);
    }
    assert_eq!(ctx.head().await, head);
});

backend_tests!(context_json_patches_follow_rfc_6902, |app| async move {
    let (acme, client) = setup(&app).await;
    let start = json!({
        "steps": [{"id": "a", "tags": ["x"]}, {"id": "b", "tags": []}],
        "owner": "ann",
        "meta": {"n": 1},
        "a/b": 1,
        "m~n": 2
    });
    let (ctx, _) = Ctx::create(
        &client,
        &acme.project_name("web"),
        "patch",
        keeping(0),
        Some(start.clone()),
    )
    .await;
    let ops = json!([
        {"op": "test", "path": "/owner", "value": "ann"},
        {"op": "add", "path": "/steps/1/tags/-", "value": "y"},
        {"op": "add", "path": "/steps/0/tags/0", "value": "first"},
        {"op": "add", "path": "/steps/-", "value": {"id": "c", "tags": []}},
        {"op": "replace", "path": "/owner", "value": "bob"},
        {"op": "remove", "path": "/meta/n"},
        {"op": "move", "from": "/steps/0", "path": "/steps/2"},
        {"op": "copy", "from": "/steps/0/id", "path": "/meta/first"},
        {"op": "replace", "path": "/a~1b", "value": 10},
        {"op": "remove", "path": "/m~0n"},
        {"op": "test", "path": "/steps/2/tags", "value": ["first", "x"]}
    ]);
    let expected = apply_ops(&start, &ops);
    assert_eq!(
        expected,
        json!({
            "steps": [{"id": "b", "tags": ["y"]}, {"id": "c", "tags": []}, {"id": "a", "tags": ["first", "x"]}],
            "owner": "bob",
            "meta": {"first": "b"},
            "a/b": 10
        })
    );
    let v2 = ctx.write(patch(ops)).await;
    assert_eq!(v2.version, 2);
    assert_eq!(ctx.doc(0).await, expected);

    // A failing test changes nothing, even after ops that would have applied.
    let failing = ctx
        .try_write(patch(json!([
            {"op": "replace", "path": "/owner", "value": "eve"},
            {"op": "test", "path": "/owner", "value": "ann"}
        ])))
        .await;
    assert_status(failing, Code::FailedPrecondition, "PATCH_TEST_FAILED");
    let missing_test = ctx
        .try_write(patch(json!([{"op": "test", "path": "/nope", "value": 1}])))
        .await;
    assert_status(missing_test, Code::FailedPrecondition, "PATCH_TEST_FAILED");

    // Malformed patches are INVALID_PATCH and change nothing either.
    for bad in [
        json!([{"op": "add", "path": "meta", "value": 1}]),
        json!([{"op": "remove", "path": "/absent"}]),
        json!([{"op": "replace", "path": "/meta/nope", "value": 1}]),
        json!([{"op": "add", "path": "/steps/9", "value": 1}]),
        json!([{"op": "add", "path": "/missing/child", "value": 1}]),
        json!([{"op": "move", "from": "/nope", "path": "/x"}]),
        json!([{"op": "move", "from": "/meta", "path": "/meta/inner"}]),
        json!([{"op": "add", "path": "/owner/x", "value": 1}]),
        json!([{"op": "remove", "path": "/steps/01"}]),
        json!([{"op": "add", "path": "/x"}]),
        json!([{"op": "add", "path": "/ok", "value": 1}, {"op": "remove", "path": "/absent"}]),
    ] {
        let result = ctx.try_write(patch(bad.clone())).await;
        let status = assert_status(result, Code::InvalidArgument, "INVALID_PATCH");
        assert!(
            violation_fields(&status)
                .iter()
                .any(|f| f.starts_with("json_patch")),
            "{bad}: {status:?}"
        );
    }
    let unknown = ctx
        .try_write(patch(json!([{"op": "frobnicate", "path": "/a"}])))
        .await;
    assert_invalid(unknown, "INVALID_PATCH", "json_patch.operations[0].op");
    assert_eq!(ctx.version_numbers().await, [2, 1]);
    assert_eq!(ctx.doc(0).await, expected);
});
