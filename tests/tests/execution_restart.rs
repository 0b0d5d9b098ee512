//! A server restart in the middle of a run: the lease, the task token and the event log
//! all live in the database, so a worker carries on against the restarted server (a new
//! process on the same Postgres) with the token it had, and a watcher resumes its stream
//! from the last sequence it saw, missing and repeating nothing.

mod execution_support;

use agentry_e2e::*;
use execution_support::*;
use pb::RunStatus;

#[tokio::test]
async fn a_run_survives_a_server_restart() {
    let database = fresh_database(Backend::Postgres).await;
    let root_key = new_root_key();
    let first = agentry_server::start(config(&database.url, &root_key))
        .await
        .expect("the first server starts");
    let before = World::setup_on(first.local_addr, &root_key).await;
    let session = before.session("s").await;
    let run = before.run(&session.name, "survive").await;
    let task = before.worker.claim().await;
    before
        .worker
        .append(&task.task_token, vec![delta("m", "before ")])
        .await;
    let mut watch = before.stream(&run.name, 0).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut watch, SOON).await);
    }
    first.shutdown().await.expect("the first server stops");
    // The open stream ends UNAVAILABLE (resume elsewhere), not as if the run had ended.
    match watch.message().await {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(other) => panic!("expected UNAVAILABLE at shutdown, got {other:?}"),
    }

    let second = agentry_server::start(config(&database.url, &root_key))
        .await
        .expect("the second server starts on the same database");
    let after = before.on_replica(second.local_addr).await;
    // The token issued by the first process is honoured by the second.
    let last = after
        .worker
        .append(&task.task_token, vec![delta("m", "after")])
        .await;
    assert_eq!(last, 4);
    let done = after.worker.complete(&task.task_token, "done").await;
    assert_eq!(done.status, RunStatus::Succeeded as i32);
    assert_eq!(done.attempt, 1, "no retry was needed");

    // The watcher reconnects from the last sequence it saw.
    let mut resumed = after.stream(&run.name, seen.last().unwrap().sequence).await;
    seen.extend(read_to_end(&mut resumed, SOON).await);
    assert_gapless(&run.name, &seen);
    assert_eq!(
        describe_all(&seen),
        [
            "status none->QUEUED",
            "status QUEUED->RUNNING",
            "delta m \"before \"",
            "delta m \"after\"",
            "message ASSISTANT \"done\"",
            "status RUNNING->SUCCEEDED END_TURN",
        ]
    );
    second.shutdown().await.expect("the second server stops");
    database.drop_database().await;
}
