//! Deletes wake watchers at once, in the deleting transaction: with the fallback poll set
//! to 30 s, a watch of a context deleted on another replica (or in a project or
//! workspace deleted there, with force) ends with NOT_FOUND within a few seconds; the
//! same holds on one server of either back end.

mod contexts_support;

use std::time::{Duration, Instant};

use agentry_e2e::*;
use contexts_support::*;
use tonic::Code;

/// Well under the 30 s poll: only a wake-up can end the watch this soon (generous for
/// a loaded machine; it takes tens of milliseconds).
const PROMPT: Duration = Duration::from_secs(10);

async fn context_on(addr: std::net::SocketAddr, acme: &Tenant, id: &str) -> Ctx {
    let client = contexts(addr, &acme.admin_key).await;
    let (ctx, _) = Ctx::create(
        &client,
        &acme.project_name("web"),
        id,
        keeping(0),
        Some(json!({"i": 1})),
    )
    .await;
    ctx
}

/// Opens a watch on `ctx` and reads its first version.
async fn watching(ctx: &Ctx) -> Watch {
    let mut watch = ctx.watch(0).await;
    assert_eq!(next_version(&mut watch).await.version, 1);
    watch
}

#[track_caller]
fn ended_not_found(result: Result<Option<pb::ContextVersion>, tonic::Status>, what: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{what}: {status:?}"),
        Ok(other) => panic!("{what}: expected NOT_FOUND, got {other:?}"),
    }
}

async fn force_delete_project(acme: &Tenant) {
    acme.admin
        .clone()
        .delete_project(pb::DeleteProjectRequest {
            name: acme.project_name("web"),
            force: true,
            ..Default::default()
        })
        .await
        .must();
}

#[tokio::test]
async fn a_context_deleted_on_one_replica_ends_watches_on_another_at_once() {
    let replicas = TwoReplicas::start().await;
    let (a, b, acme) = (&replicas.a, &replicas.b, &replicas.acme);
    let on_a = context_on(a.local_addr, acme, "doomed").await;
    let on_b = on_a.with(&contexts(b.local_addr, &acme.admin_key).await);
    let mut watch = watching(&on_b).await;
    let deleted = Instant::now();
    on_a.delete().await.expect("DeleteContext on A");
    ended_not_found(next_within(&mut watch, PROMPT).await, "the watch on B");
    println!(
        "DeleteContext on A → watch on B ended: {:?}",
        deleted.elapsed()
    );
    replicas.stop().await;
}

#[tokio::test]
async fn a_project_deleted_on_one_replica_ends_the_watches_of_its_contexts_on_another() {
    let replicas = TwoReplicas::start().await;
    let (a, b, acme) = (&replicas.a, &replicas.b, &replicas.acme);
    let on_b = contexts(b.local_addr, &acme.admin_key).await;
    let mut watches = Vec::new();
    for id in ["one", "two"] {
        let ctx = context_on(a.local_addr, acme, id).await;
        watches.push(watching(&ctx.with(&on_b)).await);
    }
    // The tenant's registry client talks to A.
    force_delete_project(acme).await;
    for watch in &mut watches {
        ended_not_found(next_within(watch, PROMPT).await, "a watch on B");
    }
    replicas.stop().await;
}

async fn one_server_story(backend: Backend) {
    let mut server = OwnServer::start(backend, Duration::from_secs(30)).await;
    let acme = server.tenant("acme").await;
    acme.project("web").await;
    let doomed = context_on(server.addr, &acme, "doomed").await;
    let kept = context_on(server.addr, &acme, "kept").await;
    let mut watch_doomed = watching(&doomed).await;
    let mut watch_kept = watching(&kept).await;
    doomed.delete().await.expect("DeleteContext");
    ended_not_found(
        next_within(&mut watch_doomed, PROMPT).await,
        "the deleted one",
    );
    force_delete_project(&acme).await;
    ended_not_found(
        next_within(&mut watch_kept, PROMPT).await,
        "one in the project",
    );
    server.stop().await;
}

per_backend!(deletes_end_watches_at_once_on_one_server, one_server_story);
