//! Retention: a context keeps its last `keep_last` versions (its own, or the workspace's
//! `context_keep_last`); older ones are compacted, the head never is, the retained ones
//! stay gapless, and a blob no retained version uses is deleted. Reading, diffing or
//! rolling back to a compacted version is an explicit error, never a silent substitute.
//! These tests start their own server so they can count blobs through the store.

mod contexts_support;

use std::time::Duration;

use agentry_e2e::*;
use contexts_support::*;
use tonic::Code;

/// The retained versions are exactly `first..=head`, and Get agrees.
async fn assert_retained(ctx: &Ctx, first: i64, head: i64) {
    let meta = ctx.get().await;
    assert_eq!(
        (meta.first_version, meta.head_version),
        (first, head),
        "first and head of {}",
        ctx.name
    );
    let mut retained = ctx.version_numbers().await;
    retained.reverse();
    assert_eq!(retained, (first..=head).collect::<Vec<_>>());
}

/// A server of our own with workspace `acme` and its project `web`: the server, the
/// tenant, a store on the same database, a context client and the project's name.
async fn acme_web(backend: Backend) -> (OwnServer, Tenant, agentry_store::Store, Contexts, String) {
    let server = OwnServer::start(backend, Duration::from_secs(1)).await;
    let acme = server.tenant("acme").await;
    acme.project("web").await;
    let store = server.store().await;
    let client = contexts(server.addr, &acme.admin_key).await;
    let web = acme.project_name("web");
    (server, acme, store, client, web)
}

async fn compaction_story(backend: Backend) {
    let (server, acme, store, client, web) = acme_web(backend).await;
    let doc = |i: i64| json!({"i": i, "pad": "x".repeat(50)});
    let (ctx, _) = Ctx::create(&client, &web, "five", keeping(5), Some(doc(1))).await;
    assert_retained(&ctx, 1, 1).await;
    for i in 2..=12 {
        ctx.write_doc(doc(i)).await;
        assert_retained(&ctx, (i - 4).max(1), i).await;
    }
    assert_blobs_match_retained(&store, &acme.name, &[&ctx]).await;

    // Compacted versions are an error naming the floor; retained ones read normally.
    for gone in [1, 7] {
        let result = ctx.try_read(gone).await;
        assert_status_meta(
            result,
            Code::OutOfRange,
            "VERSION_COMPACTED",
            "first_version",
            8,
        );
    }
    assert_eq!(ctx.doc(8).await, doc(8));
    assert_eq!(ctx.doc(0).await, doc(12));
    let diff = ctx.try_diff(7, 12).await;
    assert_status(diff, Code::OutOfRange, "VERSION_COMPACTED");
    let rollback = ctx.try_rollback(3).await;
    assert_status_meta(
        rollback,
        Code::OutOfRange,
        "VERSION_COMPACTED",
        "first_version",
        8,
    );
    assert_retained(&ctx, 8, 12).await;

    // Writing back version 9's document reuses its blob, while version 8's goes (once
    // compaction deletes it).
    let v13 = ctx.write_doc(doc(9)).await;
    assert_eq!(v13.sha256, ctx.try_read(9).await.unwrap().sha256);
    assert_retained(&ctx, 9, 13).await;
    assert_blobs_match_retained(&store, &acme.name, &[&ctx]).await;
    // A rollback compacts too; its target's blob survives because the rollback uses it.
    let v14 = ctx.try_rollback(10).await.unwrap().version.unwrap();
    assert_eq!((v14.version, v14.rollback_of), (14, 10));
    assert_retained(&ctx, 10, 14).await;
    assert_eq!(ctx.doc(0).await, doc(10));
    assert_blobs_match_retained(&store, &acme.name, &[&ctx]).await;

    // keep_last 1: only the head, which is never compacted.
    let (one, _) = Ctx::create(&client, &web, "one", keeping(1), Some(doc(100))).await;
    for i in 101..=103 {
        one.write_doc(doc(i)).await;
        assert_retained(&one, i - 99, i - 99).await;
        assert_eq!(one.doc(0).await, doc(i));
    }
    let noop = one.try_write(data(doc(103))).await.unwrap();
    assert!(noop.noop);
    assert_retained(&one, 4, 4).await;
    assert_blobs_match_retained(&store, &acme.name, &[&ctx, &one]).await;

    // Two contexts storing the same document each keep their own blob (blobs are per
    // context, so writers of different contexts never wait for each other): compacting
    // one context's version leaves the other's document in place.
    let shared = json!({"shared": true});
    let (keeper, _) = Ctx::create(&client, &web, "keeper", keeping(0), Some(shared.clone())).await;
    let (mover, _) = Ctx::create(&client, &web, "mover", keeping(1), Some(shared.clone())).await;
    mover.write_doc(json!({"moved": true})).await;
    assert_status(
        mover.try_read(1).await,
        Code::OutOfRange,
        "VERSION_COMPACTED",
    );
    assert_eq!(keeper.doc(0).await, shared);
    let all = [&ctx, &one, &keeper, &mover];
    assert_blobs_match_retained(&store, &acme.name, &all).await;

    // A project with contexts is deleted only with force, which frees every blob.
    let delete = acme
        .admin
        .clone()
        .delete_project(req::delete_project(&web))
        .await;
    assert_status(delete, Code::FailedPrecondition, "HAS_CHILDREN");
    assert_retained(&ctx, 10, 14).await;
    acme.admin
        .clone()
        .delete_project(req::delete_project(&web).force())
        .await
        .must();
    assert_eq!(ctx.try_get().await.unwrap_err().code(), Code::NotFound);
    assert_eq!(blob_stats(&store, &acme.name).await, (0, 0));
    store.close().await;
    server.shutdown().await;
}

per_backend!(
    context_compaction_keeps_the_last_versions_and_frees_blobs,
    compaction_story
);

async fn workspace_default_story(backend: Backend) {
    let server = OwnServer::start(backend, Duration::from_secs(1)).await;
    let quotas = pb::Quotas {
        context_keep_last: 3,
        ..Default::default()
    };
    let beta = server.tenant_with_quotas("beta", quotas).await;
    beta.project("web").await;
    let store = server.store().await;
    let client = contexts(server.addr, &beta.admin_key).await;
    let web = beta.project_name("web");
    let (ctx, created) =
        Ctx::create(&client, &web, "default", keeping(0), Some(json!({"i": 1}))).await;
    assert_eq!(
        created.keep_last, 3,
        "keep_last 0 takes the workspace's context_keep_last"
    );
    for i in 2..=7 {
        ctx.write_doc(json!({"i": i})).await;
    }
    assert_retained(&ctx, 5, 7).await;
    assert_blobs_match_retained(&store, &beta.name, &[&ctx]).await;
    // A context's own keep_last wins over the workspace's.
    let (own, created) =
        Ctx::create(&client, &web, "own", keeping(10), Some(json!({"i": 1}))).await;
    assert_eq!(created.keep_last, 10);
    for i in 2..=7 {
        own.write_doc(json!({"i": i})).await;
    }
    assert_retained(&own, 1, 7).await;
    assert_blobs_match_retained(&store, &beta.name, &[&ctx, &own]).await;
    store.close().await;
    server.shutdown().await;
}

per_backend!(
    context_keep_last_defaults_to_the_workspace_quota,
    workspace_default_story
);

async fn delete_story(backend: Backend) {
    let (server, acme, store, client, web) = acme_web(backend).await;
    let (ctx, _) = Ctx::create(&client, &web, "gone", keeping(0), Some(json!({"a": 1}))).await;
    ctx.write_doc(json!({"a": 2})).await;
    assert_eq!(blob_stats(&store, &acme.name).await.0, 2);
    ctx.delete().await.unwrap();
    assert_eq!(
        blob_stats(&store, &acme.name).await,
        (0, 0),
        "DeleteContext must release the blobs of its versions"
    );
    // Storing the same document again and deleting again leaves nothing either, so no
    // reference was counted twice.
    let (again, _) = Ctx::create(&client, &web, "gone", keeping(0), Some(json!({"a": 1}))).await;
    again.delete().await.unwrap();
    assert_eq!(blob_stats(&store, &acme.name).await, (0, 0));
    store.close().await;
    server.shutdown().await;
}

per_backend!(deleting_a_context_frees_its_blobs, delete_story);

/// Compaction deletes in batches: the floor rises with every write and nothing below it
/// can be read, listed or watched, while the rows below it go once the floor crosses a
/// multiple of `COMPACTION_BATCH`, so a context never stores more than
/// `keep_last + COMPACTION_BATCH - 1` versions.
async fn batched_compaction_story(backend: Backend) {
    let (server, acme, store, client, web) = acme_web(backend).await;
    let batch = agentry_store::COMPACTION_BATCH;
    let keep = 3;
    let (ctx, _) = Ctx::create(
        &client,
        &web,
        "batched",
        keeping(keep),
        Some(json!({"i": 1})),
    )
    .await;
    let mut deleted_at = Vec::new();
    let mut stored_before = 1;
    for i in 2..=(2 * batch + keep as i64 + 2) {
        ctx.write_doc(json!({"i": i})).await;
        let first = (i - keep as i64 + 1).max(1);
        assert_retained(&ctx, first, i).await;
        let stored = stored_versions(&store, &ctx).await;
        assert_eq!(stored.last(), Some(&i), "the head is stored");
        assert!(
            (stored.len() as i64) < keep as i64 + batch,
            "{} versions stored at head {i}",
            stored.len()
        );
        if (stored.len() as i64) < stored_before {
            deleted_at.push(i);
            assert_eq!(
                stored[0], first,
                "a compaction deletes everything below the floor"
            );
        }
        stored_before = stored.len() as i64 + 1;
        if stored[0] < first {
            // Stored but below the floor: gone for every reader.
            let below = first - 1;
            assert_status_meta(
                ctx.try_read(below).await,
                Code::OutOfRange,
                "VERSION_COMPACTED",
                "first_version",
                first,
            );
            assert_status(
                ctx.try_diff(below, i).await,
                Code::OutOfRange,
                "VERSION_COMPACTED",
            );
            assert_status_meta(
                ctx.try_watch(below - 1).await,
                Code::OutOfRange,
                "VERSION_COMPACTED",
                "first_version",
                first,
            );
        }
        assert_blobs_match_retained(&store, &acme.name, &[&ctx]).await;
    }
    assert_eq!(
        deleted_at.len(),
        2,
        "the floor crossed two multiples of {batch}: {deleted_at:?}"
    );
    store.close().await;
    server.shutdown().await;
}

per_backend!(
    compaction_deletes_in_batches_and_hides_what_lies_below_the_floor,
    batched_compaction_story
);
