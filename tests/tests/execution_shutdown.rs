//! Stopping a server while workers and watchers hold long calls on it: a PollTask waiting
//! for work, a HeartbeatTask holding its reply and an open StreamRunEvents must end
//! promptly (not hold shutdown for the whole grace period), and the run they were about
//! stays intact in storage for the next server on the same database.

mod execution_support;

use std::time::{Duration, Instant};

use agentry_e2e::*;
use execution_support::*;
use pb::RunStatus;

async fn shutdown_story(backend: Backend) {
    let database = fresh_database(backend).await;
    let root_key = new_root_key();
    let long_grace = |url: &str| agentry_server::config::Config {
        shutdown_grace: Duration::from_secs(10),
        ..config(url, &root_key)
    };
    let server = agentry_server::start(long_grace(&database.url))
        .await
        .expect("the server starts");
    let w = World::setup_on(server.local_addr, &root_key).await;
    let session = w.session("s").await;
    let run = w.run(&session.name, "interrupted by a restart").await;
    let task = w.worker.claim().await;
    w.worker
        .append(&task.task_token, vec![delta("m", "before")])
        .await;

    let mut stream = w.stream(&run.name, 0).await;
    for _ in 0..3 {
        next_event(&mut stream, SOON).await;
    }
    let held_beat = {
        let worker = w.worker.clone();
        let token = task.task_token.clone();
        tokio::spawn(async move { worker.heartbeat(&token, Duration::from_secs(30)).await })
    };
    let idle_poll = {
        // The only run is leased already: this poll waits.
        let worker = w.worker.clone();
        tokio::spawn(async move {
            worker
                .try_poll(Duration::from_secs(30), Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held_beat.is_finished() && !idle_poll.is_finished());

    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), server.shutdown())
        .await
        .expect("shutdown returns")
        .expect("the server shuts down cleanly");
    let took = stopping.elapsed();
    println!("shutdown with a held poll, heartbeat and stream took {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "held calls kept the server for {took:?} of its 10 s grace"
    );
    for (what, handle) in [
        (
            "HeartbeatTask",
            tokio::spawn(async move { held_beat.await.map(|_| ()) }),
        ),
        (
            "PollTask",
            tokio::spawn(async move { idle_poll.await.map(|_| ()) }),
        ),
    ] {
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap_or_else(|_| panic!("the held {what} hangs after shutdown"))
            .unwrap()
            .unwrap();
    }
    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(Ok(Some(message))) => panic!("an event after shutdown: {message:?}"),
        Ok(Ok(None) | Err(_)) => {}
        Err(_) => panic!("the event stream hangs after shutdown"),
    }

    // The next server on the same database carries on where the first stopped.
    let again = agentry_server::start(config(&database.url, &root_key))
        .await
        .expect("the server starts again");
    let client = execution_on(again.local_addr, &w.acme.admin_key).await;
    let stored = client.clone().get_run(get_run(&run.name)).await.must();
    assert_eq!(stored.status, RunStatus::Running as i32);
    assert_eq!(stored.last_sequence, 3);
    let worker = w
        .worker
        .with_client(execution_on(again.local_addr, &w.worker_key).await);
    worker
        .heartbeat(&task.task_token, Duration::ZERO)
        .await
        .expect("the lease survives a restart");
    let done = worker.complete(&task.task_token, "after").await;
    assert_eq!(done.status, RunStatus::Succeeded as i32);
    again.shutdown().await.expect("the server stops");
    database.drop_database().await;
}

#[tokio::test]
async fn stopping_the_server_ends_held_calls_promptly_sqlite() {
    shutdown_story(Backend::Sqlite).await;
}

#[tokio::test]
async fn stopping_the_server_ends_held_calls_promptly_postgres() {
    shutdown_story(Backend::Postgres).await;
}
