//! The change feed: a write wakes only the watchers of its own context (counted by the
//! server's feed), on either back end and across two replicas; watchers read storage
//! only when woken; and a wake-up lost with the LISTEN connection is made good when the
//! connection is found gone (every waiter of the replica looks once); a replica alone
//! NOTIFYs nobody, and one starting beside it is heard and misses nothing.

mod contexts_support;

use std::time::{Duration, Instant};

use agentry_e2e::*;
use contexts_support::*;

/// Long enough for a stray wake-up to deliver something it should not.
const QUIET: Duration = Duration::from_millis(400);

async fn watching(ctx: &Ctx, head: i64) -> Watch {
    let mut watch = ctx.watch(head - 1).await;
    assert_eq!(next_version(&mut watch).await.version, head);
    watch
}

async fn settle(feed: &dyn agentry_store::ChangeFeed, waiters: usize) {
    let settled = eventually(Duration::from_secs(5), || async {
        (feed.waiting() == waiters).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "{} waiters, not {waiters}",
        feed.waiting()
    );
}

async fn only_the_watchers_of_the_written_context_wake(backend: Backend) {
    let server = OwnServer::start(backend, Duration::from_secs(30)).await;
    let acme = server.tenant("acme").await;
    acme.project("web").await;
    let client = contexts(server.addr, &acme.admin_key).await;
    let parent = acme.project_name("web");
    let (a, _) = Ctx::create(&client, &parent, "a", keeping(0), Some(json!({"n": 0}))).await;
    let (b, _) = Ctx::create(&client, &parent, "b", keeping(0), Some(json!({"n": 0}))).await;
    let mut on_a = watching(&a, 1).await;
    let mut on_b = Vec::new();
    for _ in 0..3 {
        on_b.push(watching(&b, 1).await);
    }
    let feed = server.change_feed();
    settle(feed.as_ref(), 4).await;

    let before = feed.wakeups();
    for n in 1..=5 {
        a.write_doc(json!({"n": n})).await;
        assert_eq!(next_version(&mut on_a).await.version, n + 1);
    }
    let woken = feed.wakeups() - before;
    assert!(
        (1..=5).contains(&woken),
        "five writes to a woke {woken} waiters (a has one watcher)"
    );
    for watch in &mut on_b {
        assert_quiet(watch, QUIET).await;
    }

    let before = feed.wakeups();
    b.write_doc(json!({"n": 1})).await;
    for watch in &mut on_b {
        assert_eq!(next_version(watch).await.version, 2);
    }
    assert_eq!(feed.wakeups() - before, 3, "b's three watchers, once each");
    assert_quiet(&mut on_a, QUIET).await;

    drop((on_a, on_b));
    settle(feed.as_ref(), 0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_write_wakes_only_the_watchers_of_its_context_sqlite() {
    only_the_watchers_of_the_written_context_wake(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_write_wakes_only_the_watchers_of_its_context_postgres() {
    only_the_watchers_of_the_written_context_wake(Backend::Postgres).await;
}

/// Writes on A reach watchers on B, and only those of the written context; B's own
/// NOTIFYs come back to B and wake nobody twice.
#[tokio::test]
async fn across_two_replicas_a_write_wakes_only_its_watchers_on_the_other() {
    let replicas = TwoReplicas::start().await;
    let acme = &replicas.acme;
    let on_a = contexts(replicas.a.local_addr, &acme.admin_key).await;
    let on_b = contexts(replicas.b.local_addr, &acme.admin_key).await;
    let parent = acme.project_name("web");
    let (a, _) = Ctx::create(&on_a, &parent, "a", keeping(0), Some(json!({"n": 0}))).await;
    let (quiet, _) = Ctx::create(&on_a, &parent, "quiet", keeping(0), Some(json!({"n": 0}))).await;
    let mut watch_a = watching(&a.with(&on_b), 1).await;
    let mut watch_quiet = watching(&quiet.with(&on_b), 1).await;
    let feed_b = replicas.b.change_feed();
    settle(feed_b.as_ref(), 2).await;

    let before = feed_b.wakeups();
    let started = Instant::now();
    for n in 1..=10 {
        a.write_doc(json!({"n": n})).await;
    }
    for n in 2..=11 {
        assert_eq!(next_version(&mut watch_a).await.version, n);
    }
    println!("10 writes on A seen on B in {:?}", started.elapsed());
    assert_quiet(&mut watch_quiet, QUIET).await;
    let woken = feed_b.wakeups() - before;
    assert!(
        (1..=10).contains(&woken),
        "ten writes on A woke {woken} waiters on B (one watches the context)"
    );

    // And the other way, through B: A's watcher gets it, nobody else wakes on A.
    let mut watch_on_a = watching(&quiet, 1).await;
    let feed_a = replicas.a.change_feed();
    settle(feed_a.as_ref(), 1).await;
    let before_a = feed_a.wakeups();
    quiet.with(&on_b).write_doc(json!({"n": 1})).await;
    assert_eq!(next_version(&mut watch_on_a).await.version, 2);
    assert_eq!(next_version(&mut watch_quiet).await.version, 2);
    assert_eq!(feed_a.wakeups() - before_a, 1);
    drop((watch_a, watch_quiet, watch_on_a));
    replicas.stop().await;
}

/// A version that arrives without its notification (written behind the server's back,
/// as if the NOTIFY had been lost) is not seen by an idle watcher, which does not poll;
/// once the replica's LISTEN connection is found gone, every waiter looks again and the
/// watcher gets it.
#[tokio::test]
async fn a_lost_notification_is_made_good_when_the_listen_connection_is_lost() {
    let server = OwnServer::start(Backend::Postgres, Duration::from_millis(200)).await;
    let acme = server.tenant("acme").await;
    acme.project("web").await;
    let client = contexts(server.addr, &acme.admin_key).await;
    let (c, _) = Ctx::create(
        &client,
        &acme.project_name("web"),
        "c",
        keeping(0),
        Some(json!({"n": 1})),
    )
    .await;
    let mut watch = watching(&c, 1).await;
    settle(server.change_feed().as_ref(), 1).await;

    let db = &server.database;
    db.execute(
        "INSERT INTO context_versions SELECT workspace_id, project_id, context_id, 2, op, \
         rollback_of, sha256, size_bytes, author, 'behind the feed', request_id, create_time \
         FROM context_versions WHERE context_id = 'c' AND version = 1",
    )
    .await
    .expect("insert a version");
    db.execute("UPDATE contexts SET head_version = 2 WHERE context_id = 'c'")
        .await
        .expect("move the head");
    // Several liveness periods: the connection is fine, nobody looks.
    assert_quiet(&mut watch, Duration::from_millis(1500)).await;

    let killed = db
        .execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = '{}'",
            agentry_store::LISTENER_NAME
        ))
        .await
        .expect("terminate the listener");
    assert_eq!(killed, 1, "one LISTEN connection");
    let lost = Instant::now();
    let version = next_within(&mut watch, Duration::from_secs(5))
        .await
        .expect("the watch goes on")
        .expect("a version");
    println!(
        "seen {:?} after the LISTEN connection was killed",
        lost.elapsed()
    );
    assert_eq!(version.version, 2);
    assert_eq!(version.description, "behind the feed");

    // And the feed works again: a write wakes the watcher through the new connection.
    c.write_doc(json!({"n": 3})).await;
    assert_eq!(next_version(&mut watch).await.version, 3);
    server.shutdown().await;
}

/// The keys-carrying notifications on the feed's channel within `window` (liveness
/// NOTIFYs and hellos carry none).
async fn keys_sent(channel: &mut sqlx::postgres::PgListener, window: Duration) -> usize {
    let mut sent = 0;
    let deadline = Instant::now() + window;
    while let Ok(received) = tokio::time::timeout_at(deadline.into(), channel.recv()).await {
        let notification = received.expect("the test's LISTEN connection");
        let (_, rest) = notification
            .payload()
            .split_once(' ')
            .expect("a feed payload");
        if !rest.is_empty() && !rest.starts_with('!') {
            sent += 1;
        }
    }
    sent
}

/// A replica alone on its database stops NOTIFYing its writes once it has heard only
/// itself for a few liveness periods; a replica started beside it is heard at once (its
/// hello), and a write made on the first right after reaches a watcher on the second.
#[tokio::test]
async fn a_replica_alone_notifies_nobody_and_one_starting_beside_it_misses_nothing() {
    let period = Duration::from_millis(100);
    let a = OwnServer::start(Backend::Postgres, period).await;
    let acme = a.tenant("acme").await;
    acme.project("web").await;
    let on_a = contexts(a.addr, &acme.admin_key).await;
    let parent = acme.project_name("web");
    let (c, _) = Ctx::create(&on_a, &parent, "c", keeping(0), Some(json!({"n": 0}))).await;
    let mut channel = sqlx::postgres::PgListener::connect(&a.database.url)
        .await
        .expect("the test listens");
    channel
        .listen(agentry_store::FEED_CHANNEL)
        .await
        .expect("LISTEN");

    // Writes on A are NOTIFYed until its probation is over, then no more.
    let mut head = 1;
    let started = Instant::now();
    loop {
        head += 1;
        c.write_doc(json!({"n": head})).await;
        if keys_sent(&mut channel, period * 2).await == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica A still NOTIFYs its writes"
        );
    }
    println!("A alone after {:?}", started.elapsed());

    let b = agentry_server::start(config(&a.database.url, &a.root_key, period))
        .await
        .expect("replica B starts");
    let on_b = contexts(b.local_addr, &acme.admin_key).await;
    let mut watch = watching(&c.with(&on_b), head).await;
    settle(b.change_feed().as_ref(), 1).await;
    for _ in 0..3 {
        head += 1;
        c.write_doc(json!({"n": head})).await;
        let version = next_within(&mut watch, Duration::from_secs(2))
            .await
            .expect("the watch on B goes on")
            .expect("a version");
        assert_eq!(version.version, head);
    }
    let announced = keys_sent(&mut channel, period * 3).await;
    assert!(announced >= 3, "{announced} NOTIFYs for three writes");
    head += 1;
    c.write_doc(json!({"n": head})).await;
    assert_eq!(
        keys_sent(&mut channel, period * 3).await,
        1,
        "A NOTIFYs again, B being there"
    );
    drop(watch);
    b.shutdown().await.expect("replica B stops");
    a.shutdown().await;
}
