//! WatchContext: retained versions after the cursor replayed from storage, then live ones,
//! in order and each exactly once; resumable from any version seen; an explicit
//! OUT_OF_RANGE instead of a silent skip below the retention floor; ended by deleting
//! the context or stopping the server; and fast across replicas through Postgres
//! LISTEN/NOTIFY rather than the fallback poll.

mod contexts_support;

use std::time::{Duration, Instant};

use agentry_e2e::*;
use contexts_support::*;
use tonic::Code;

/// Workspace `acme`, project `web`, and context `id` with `versions` versions
/// (`{"i": 1}` … `{"i": versions}`), keeping the last `keep_last`.
async fn context_with(
    addr: std::net::SocketAddr,
    acme: &Tenant,
    id: &str,
    keep_last: i32,
    versions: i64,
) -> Ctx {
    let client = contexts(addr, &acme.admin_key).await;
    let (ctx, _) = Ctx::create(
        &client,
        &acme.project_name("web"),
        id,
        keeping(keep_last),
        Some(json!({"i": 1})),
    )
    .await;
    for i in 2..=versions {
        ctx.write_doc(json!({"i": i})).await;
    }
    ctx
}

async fn tenant(app: &TestApp) -> Tenant {
    let acme = app.tenant("acme").await;
    acme.project("web").await;
    acme
}

/// Writes `{"i": from}` … `{"i": to}` in the background.
fn write_in_background(ctx: &Ctx, from: i64, to: i64) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        for i in from..=to {
            let v = ctx.write_doc(json!({"i": i})).await;
            assert_eq!(v.version, i);
        }
    })
}

backend_tests!(
    context_watch_replays_then_follows_every_version_once_in_order,
    |app| async move {
        let acme = tenant(&app).await;
        let ctx = context_with(app.addr, &acme, "live", 0, 1).await;
        let mut stream = ctx.watch(0).await;
        let first = next_version(&mut stream).await;
        assert_eq!(first.version, 1);
        assert_eq!(first.name, format!("{}/versions/1", ctx.name));
        assert_eq!(doc_of(&first), json!({"i": 1}), "FULL is the default view");

        let writer = write_in_background(&ctx, 2, 51);
        for expected in 2..=51 {
            let v = next_version(&mut stream).await;
            assert_eq!(
                v.version, expected,
                "versions arrive in order, none skipped"
            );
            assert_eq!(doc_of(&v), json!({"i": expected}));
            assert!(!v.sha256.is_empty() && !v.author.is_empty());
        }
        writer.await.expect("writer");
        // Longer than the 1 s fallback poll: a duplicate would show.
        assert_quiet(&mut stream, Duration::from_millis(1500)).await;
    }
);

backend_tests!(
    context_watch_resumes_exactly_after_reconnecting,
    |app| async move {
        let acme = tenant(&app).await;
        let ctx = context_with(app.addr, &acme, "resume", 0, 20).await;
        // From a middle version: the rest of the history, then new versions.
        let mut stream = ctx.watch(10).await;
        for expected in 11..=20 {
            assert_eq!(next_version(&mut stream).await.version, expected);
        }
        drop(stream);

        // Disconnect every few versions while a writer keeps going; resume from the last
        // version seen each time.
        let writer = write_in_background(&ctx, 21, 60);
        let mut seen = Vec::new();
        let mut last = 20;
        let mut round = 0;
        while last < 60 {
            round += 1;
            let mut stream = ctx.watch(last).await;
            for _ in 0..(round % 4 + 2) {
                let v = next_version(&mut stream).await;
                assert_eq!(v.version, last + 1, "resumed after {last}");
                last = v.version;
                seen.push(last);
                if last == 60 {
                    break;
                }
            }
        }
        writer.await.expect("writer");
        assert_eq!(seen, (21..=60).collect::<Vec<_>>());
        let mut stream = ctx.watch(60).await;
        assert_quiet(&mut stream, Duration::from_millis(1500)).await;
    }
);

backend_tests!(
    context_watch_from_minus_one_sees_only_new_versions,
    |app| async move {
        let acme = tenant(&app).await;
        let ctx = context_with(app.addr, &acme, "news", 0, 5).await;
        let mut news = ctx.watch(-1).await;
        let basic = pb::WatchContextRequest {
            view: pb::ContextVersionView::Basic as i32,
            ..watch(&ctx.name, -1)
        };
        let mut headers = ctx.client.clone().watch_context(basic).await.must();
        assert_quiet(&mut news, Duration::from_millis(300)).await;
        ctx.write_doc(json!({"i": 6})).await;
        let v = next_version(&mut news).await;
        assert_eq!((v.version, doc_of(&v)), (6, json!({"i": 6})));
        let h = next_version(&mut headers).await;
        assert_eq!(h.version, 6);
        assert_eq!(h.data, None, "BASIC has no data");
        assert_eq!(h.sha256, v.sha256);

        // A noop write is no version, so nothing arrives.
        assert!(ctx.try_write(data(json!({"i": 6}))).await.unwrap().noop);
        assert_quiet(&mut news, Duration::from_millis(1500)).await;

        // An empty context: -1 and 0 both wait for version 1.
        let client = contexts(app.addr, &acme.admin_key).await;
        let (empty, _) = Ctx::create(
            &client,
            &acme.project_name("web"),
            "empty",
            keeping(0),
            None,
        )
        .await;
        let mut from_zero = empty.watch(0).await;
        let mut from_now = empty.watch(-1).await;
        empty.write_doc(json!({"first": true})).await;
        assert_eq!(next_version(&mut from_zero).await.version, 1);
        assert_eq!(next_version(&mut from_now).await.version, 1);

        let bad = ctx.try_watch(-2).await;
        assert_invalid(bad, "INVALID_ARGUMENT", "after_version");
        let bad_view = pb::WatchContextRequest {
            view: 99,
            ..watch(&ctx.name, 0)
        };
        let bad_view = ctx.client.clone().watch_context(bad_view).await.map(|_| ());
        assert_eq!(bad_view.unwrap_err().code(), Code::InvalidArgument);
        let mut missing = ctx.clone();
        missing.name = format!("{}/contexts/missing", acme.project_name("web"));
        assert_eq!(
            missing.try_watch(0).await.unwrap_err().code(),
            Code::NotFound
        );
    }
);

backend_tests!(
    context_watch_starting_below_the_floor_is_out_of_range,
    |app| async move {
        let acme = tenant(&app).await;
        let ctx = context_with(app.addr, &acme, "short", 3, 10).await;
        assert_eq!(ctx.get().await.first_version, 8);
        // The call itself fails, naming the floor.
        for after in [0, 5, 6] {
            let result = ctx.try_watch(after).await;
            assert_status_meta(
                result,
                Code::OutOfRange,
                "VERSION_COMPACTED",
                "first_version",
                8,
            );
        }
        // From just below the floor, nothing is missing.
        let mut stream = ctx.watch(7).await;
        for expected in 8..=10 {
            assert_eq!(next_version(&mut stream).await.version, expected);
        }
        ctx.write_doc(json!({"i": 11})).await;
        assert_eq!(next_version(&mut stream).await.version, 11);
    }
);

backend_tests!(
    context_watcher_overtaken_by_compaction_gets_an_error_not_a_gap,
    |app| async move {
        // The watcher reads nothing while 300 versions of 4 KB go by, keeping 5. Its
        // connection has a small flow-control window, so the server cannot buffer them
        // all: compaction overtakes the watch, which must then say so with OUT_OF_RANGE
        // after a gapless prefix instead of jumping ahead.
        let acme = tenant(&app).await;
        let ctx = context_with(app.addr, &acme, "slow", 5, 1).await;
        let pad = "x".repeat(4096);
        let slow = contexts_with_window(app.addr, &acme.admin_key, 65_535).await;
        let mut stream = slow.clone().watch_context(watch(&ctx.name, 0)).await.must();
        for i in 2..=300 {
            ctx.write_doc(json!({"i": i, "pad": pad})).await;
        }
        let mut last = 0;
        let status = loop {
            match next_within(&mut stream, Duration::from_secs(10)).await {
                Ok(Some(v)) => {
                    assert_eq!(v.version, last + 1, "a watch skipped a version");
                    last = v.version;
                }
                Ok(None) => panic!("the watch ended quietly after version {last}"),
                Err(status) => break status,
            }
        };
        assert!(
            last < 295,
            "the watch was never overtaken (read up to {last})"
        );
        let status = assert_status(Err::<(), _>(status), Code::OutOfRange, "VERSION_COMPACTED");
        let floor: i64 = error_metadata(&status, "first_version")
            .and_then(|f| f.parse().ok())
            .expect("first_version metadata");
        assert!(
            floor > last + 1,
            "the error names a floor above the cursor: {floor} vs {last}"
        );
        // Resuming from the floor works. The error named the floor when the watch was
        // overtaken; compaction may have gone on while the error sat in the client's
        // buffer, so resume from the floor as it is now (the writes are over).
        let now = ctx.get().await.first_version;
        assert!(now >= floor, "the floor went down: {now} < {floor}");
        let mut resumed = ctx.watch(now - 1).await;
        assert_eq!(next_version(&mut resumed).await.version, now);
    }
);

/// A watcher that reads slowly (`pause` per version) over a small flow-control window
/// from `after` until version `until`, reconnecting from the floor whenever compaction
/// overtakes it. Returns the (from, to) jumps it saw within one stream.
async fn racing_watcher(
    ctx: Ctx,
    client: Contexts,
    pause: Duration,
    until: i64,
) -> Vec<(i64, i64)> {
    let mut gaps = Vec::new();
    let mut last = ctx.head().await.max(1) - 1;
    'connect: while last < until {
        let mut stream = match client.clone().watch_context(watch(&ctx.name, last)).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                let status =
                    assert_status(Err::<(), _>(status), Code::OutOfRange, "VERSION_COMPACTED");
                last = error_metadata(&status, "first_version")
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
                    - 1;
                continue;
            }
        };
        loop {
            match next_within(&mut stream, Duration::from_secs(10)).await {
                Ok(Some(v)) => {
                    if v.version != last + 1 {
                        gaps.push((last, v.version));
                    }
                    last = v.version;
                    if last >= until {
                        break 'connect;
                    }
                    tokio::time::sleep(pause).await;
                }
                Ok(None) => panic!("the watch ended quietly after {last}"),
                Err(status) => {
                    let status =
                        assert_status(Err::<(), _>(status), Code::OutOfRange, "VERSION_COMPACTED");
                    last = error_metadata(&status, "first_version")
                        .unwrap()
                        .parse::<i64>()
                        .unwrap()
                        - 1;
                    continue 'connect;
                }
            }
        }
    }
    gaps
}

backend_tests!(
    context_watchers_racing_compaction_never_skip_a_version,
    |app| async move {
        // keep_last 1 while a writer appends 3 KB versions as fast as it can: slow watchers
        // hover at the retention floor, where a version compacted between the floor check
        // and the read must be an OUT_OF_RANGE error, never a silent jump.
        let acme = tenant(&app).await;
        let ctx = context_with(app.addr, &acme, "racy", 1, 1).await;
        let until = 400;
        let pad = "x".repeat(3000);
        let writer = {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                for i in 2..=until {
                    ctx.write_doc(json!({"i": i, "pad": pad})).await;
                }
            })
        };
        let mut watchers = Vec::new();
        for w in 0..6 {
            let client = contexts_with_window(app.addr, &acme.admin_key, 8192).await;
            let pause = Duration::from_millis(w);
            watchers.push(tokio::spawn(racing_watcher(
                ctx.clone(),
                client,
                pause,
                until,
            )));
        }
        let mut gaps = Vec::new();
        for watcher in watchers {
            gaps.extend(watcher.await.expect("watcher"));
        }
        writer.await.expect("writer");
        assert_eq!(
            gaps,
            vec![],
            "(last seen, next delivered) jumps within one stream"
        );
    }
);

backend_tests!(
    deleting_a_context_ends_its_watch_with_not_found,
    |app| async move {
        let acme = tenant(&app).await;
        let ctx = context_with(app.addr, &acme, "doomed", 0, 2).await;
        let mut stream = ctx.watch(0).await;
        assert_eq!(next_version(&mut stream).await.version, 1);
        assert_eq!(next_version(&mut stream).await.version, 2);
        ctx.delete().await.unwrap();
        match next_within(&mut stream, Duration::from_secs(5)).await {
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
            Ok(other) => panic!("expected NOT_FOUND after the delete, got {other:?}"),
        }
    }
);

async fn shutdown_story(backend: Backend) {
    let mut server = OwnServer::start(backend, Duration::from_secs(1)).await;
    let acme = server.tenant("acme").await;
    acme.project("web").await;
    let ctx = context_with(server.addr, &acme, "bye", 0, 1).await;
    let mut stream = ctx.watch(0).await;
    assert_eq!(next_version(&mut stream).await.version, 1);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the server stops while a watch is open");
    // UNAVAILABLE, not a clean end: a clean end would read as "no more versions".
    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(Ok(Some(message))) => panic!("a message after shutdown: {message:?}"),
        Ok(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(Ok(None)) => panic!("the watch ended as if the history were complete"),
        Err(_) => panic!("the watch hangs after the server stopped"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for the open watch",
        started.elapsed()
    );
    server.shutdown().await;
}

per_backend!(
    stopping_the_server_ends_open_context_watches,
    shutdown_story
);

/// Each write on `writer` shows up on `watched` within 2 s.
async fn assert_prompt_delivery(writer: &Ctx, watched: &Ctx, writes: i64) {
    let head = writer.head().await;
    let mut stream = watched.watch(-1).await;
    for i in 1..=writes {
        writer.write_doc(json!({"i": head + i})).await;
        let written = Instant::now();
        let v = match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
            Ok(Ok(Some(message))) => message.version.unwrap(),
            Ok(other) => panic!("the watch failed or ended: {other:?}"),
            Err(_) => panic!("version {} did not arrive within 2 s", head + i),
        };
        assert_eq!(v.version, head + i);
        assert!(written.elapsed() < Duration::from_secs(2));
    }
}

async fn prompt_story(backend: Backend) {
    // A 30 s fallback poll: only wake-ups can deliver within 2 s.
    let server = OwnServer::start(backend, Duration::from_secs(30)).await;
    let acme = server.tenant("acme").await;
    acme.project("web").await;
    let ctx = context_with(server.addr, &acme, "prompt", 0, 1).await;
    assert_prompt_delivery(&ctx, &ctx, 10).await;
    server.shutdown().await;
}

per_backend!(
    live_context_versions_arrive_without_waiting_for_the_poll,
    prompt_story
);

#[tokio::test]
async fn a_context_watch_on_one_replica_sees_writes_on_another_within_two_seconds() {
    let replicas = TwoReplicas::start().await;
    let (a, b, acme) = (&replicas.a, &replicas.b, &replicas.acme);
    let on_a = context_with(a.local_addr, acme, "shared", 0, 1).await;
    let on_b = on_a.with(&contexts(b.local_addr, &acme.admin_key).await);
    assert_prompt_delivery(&on_a, &on_b, 20).await;
    // And the other way round.
    assert_prompt_delivery(&on_b, &on_a, 5).await;
    replicas.stop().await;
}
