//! ReadContext serves documents from a per-replica cache of immutable versions but asks
//! the database for the head on every read (batched across concurrent reads). These pin
//! what that must not change: a read sees every write that finished before it, on any
//! replica; a context created again under an old name is read fresh; a version compacted
//! after it was cached reads as compacted.

mod contexts_support;

use std::time::Duration;

use agentry_e2e::*;
use contexts_support::*;
use tonic::Code;

async fn new_context(client: &Contexts, acme: &Tenant, id: &str, keep_last: i32) -> Ctx {
    Ctx::create(
        client,
        &acme.project_name("web"),
        id,
        keeping(keep_last),
        Some(json!({"i": 1})),
    )
    .await
    .0
}

#[tokio::test]
async fn a_read_on_one_replica_sees_a_write_just_made_on_another() {
    let database = fresh_database(Backend::Postgres).await;
    let root_key = new_root_key();
    let poll = Duration::from_secs(30);
    let a = agentry_server::start(config(&database.url, &root_key, poll))
        .await
        .expect("replica A starts");
    let b = agentry_server::start(config(&database.url, &root_key, poll))
        .await
        .expect("replica B starts");
    let acme = tenant_on(a.local_addr, &root_key, "acme", pb::Quotas::default()).await;
    acme.project("web").await;
    let on_a = new_context(
        &contexts(a.local_addr, &acme.admin_key).await,
        &acme,
        "c",
        0,
    )
    .await;
    let on_b = on_a.with(&contexts(b.local_addr, &acme.admin_key).await);
    // Both replicas read (and cache) every version; the head must still move at once,
    // long before any NOTIFY or poll could have told the reader (the poll is 30 s).
    for i in 2..=60 {
        let (writer, reader) = if i % 2 == 0 {
            (&on_a, &on_b)
        } else {
            (&on_b, &on_a)
        };
        let written = writer.write_doc(json!({ "i": i })).await;
        let read = reader.try_read(0).await.expect("head read");
        assert_eq!(read.version, written.version, "write {i} not seen");
        assert_eq!(doc_of(&read), json!({ "i": i }));
        assert_eq!(writer.doc(0).await, json!({ "i": i }));
    }
    a.shutdown().await.expect("replica A stops");
    b.shutdown().await.expect("replica B stops");
    database.drop_database().await;
}

backend_tests!(
    a_context_created_again_under_an_old_name_is_read_fresh,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let client = contexts(app.addr, &acme.admin_key).await;
        let first = new_context(&client, &acme, "c", 0).await;
        assert_eq!(first.doc(0).await, json!({"i": 1}));
        assert_eq!(first.doc(1).await, json!({"i": 1}));
        first.delete().await.expect("deleted");
        let missing = first.try_read(0).await.unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let (again, _) = Ctx::create(
            &client,
            &acme.project_name("web"),
            "c",
            keeping(0),
            Some(json!({"again": true})),
        )
        .await;
        assert_eq!(again.doc(0).await, json!({"again": true}));
        assert_eq!(again.doc(1).await, json!({"again": true}));
    }
);

backend_tests!(
    a_version_read_before_compaction_reads_as_compacted_after,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let client = contexts(app.addr, &acme.admin_key).await;
        let ctx = new_context(&client, &acme, "c", 2).await;
        ctx.write_doc(json!({"i": 2})).await;
        assert_eq!(ctx.doc(1).await, json!({"i": 1}), "cached now");
        ctx.write_doc(json!({"i": 3})).await;
        assert_status(
            ctx.try_read(1).await,
            Code::FailedPrecondition,
            "VERSION_COMPACTED",
        );
        let beyond = ctx.try_read(4).await.unwrap_err();
        assert_eq!(beyond.code(), Code::NotFound);
        assert_eq!(ctx.doc(0).await, json!({"i": 3}));
        assert_eq!(ctx.doc(2).await, json!({"i": 2}));
    }
);
