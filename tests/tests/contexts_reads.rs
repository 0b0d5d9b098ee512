//! ReadContext serves documents from a per-replica cache of immutable versions, kept as
//! encoded responses and answered on a route of its own, but asks the database for the
//! head on every read (batched across concurrent reads). These pin what that must not
//! change: a read sees every write that finished before it, on any replica; a context
//! created again under an old name is read fresh; a version compacted after it was
//! cached reads as compacted; a read answers exactly the version a write returned,
//! whether from the cache or not; the route refuses what the rest of the service
//! refuses. One more pins the server's write coalescing (`coalesce.rs`): large and small
//! responses interleaved on one connection arrive whole.

mod contexts_support;

use agentry_e2e::*;
use contexts_support::*;
use serde_json::Value;
use tonic::{Code, codegen::http::uri::PathAndQuery, transport::Endpoint};

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

/// Tenant `acme` with project `web`, and a context client with its admin key.
async fn acme_web(app: &TestApp) -> (Tenant, Contexts) {
    let acme = app.tenant("acme").await;
    acme.project("web").await;
    let client = contexts(app.addr, &acme.admin_key).await;
    (acme, client)
}

#[tokio::test]
async fn a_read_on_one_replica_sees_a_write_just_made_on_another() {
    let replicas = TwoReplicas::start().await;
    let (a, b, acme) = (&replicas.a, &replicas.b, &replicas.acme);
    let on_a = new_context(&contexts(a.local_addr, &acme.admin_key).await, acme, "c", 0).await;
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
    replicas.stop().await;
}

backend_tests!(
    a_context_created_again_under_an_old_name_is_read_fresh,
    |app| async move {
        let (acme, client) = acme_web(&app).await;
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
        let (acme, client) = acme_web(&app).await;
        let ctx = new_context(&client, &acme, "c", 2).await;
        ctx.write_doc(json!({"i": 2})).await;
        assert_eq!(ctx.doc(1).await, json!({"i": 1}), "cached now");
        ctx.write_doc(json!({"i": 3})).await;
        assert_status(ctx.try_read(1).await, Code::OutOfRange, "VERSION_COMPACTED");
        let beyond = ctx.try_read(4).await.unwrap_err();
        assert_eq!(beyond.code(), Code::NotFound);
        assert_eq!(ctx.doc(0).await, json!({"i": 3}));
        assert_eq!(ctx.doc(2).await, json!({"i": 2}));
    }
);

backend_tests!(
    reads_answer_exactly_the_versions_writes_returned,
    |app| async move {
        let (acme, client) = acme_web(&app).await;
        let (ctx, _) = Ctx::create(&client, &acme.project_name("web"), "c", keeping(0), None).await;
        let mut written = Vec::new();
        for i in 1..=3 {
            let doc = json!({"i": i, "list": [i, {"nested": null}], "text": "ünïcode"});
            written.push((ctx.write_doc(doc.clone()).await, doc));
        }
        // A write answers the version without its document; a read adds the document
        // and must agree on every other field. The first pass fills this replica's
        // cache; the second is answered from it.
        let check =
            |read: pb::ContextVersion, (version, doc): &(pb::ContextVersion, Value), what: &str| {
                assert_eq!(doc_of(&read), *doc, "{what}");
                let headers = pb::ContextVersion { data: None, ..read };
                assert_eq!(&headers, version, "{what}");
            };
        for pass in ["miss", "hit"] {
            for w in &written {
                let read = ctx.try_read(w.0.version).await.expect("ReadContext");
                check(read, w, &format!("version {} ({pass})", w.0.version));
            }
            let head = ctx.try_read(0).await.expect("ReadContext head");
            check(head, &written[2], &format!("head ({pass})"));
        }
    }
);

/// `ReadContextRequest` with `name` (field 1, a string) sent as an integer.
#[derive(Clone, PartialEq, prost::Message)]
struct MistypedRead {
    #[prost(int64, tag = "1")]
    name: i64,
}

backend_tests!(
    the_read_route_refuses_what_the_service_refuses,
    |app| async move {
        let (acme, client) = acme_web(&app).await;
        let (ctx, _) = Ctx::create(&client, &acme.project_name("web"), "c", keeping(0), None).await;
        ctx.write_doc(json!({"i": 1})).await;
        let channel = Endpoint::from_shared(format!("http://{}", app.addr))
            .expect("valid endpoint")
            .connect()
            .await
            .expect("connect");
        let call = |key: Option<&str>| {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            let mut request = tonic::Request::new(MistypedRead { name: 7 });
            if let Some(key) = key {
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {key}").parse().expect("ascii"),
                );
            }
            async move {
                grpc.ready().await.expect("channel ready");
                grpc.unary::<_, pb::ContextVersion, _>(
                    request,
                    PathAndQuery::from_static("/agentry.v1.ContextService/ReadContext"),
                    agentry_proto::codec::AgentryCodec::default(),
                )
                .await
                .map(tonic::Response::into_inner)
            }
        };
        assert_status(
            call(Some(&acme.admin_key)).await,
            Code::InvalidArgument,
            "MALFORMED_REQUEST",
        );
        let unauthenticated = call(None).await.unwrap_err();
        assert_eq!(unauthenticated.code(), Code::Unauthenticated);
        // Another tenant's key: the context is not there for it.
        let other = app.tenant("other").await;
        let outsider = contexts(app.addr, &other.admin_key).await;
        let denied = outsider
            .clone()
            .read_context(read(&ctx.name, 0))
            .await
            .unwrap_err();
        assert!(
            matches!(denied.code(), Code::PermissionDenied | Code::NotFound),
            "{denied:?}"
        );
        assert_eq!(ctx.doc(0).await, json!({"i": 1}));
    }
);

backend_tests!(
    large_and_small_responses_interleaved_on_one_connection_arrive_whole,
    |app| async move {
        // One client: every call below shares one HTTP/2 connection.
        let (acme, client) = acme_web(&app).await;
        let project = acme.project_name("web");
        // From a few bytes to past h2's 16 KiB frames and the coalescing buffer
        // (64 KiB), under the 1 MiB quota.
        let mut contexts = Vec::new();
        for (i, size) in [10, 300, 2_000, 17_000, 70_000, 300_000]
            .into_iter()
            .enumerate()
        {
            let (ctx, _) = Ctx::create(&client, &project, &format!("c{i}"), keeping(0), None).await;
            let doc = json!({"text": "x".repeat(size), "i": i});
            ctx.write_doc(doc.clone()).await;
            contexts.push((ctx, doc));
        }
        for _round in 0..5 {
            let reads = (0..96).map(|i| {
                let (ctx, expected) = contexts[i % contexts.len()].clone();
                async move { assert_eq!(ctx.doc(0).await, expected) }
            });
            futures::future::join_all(reads).await;
        }
    }
);
