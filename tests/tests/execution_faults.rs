//! Database faults under the worker protocol and the streams, with Postgres behind a
//! proxy the test controls ([`PgProxy`]): a PollTask whose caller leaves while its claim
//! commits gives the run back on the same attempt; streams whose clients leave during an
//! outage (connections refused, or stalled) end their tasks at once; a server stopping
//! while the database hangs ends its held calls promptly; and a stream that outlives `STREAM_OUTAGE_LIMIT` (30 s) of outage
//! ends with UNAVAILABLE, RetryInfo and where to resume, and resumes losing nothing.

mod execution_support;

use std::time::{Duration, Instant};

use agentry_e2e::*;
use agentry_server::RunningServer;
use execution_support::*;
use pb::{RunStatus, context_service_client::ContextServiceClient};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};
use tonic_types::StatusExt;

/// A server whose database connections all go through a proxy.
struct Faulty {
    proxy: PgProxy,
    server: RunningServer,
    world: World,
    database: FreshDatabase,
}

impl Faulty {
    async fn start(grace: Duration) -> Self {
        let database = fresh_database(Backend::Postgres).await;
        let proxy = PgProxy::start(&database.url).await;
        let root_key = new_root_key();
        let config = agentry_server::config::Config {
            shutdown_grace: grace,
            ..config(&proxy.url(), &root_key)
        };
        let server = agentry_server::start(config)
            .await
            .expect("the server starts");
        let world = World::setup_on(server.local_addr, &root_key).await;
        Self {
            proxy,
            server,
            world,
            database,
        }
    }

    async fn stop(self) {
        self.proxy.restore();
        self.server.shutdown().await.expect("the server stops");
        self.database.drop_database().await;
    }
}

/// Tasks alive in this test's runtime, which runs the server too.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits up to `within` for at most `target` tasks to be alive; returns how many are.
async fn settle(target: usize, within: Duration) -> usize {
    let started = Instant::now();
    let mut alive = alive_tasks();
    while alive > target && started.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(50)).await;
        alive = alive_tasks();
    }
    alive
}

async fn channel_to(server: &RunningServer) -> Channel {
    Endpoint::from_shared(format!("http://{}", server.local_addr))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_poll_whose_caller_leaves_while_the_claim_commits_gives_the_run_back() {
    let f = Faulty::start(Duration::from_secs(1)).await;
    let w = &f.world;
    let session = w.session("s").await;
    let run = w.run(&session.name, "hello").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The claim's COMMIT is applied, but its answer is 3 s late; the caller gives up
    // after 1 s, which drops the handler while it waits for that answer.
    f.proxy.hold_reply_after(b"COMMIT", Duration::from_secs(3));
    let mut request = tonic::Request::new(
        w.worker
            .poll_request(Duration::from_secs(5), Duration::from_secs(30)),
    );
    request.set_timeout(Duration::from_secs(1));
    let answer = w.worker.client.clone().poll_task(request).await;
    let status = answer.expect_err("the caller gave up");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );

    // Back in the queue on attempt 1, long before its 30 s lease could lapse.
    let back = w.wait_for(&run.name, RunStatus::Queued, SOON).await;
    assert_eq!(back.attempt, 1);
    let task = w.worker.claim().await;
    assert_eq!(task.run.as_ref().unwrap().name, run.name);
    assert_eq!(task.attempt, 1, "the undelivered claim cost no attempt");
    let done = w.worker.complete(&task.task_token, "hi").await;
    assert_eq!(
        (done.status, done.attempt),
        (RunStatus::Succeeded as i32, 1)
    );
    assert_eq!(
        w.story(&run.name).await,
        [
            "status none->QUEUED",
            "status QUEUED->RUNNING",
            "status RUNNING->QUEUED",
            "status QUEUED->RUNNING",
            "message ASSISTANT \"hi\"",
            "status RUNNING->SUCCEEDED END_TURN",
        ]
    );
    f.stop().await;
}

#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Connections dropped and refused: reads fail fast.
    Refused,
    /// Connections kept but silent: reads hang.
    Stalled,
}

#[tokio::test]
async fn streams_whose_clients_leave_while_connections_are_refused_end_at_once() {
    clients_leave_during(Outage::Refused).await;
}

#[tokio::test]
async fn streams_whose_clients_leave_while_the_database_hangs_end_at_once() {
    clients_leave_during(Outage::Stalled).await;
}

async fn clients_leave_during(outage: Outage) {
    let f = Faulty::start(Duration::from_secs(1)).await;
    let w = &f.world;
    let session = w.session("s").await;
    let run = w.run(&session.name, "long").await;
    let task = w.worker.claim().await;
    let contexts = ContextServiceClient::with_interceptor(
        channel_to(&f.server).await,
        Bearer::new(&w.acme.admin_key),
    );
    let created = contexts
        .clone()
        .create_context(pb::CreateContextRequest {
            parent: w.project.clone(),
            context_id: "memory".into(),
            context: Some(pb::Context::default()),
            data: Some(to_value(json!({"n": 1}))),
            request_id: String::new(),
        })
        .await
        .must();

    let baseline = alive_tasks();
    // Twenty streams on a connection of their own, each past its replay.
    let channel = channel_to(&f.server).await;
    let events = pb::execution_service_client::ExecutionServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(&w.acme.admin_key),
    );
    let watches = ContextServiceClient::with_interceptor(channel, Bearer::new(&w.acme.admin_key));
    let mut open = Vec::new();
    for _ in 0..10 {
        let mut stream = events
            .clone()
            .stream_run_events(stream_events(&run.name, 0))
            .await
            .must();
        next_event(&mut stream, SOON).await;
        let mut watch = watches
            .clone()
            .watch_context(pb::WatchContextRequest {
                name: created.name.clone(),
                after_version: 0,
                ..Default::default()
            })
            .await
            .must();
        watch
            .message()
            .await
            .expect("a version")
            .expect("a version");
        open.push((stream, watch));
    }
    let serving = alive_tasks();
    assert!(
        serving >= baseline + 20,
        "{serving} tasks with 20 streams open, {baseline} before"
    );

    match outage {
        Outage::Refused => f.proxy.cut(),
        Outage::Stalled => f.proxy.stall(),
    }
    // Long enough for every stream to be in a read that fails or hangs, or in the pause
    // after one.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(open);
    drop((events, watches));
    // What may linger is the driver giving back connections whose reads were dropped
    // (at most one per pooled connection, until the database answers), not a task per
    // stream.
    let pool = 8;
    let left = Instant::now();
    let settled = settle(baseline + pool, Duration::from_secs(3)).await;
    println!(
        "{outage:?}: tasks: {baseline} before, {serving} serving 20 streams, {settled} {:?} after their clients left mid-outage",
        left.elapsed()
    );
    assert!(
        settled <= baseline + pool,
        "stream tasks outlived their clients: {settled} alive, {baseline} before"
    );

    // The database comes back; so does the server, without a restart.
    f.proxy.restore();
    let settled = settle(baseline + 2, Duration::from_secs(5)).await;
    assert!(
        settled <= baseline + 2,
        "tasks left after the outage: {settled} alive, {baseline} before"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match w
            .worker
            .try_append(&task.task_token, vec![delta("m", "back")])
            .await
        {
            Ok(_) => break,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("the server did not recover: {status:?}"),
        }
    }
    f.stop().await;
}

#[tokio::test]
async fn a_server_stopping_during_an_outage_ends_its_held_calls_promptly() {
    let f = Faulty::start(Duration::from_secs(10)).await;
    let w = &f.world;
    let session = w.session("s").await;
    let run = w.run(&session.name, "held").await;
    let task = w.worker.claim().await;
    let mut stream = w.stream(&run.name, 0).await;
    for _ in 0..2 {
        next_event(&mut stream, SOON).await;
    }
    let contexts = ContextServiceClient::with_interceptor(
        channel_to(&f.server).await,
        Bearer::new(&w.acme.admin_key),
    );
    let context = contexts
        .clone()
        .create_context(pb::CreateContextRequest {
            parent: w.project.clone(),
            context_id: "memory".into(),
            context: Some(pb::Context::default()),
            data: Some(to_value(json!({"n": 1}))),
            request_id: String::new(),
        })
        .await
        .must();
    let mut watch = contexts
        .clone()
        .watch_context(pb::WatchContextRequest {
            name: context.name.clone(),
            after_version: 0,
            ..Default::default()
        })
        .await
        .must();
    watch
        .message()
        .await
        .expect("a version")
        .expect("a version");
    let held_beat = {
        let worker = w.worker.clone();
        let token = task.task_token.clone();
        tokio::spawn(async move { worker.heartbeat(&token, Duration::from_secs(30)).await })
    };
    let idle_poll = {
        let worker = w.worker.clone();
        tokio::spawn(async move {
            worker
                .try_poll(Duration::from_secs(30), Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.proxy.stall();
    // The held calls look at storage on their timer: those reads now hang.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!held_beat.is_finished() && !idle_poll.is_finished());

    let stopping = Instant::now();
    let Faulty {
        proxy,
        server,
        database,
        ..
    } = f;
    tokio::time::timeout(Duration::from_secs(20), server.shutdown())
        .await
        .expect("shutdown returns")
        .expect("the server shuts down cleanly");
    let took = stopping.elapsed();
    println!("shutdown during an outage, with a held poll, heartbeat, stream and watch: {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "held calls kept the server for {took:?} of its 10 s grace"
    );
    let beat = held_beat.await.unwrap();
    assert!(
        beat.as_ref()
            .map_or_else(|s| s.code() == Code::Unavailable, |r| !r.cancel_requested),
        "{beat:?}"
    );
    assert!(matches!(idle_poll.await.unwrap(), Ok(None)));
    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(Ok(other)) => panic!("expected UNAVAILABLE, got {other:?}"),
        Err(_) => panic!("the event stream hangs after shutdown"),
    }
    match tokio::time::timeout(Duration::from_secs(5), watch.message()).await {
        Ok(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(Ok(other)) => panic!("expected UNAVAILABLE, got {other:?}"),
        Err(_) => panic!("the context watch hangs after shutdown"),
    }
    proxy.restore();
    database.drop_database().await;
}

#[tokio::test]
async fn a_stream_through_a_long_outage_ends_unavailable_and_resumes_where_it_was() {
    let f = Faulty::start(Duration::from_secs(1)).await;
    let w = &f.world;
    let session = w.session("s").await;
    let run = w.run(&session.name, "outlasted").await;
    // A lease longer than the outage, so that the worker can still finish afterwards.
    let task = w.worker.claim_with_lease(Duration::from_secs(120)).await;
    w.worker
        .append(&task.task_token, vec![delta("m", "before")])
        .await;
    let mut stream = w.stream(&run.name, 0).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut stream, SOON).await);
    }

    f.proxy.cut();
    let cut = Instant::now();
    let status = match tokio::time::timeout(Duration::from_secs(90), stream.message()).await {
        Ok(Err(status)) => status,
        Ok(Ok(other)) => panic!("expected the stream to fail, got {other:?}"),
        Err(_) => panic!("the stream rode out 90 s of outage"),
    };
    let after = cut.elapsed();
    println!("stream ended {after:?} into the outage: {status:?}");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        after >= Duration::from_secs(30),
        "it gave up after {after:?}"
    );
    assert!(
        status.get_details_retry_info().is_some(),
        "UNAVAILABLE carries RetryInfo: {status:?}"
    );
    let resume = format!(
        "resume with after_sequence = {}",
        seen.last().unwrap().sequence
    );
    assert!(status.message().contains(&resume), "{status:?}");

    f.proxy.restore();
    let done = loop {
        match w
            .worker
            .try_complete(&task.task_token, vec![assistant("after")], None)
            .await
        {
            Ok(run) => break run,
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("CompleteTask: {status:?}"),
        }
    };
    assert_eq!(done.status, RunStatus::Succeeded as i32);
    let mut resumed = w.stream(&run.name, seen.last().unwrap().sequence).await;
    seen.extend(read_to_end(&mut resumed, SOON).await);
    assert_gapless(&run.name, &seen);
    assert_eq!(
        describe_all(&seen),
        [
            "status none->QUEUED",
            "status QUEUED->RUNNING",
            "delta m \"before\"",
            "message ASSISTANT \"after\"",
            "status RUNNING->SUCCEEDED END_TURN",
        ]
    );
    f.stop().await;
}

/// A run stream on replica B (fallback poll 30 s) of a run whose project is deleted on
/// replica A ends with NOT_FOUND at once: the delete wakes it in its transaction.
#[tokio::test]
async fn a_project_deleted_on_one_replica_ends_run_streams_on_another() {
    let database = fresh_database(Backend::Postgres).await;
    let root_key = new_root_key();
    let slow_poll = |url: &str| agentry_server::config::Config {
        poll_interval: Duration::from_secs(30),
        ..config(url, &root_key)
    };
    let a = agentry_server::start(slow_poll(&database.url))
        .await
        .expect("replica A starts");
    let b = agentry_server::start(slow_poll(&database.url))
        .await
        .expect("replica B starts");
    let on_a = World::setup_on(a.local_addr, &root_key).await;
    let on_b = on_a.on_replica(b.local_addr).await;
    let session = on_a.session("s").await;
    let run = on_a.run(&session.name, "doomed").await;
    on_a.worker.claim().await;
    let mut stream = on_b.stream(&run.name, 0).await;
    for _ in 0..2 {
        next_event(&mut stream, SOON).await;
    }
    let deleted = Instant::now();
    on_a.acme
        .admin
        .clone()
        .delete_project(pb::DeleteProjectRequest {
            name: on_a.project.clone(),
            force: true,
            ..Default::default()
        })
        .await
        .must();
    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(Err(status)) => {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            assert!(status.message().contains(&run.name), "{status:?}");
        }
        Ok(Ok(other)) => panic!("expected NOT_FOUND, got {other:?}"),
        Err(_) => panic!("the stream of a deleted run is still open after 5 s"),
    }
    println!(
        "DeleteProject on A → run stream on B ended: {:?}",
        deleted.elapsed()
    );
    a.shutdown().await.expect("replica A stops");
    b.shutdown().await.expect("replica B stops");
    database.drop_database().await;
}

backend_tests!(an_abandoned_long_poll_claims_nothing, |app| async move {
    let w = World::setup(&app).await;
    let session = w.session("s").await;
    // A worker long-polls, then goes away (its call is cancelled) before any run exists.
    let abandoned = {
        let worker = w.worker.clone();
        tokio::spawn(async move {
            worker
                .try_poll(Duration::from_secs(30), Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    abandoned.abort();
    let _ = abandoned.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = w.run(&session.name, "for a live worker").await;
    // Nobody may lease it on behalf of the worker that left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = w.get_run(&run.name).await;
    assert_eq!(
        (waiting.status, waiting.attempt),
        (RunStatus::Queued as i32, 0)
    );
    let task = w.worker.claim().await;
    assert_eq!(task.run.as_ref().unwrap().name, run.name);
    assert_eq!(task.attempt, 1);
});
