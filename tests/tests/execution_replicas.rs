//! Two replicas on one Postgres database: a worker on replica A, a client and an event
//! watcher on replica B. Runs created on B wake a PollTask waiting on A; events appended
//! on A reach a stream on B in order and exactly once; a cancel on B reaches a heartbeat
//! held on A; and a lease lost on A is taken over by a worker on B.

mod execution_support;

use std::time::{Duration, Instant};

use agentry_e2e::*;
use execution_support::*;
use pb::RunStatus;
use tonic::Code;

#[tokio::test]
async fn a_worker_on_one_replica_and_a_watcher_on_another_see_the_same_run() {
    let database = fresh_database(Backend::Postgres).await;
    let root_key = new_root_key();
    let a = agentry_server::start(config(&database.url, &root_key))
        .await
        .expect("replica A starts");
    let b = agentry_server::start(config(&database.url, &root_key))
        .await
        .expect("replica B starts");
    let on_a = World::setup_on(a.local_addr, &root_key).await;
    let on_b = on_a.on_replica(b.local_addr).await;
    let session = on_b.session("s").await;

    // A worker on A is already waiting when the run is created on B.
    let waiting = {
        let worker = on_a.worker.clone();
        tokio::spawn(async move {
            let task = worker.poll(SOON, Duration::from_secs(30)).await;
            (Instant::now(), task)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created_at = Instant::now();
    let run = on_b.run(&session.name, "across").await;
    let mut watch = on_b.stream(&run.name, 0).await;
    let (claimed_at, task) = waiting.await.unwrap();
    let task = task.expect("the worker on A gets the run created on B");
    let wake = claimed_at.duration_since(created_at);
    println!("run created on B → leased on A: {wake:?}");
    assert!(
        wake < Duration::from_secs(3),
        "PollTask on A woke after {wake:?}"
    );
    assert_eq!(task.run.as_ref().unwrap().name, run.name);

    // Events appended on A arrive on B, in order, each once.
    let mut seen = vec![
        next_event(&mut watch, SOON).await,
        next_event(&mut watch, SOON).await,
    ];
    let mut worst = Duration::ZERO;
    for i in 1..=20 {
        let sent = Instant::now();
        let last = on_a
            .worker
            .append(&task.task_token, vec![delta("m", &format!("d{i}"))])
            .await;
        let event = next_event(&mut watch, SOON).await;
        worst = worst.max(sent.elapsed());
        assert_eq!(event.sequence, last);
        assert_eq!(describe(&event), format!("delta m \"d{i}\""));
        seen.push(event);
    }
    println!("append on A → event on B: worst {worst:?}");
    assert!(
        worst < Duration::from_secs(3),
        "an event took {worst:?} to cross replicas"
    );

    // A cancel on B reaches a heartbeat held on A.
    let held = {
        let worker = on_a.worker.clone();
        let token = task.task_token.clone();
        tokio::spawn(async move {
            let reply = worker.heartbeat(&token, Duration::from_secs(10)).await;
            (Instant::now(), reply)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished());
    let asked = Instant::now();
    let cancelling = on_b
        .cancel(&run.name, "from B")
        .await
        .expect("CancelRun on B");
    assert_eq!(cancelling.status, RunStatus::Cancelling as i32);
    let (heard, reply) = tokio::time::timeout(SOON, held)
        .await
        .expect("the heartbeat returns")
        .unwrap();
    assert!(reply.expect("HeartbeatTask").cancel_requested);
    let latency = heard.duration_since(asked);
    println!("CancelRun on B → held heartbeat on A: {latency:?}");
    assert!(
        latency < Duration::from_secs(2),
        "the cancel took {latency:?} to cross replicas"
    );
    let done = on_a
        .worker
        .fail(&task.task_token, "Cancelled", false)
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Cancelled as i32);

    seen.extend(read_to_end(&mut watch, SOON).await);
    assert_gapless(&run.name, &seen);
    assert_eq!(
        seen,
        on_a.finished_log(&run.name).await,
        "B saw exactly A's log"
    );
    assert_eq!(
        describe(seen.last().unwrap()),
        "status CANCELLING->CANCELLED CANCELLED"
    );

    // A worker on A dies; one on B takes the run over.
    let second = on_a
        .start(
            &session.name,
            pb::Run {
                retry_policy: retry(100, 3),
                ..spec("again")
            },
        )
        .await;
    let dying = on_a.worker.claim_with_lease(Duration::from_secs(1)).await;
    assert_eq!(dying.run.as_ref().unwrap().name, second.name);
    let rescue = on_b.worker.claim().await;
    assert_eq!(rescue.run.as_ref().unwrap().name, second.name);
    assert_eq!(rescue.attempt, 2);
    let stale = on_a
        .worker
        .heartbeat(&dying.task_token, Duration::ZERO)
        .await;
    assert_status(stale, Code::FailedPrecondition, "STALE_TASK");
    // Each replica accepts the other's token.
    on_a.worker
        .heartbeat(&rescue.task_token, Duration::ZERO)
        .await
        .expect("A accepts B's lease");
    let finished = on_b.worker.complete(&rescue.task_token, "saved").await;
    assert_eq!(finished.status, RunStatus::Succeeded as i32);
    assert_eq!(finished.attempt, 2);
    assert_eq!(
        on_a.story(&second.name).await,
        [
            "status none->QUEUED",
            "status QUEUED->RUNNING",
            "status RUNNING->QUEUED WORKER_LOST",
            "status QUEUED->RUNNING",
            "message ASSISTANT \"saved\"",
            "status RUNNING->SUCCEEDED END_TURN",
        ]
    );

    a.shutdown().await.expect("replica A stops");
    b.shutdown().await.expect("replica B stops");
    database.drop_database().await;
}

#[tokio::test]
async fn competing_workers_on_two_replicas_never_lease_a_run_twice() {
    let database = fresh_database(Backend::Postgres).await;
    let root_key = new_root_key();
    let a = agentry_server::start(config(&database.url, &root_key))
        .await
        .expect("replica A starts");
    let b = agentry_server::start(config(&database.url, &root_key))
        .await
        .expect("replica B starts");
    let on_a = World::setup_on(a.local_addr, &root_key).await;
    let on_b = on_a.on_replica(b.local_addr).await;
    let runs = 12;
    let mut created = Vec::new();
    for i in 0..runs {
        let session = on_a.session(&format!("s{i}")).await;
        created.push(on_a.run(&session.name, "work").await.name);
    }
    // Four workers, two per replica, drain the queue.
    let mut workers = Vec::new();
    for (n, world) in [&on_a, &on_b, &on_a, &on_b].into_iter().enumerate() {
        let worker = world.worker.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(task) = worker
                .poll(Duration::from_millis(1500), Duration::from_secs(30))
                .await
            {
                let run = task.run.unwrap().name;
                worker
                    .complete(&task.task_token, &format!("worker {n}"))
                    .await;
                mine.push(run);
            }
            mine
        }));
    }
    let mut leased = Vec::new();
    for w in workers {
        leased.extend(w.await.unwrap());
    }
    leased.sort();
    created.sort();
    assert_eq!(leased, created, "each run leased exactly once");
    for name in &created {
        let run = on_b.get_run(name).await;
        assert_eq!((run.status, run.attempt), (RunStatus::Succeeded as i32, 1));
    }
    a.shutdown().await.expect("replica A stops");
    b.shutdown().await.expect("replica B stops");
    database.drop_database().await;
}
