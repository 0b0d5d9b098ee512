//! ContextService history: listing versions (order, paging, views, filters), diffs that
//! really turn one version into another, and rollback, which appends instead of
//! rewriting and stores no document twice.

mod contexts_support;

use std::time::Duration;

use agentry_e2e::*;
use contexts_support::*;
use pb::{ContextOp, ContextVersionView as View, Role};
use tonic::Code;

fn numbers(versions: &[pb::ContextVersion]) -> Vec<i64> {
    versions.iter().map(|v| v.version).collect()
}

backend_tests!(
    context_versions_list_newest_first_in_pages_with_views_and_filters,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let (dev_key, dev) = named_key(&acme, Role::Developer).await;
        let (worker_key, worker) = named_key(&acme, Role::Worker).await;
        let root = contexts(app.addr, &app.root_key).await;
        let (ctx, _) = Ctx::create(
            &root,
            &acme.project_name("web"),
            "log",
            keeping(0),
            Some(json!({"step": 1})),
        )
        .await;
        let as_dev = ctx.with(&contexts(app.addr, &dev_key).await);
        let as_worker = ctx.with(&contexts(app.addr, &worker_key).await);
        // Apart in time, so that create_time filters have something to separate.
        let pause = || tokio::time::sleep(Duration::from_millis(5));
        pause().await;
        as_dev.write_doc(json!({"step": 2})).await;
        pause().await;
        as_worker.write(merge(json!({"step": 3}))).await;
        pause().await;
        as_dev.write(merge(json!({"step": 4}))).await;
        pause().await;
        as_worker
            .write(patch(
                json!([{"op": "replace", "path": "/step", "value": 5}]),
            ))
            .await;
        pause().await;
        let v6 = as_dev.try_rollback(2).await.unwrap().version.unwrap();
        assert_eq!(v6.version, 6);

        // Newest first; BASIC (the default) without data, FULL with it.
        let basic = ctx.list_page(View::Unspecified, "", 0, "").await.unwrap();
        assert_eq!(numbers(&basic.versions), [6, 5, 4, 3, 2, 1]);
        assert!(basic.versions.iter().all(|v| v.data.is_none()));
        assert!(basic.next_page_token.is_empty());
        let full = ctx.versions_where(View::Full, "").await;
        let steps: Vec<_> = full.iter().map(|v| doc_of(v)["step"].clone()).collect();
        assert_eq!(
            steps,
            [json!(2), json!(5), json!(4), json!(3), json!(2), json!(1)]
        );
        for v in &full {
            let read = ctx.try_read(v.version).await.unwrap();
            assert_eq!(&read, v, "FULL list entries equal ReadContext");
        }
        let authors: Vec<_> = full.iter().map(|v| v.author.as_str()).collect();
        assert_eq!(authors, [&dev, &worker, &dev, &worker, &dev, "root"]);

        // Pages of two, each token continuing where the last page stopped.
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let page = ctx.list_page(View::Basic, "", 2, &token).await.unwrap();
            pages.push(numbers(&page.versions));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, [vec![6, 5], vec![4, 3], vec![2, 1]]);
        let first = ctx.list_page(View::Basic, "", 2, "").await.unwrap();
        let elsewhere = ctx
            .list_page(View::Basic, "op = REPLACE", 2, &first.next_page_token)
            .await;
        assert_status(elsewhere, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
        let forged = ctx.list_page(View::Basic, "", 2, "AAAAAAAA").await;
        assert_status(forged, Code::InvalidArgument, "INVALID_PAGE_TOKEN");

        // Filters, alone and joined by AND.
        let t = |v: &pb::ContextVersion| rfc3339(&v.create_time);
        let at = |n: i64| full.iter().find(|v| v.version == n).unwrap();
        let cases: Vec<(String, Vec<i64>)> = vec![
            (format!("author = \"{dev}\""), vec![6, 4, 2]),
            ("author = \"root\"".into(), vec![1]),
            ("op = MERGE_PATCH".into(), vec![4, 3]),
            ("op = CONTEXT_OP_ROLLBACK".into(), vec![6]),
            ("op = CREATE".into(), vec![1]),
            (
                format!("author = \"{worker}\" AND op = JSON_PATCH"),
                vec![5],
            ),
            (format!("create_time > \"{}\"", t(at(3))), vec![6, 5, 4]),
            (format!("create_time < \"{}\"", t(at(3))), vec![2, 1]),
            (
                format!(
                    "create_time > \"{}\" AND create_time < \"{}\"",
                    t(at(1)),
                    t(at(5))
                ),
                vec![4, 3, 2],
            ),
            (
                format!("op = MERGE_PATCH AND create_time > \"{}\"", t(at(3))),
                vec![4],
            ),
        ];
        for (filter, expected) in cases {
            let listed = ctx.versions_where(View::Basic, &filter).await;
            assert_eq!(numbers(&listed), expected, "filter {filter}");
            // Paging a filtered list yields the same versions.
            let first = ctx.list_page(View::Basic, &filter, 1, "").await.unwrap();
            assert_eq!(numbers(&first.versions), expected[..1]);
            assert_eq!(first.next_page_token.is_empty(), expected.len() == 1);
        }
        for bad in [
            "colour = \"red\"",
            "op = EXPLODE",
            "create_time > \"yesterday\"",
            "author \"x\"",
        ] {
            let result = ctx.list_page(View::Basic, bad, 0, "").await;
            assert_invalid(result, "INVALID_ARGUMENT", "filter");
        }
        let negative = ctx.list_page(View::Basic, "", -1, "").await;
        assert_invalid(negative, "INVALID_ARGUMENT", "page_size");
        let mut missing = ctx.clone();
        missing.name = format!("{}/contexts/missing", acme.project_name("web"));
        assert_eq!(
            missing
                .list_page(View::Basic, "", 0, "")
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );
    }
);

/// Writes `docs` as consecutive versions of a new context `id` and returns it.
async fn history(client: &Contexts, parent: &str, id: &str, docs: &[serde_json::Value]) -> Ctx {
    let (ctx, _) = Ctx::create(client, parent, id, keeping(0), Some(docs[0].clone())).await;
    for doc in &docs[1..] {
        ctx.write_doc(doc.clone()).await;
    }
    ctx
}

backend_tests!(
    context_diffs_are_minimal_and_turn_from_into_to,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let client = contexts(app.addr, &acme.admin_key).await;
        let web = acme.project_name("web");
        let items: Vec<_> = (0..200).map(|i| json!(format!("item-{i}"))).collect();
        let mut front = items.clone();
        front.insert(0, json!("new"));
        let mut middle = front.clone();
        middle.remove(100);
        let docs = [
            json!({"items": items, "meta": {"owner": "ann"}}),
            json!({"items": front, "meta": {"owner": "ann"}}),
            json!({"items": middle, "meta": {"owner": "ann"}}),
            json!({
                "items": ["a", {"deep": [1, 2, {"x": null}]}, "c"],
                "meta": {"owner": "bob", "tags": ["x", "y"]},
                "a/b": {"m~n": 1},
                "ünï": "code"
            }),
            json!({
                "items": ["c", {"deep": [2, {"x": false}, 3]}, "a", "a"],
                "meta": {"tags": ["y"], "note": {"k": [[]]}},
                "a/b": {"m~n": 2},
                "flag": true
            }),
            json!({}),
        ];
        let ctx = history(&client, &web, "doc", &docs).await;

        // Inserting one element at the front of a long array is one op, as is removing one.
        let front_ops = ops_json(&ctx.try_diff(1, 2).await.unwrap());
        assert_eq!(
            front_ops,
            json!([{"op": "add", "path": "/items/0", "value": "new"}])
        );
        let middle_ops = ops_json(&ctx.try_diff(2, 3).await.unwrap());
        assert_eq!(middle_ops, json!([{"op": "remove", "path": "/items/100"}]));
        assert_eq!(ctx.try_diff(4, 4).await.unwrap(), vec![]);

        // Every pair, both ways: the ops turn `from` into `to`, checked with an independent
        // applier and by the server itself on a scratch context holding `from`.
        for from in 1..=docs.len() as i64 {
            for to in 1..=docs.len() as i64 {
                let ops = ops_json(&ctx.try_diff(from, to).await.unwrap());
                let start = &docs[from as usize - 1];
                let end = &docs[to as usize - 1];
                assert_eq!(&apply_ops(start, &ops), end, "diff {from} → {to}: {ops}");
                if from == to || (from > 3 && to > 3) {
                    let scratch = format!("scratch-{from}-{to}");
                    let (scratch, _) =
                        Ctx::create(&client, &web, &scratch, keeping(0), Some(start.clone())).await;
                    let written = scratch.try_write(patch(ops)).await.unwrap();
                    let target = ctx.try_read(to).await.unwrap();
                    assert_eq!(written.version.unwrap().sha256, target.sha256);
                    assert_eq!(scratch.doc(0).await, *end);
                }
            }
        }

        let zero = ctx.try_diff(0, 2).await;
        assert_invalid(zero, "INVALID_ARGUMENT", "from_version");
        let negative = ctx.try_diff(1, -2).await;
        assert_invalid(negative, "INVALID_ARGUMENT", "to_version");
        assert_eq!(
            ctx.try_diff(1, 99).await.unwrap_err().code(),
            Code::NotFound
        );
    }
);

async fn rollback_story(backend: Backend) {
    let server = OwnServer::start(backend, Duration::from_secs(1)).await;
    let acme = server.tenant("acme").await;
    acme.project("web").await;
    let store = server.store().await;
    let client = contexts(server.addr, &acme.admin_key).await;
    let doc = |v: i64| json!({"v": v, "body": "some text that takes room"});
    let (ctx, _) = Ctx::create(
        &client,
        &acme.project_name("web"),
        "plan",
        keeping(0),
        Some(doc(1)),
    )
    .await;
    ctx.write_doc(doc(2)).await;
    ctx.write_doc(doc(3)).await;
    assert_eq!(blob_stats(&store, &acme.name).await.0, 3);

    // Rollback appends a version with the target's data, and stores nothing new.
    let rolled = ctx.try_rollback(1).await.unwrap();
    assert!(!rolled.noop);
    let v4 = rolled.version.unwrap();
    assert_eq!((v4.version, v4.rollback_of), (4, 1));
    assert_eq!(ContextOp::try_from(v4.op), Ok(ContextOp::Rollback));
    let v1 = ctx.try_read(1).await.unwrap();
    assert_eq!(
        (v4.sha256.as_str(), v4.size_bytes),
        (v1.sha256.as_str(), v1.size_bytes)
    );
    assert_eq!(ctx.doc(4).await, doc(1));
    assert_eq!(blob_stats(&store, &acme.name).await.0, 3);

    // Then a write, which is new content, and a rollback to another version.
    ctx.write_doc(doc(5)).await;
    assert_eq!(blob_stats(&store, &acme.name).await.0, 4);
    let v6 = ctx.try_rollback(2).await.unwrap().version.unwrap();
    assert_eq!((v6.version, v6.rollback_of), (6, 2));
    assert_eq!(ctx.doc(0).await, doc(2));
    // Writing an earlier document back is a REPLACE that reuses its blob.
    let v7 = ctx.write_doc(doc(3)).await;
    assert_eq!(ContextOp::try_from(v7.op), Ok(ContextOp::Replace));
    assert_eq!(v7.sha256, ctx.try_read(3).await.unwrap().sha256);
    assert_eq!(blob_stats(&store, &acme.name).await.0, 4);

    // A rollback to a version equal to the head changes nothing.
    let same = ctx.try_rollback(3).await.unwrap();
    assert!(same.noop);
    assert_eq!(same.version.unwrap().version, 7);

    // CAS on rollback; bad targets write nothing.
    let stale = pb::RollbackContextRequest {
        expected_version: Some(6),
        ..rollback(&ctx.name, 1)
    };
    let result = client.clone().rollback_context(stale).await;
    assert_status_meta(
        result,
        Code::Aborted,
        "VERSION_CONFLICT",
        "current_version",
        7,
    );
    assert_eq!(
        ctx.try_rollback(99).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_invalid(
        ctx.try_rollback(0).await,
        "INVALID_ARGUMENT",
        "target_version",
    );
    let current = pb::RollbackContextRequest {
        expected_version: Some(7),
        description: "back to the start".into(),
        ..rollback(&ctx.name, 1)
    };
    let v8 = client.clone().rollback_context(current).await.must();
    let v8 = v8.version.unwrap();
    assert_eq!((v8.version, v8.rollback_of), (8, 1));
    assert_eq!(v8.description, "back to the start");

    // The whole history is intact and readable.
    let versions = ctx.versions().await;
    let ops: Vec<_> = versions
        .iter()
        .map(|v| ContextOp::try_from(v.op).unwrap())
        .collect();
    use ContextOp::{Create, Replace, Rollback};
    assert_eq!(
        ops,
        [
            Rollback, Replace, Rollback, Replace, Rollback, Replace, Replace, Create
        ]
    );
    let rollback_of: Vec<_> = versions.iter().map(|v| v.rollback_of).collect();
    assert_eq!(rollback_of, [1, 0, 2, 0, 1, 0, 0, 0]);
    let expected = [1, 2, 3, 1, 5, 2, 3, 1];
    for (i, v) in expected.into_iter().enumerate() {
        assert_eq!(ctx.doc(i as i64 + 1).await, doc(v), "version {}", i + 1);
    }
    assert_eq!(ctx.try_diff(1, 8).await.unwrap(), vec![]);
    // Four distinct documents, four blobs, their bytes counted once.
    assert_blobs_match_retained(&store, &acme.name, &[&ctx]).await;
    assert_eq!(blob_stats(&store, &acme.name).await.0, 4);
    store.close().await;
    server.shutdown().await;
}

per_backend!(
    context_rollback_appends_versions_and_stores_no_document_twice,
    rollback_story
);

backend_tests!(
    a_full_page_of_large_versions_ends_early_instead_of_outgrowing_the_message_limit,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let root = contexts(app.addr, &app.root_key).await;
        // Six versions of about 900 KB each: 5.4 MB in one FULL page would break the
        // 4 MiB message limit.
        let big = |n: usize| json!({"n": n, "blob": "x".repeat(900_000)});
        let (ctx, _) = Ctx::create(
            &root,
            &acme.project_name("web"),
            "big",
            keeping(0),
            Some(big(1)),
        )
        .await;
        for n in 2..=6 {
            ctx.write_doc(big(n)).await;
        }
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let page = ctx.list_page(View::Full, "", 10, &token).await.unwrap();
            assert!(
                !page.versions.is_empty(),
                "a page holds at least one version"
            );
            assert!(
                page.versions.iter().all(|v| v.data.is_some()),
                "FULL pages carry the data"
            );
            pages.push(numbers(&page.versions));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert!(pages.len() > 1, "the page ended early: {pages:?}");
        let all: Vec<i64> = pages.concat();
        assert_eq!(
            all,
            [6, 5, 4, 3, 2, 1],
            "every version exactly once, in order"
        );
    }
);
