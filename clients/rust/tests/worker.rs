//! The Rust `Worker` against a real `agentry serve` process: a cancel drops the handler's
//! stream, plans approved by the autonomy level or by a human, a handler failure retried
//! (and one that is not), the concurrency limit, a graceful stop, a server restart
//! ridden out on attempt 1, and an outage longer than the lease: the attempt is abandoned
//! (not failed) and the run finishes on attempt 2.

mod support;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use agentry_client::{
    Error, pb,
    worker::{
        CancelToken, HandlerError, Step, StepResult, TaskContext, Worker, WorkerOptions,
        json_value, steps,
    },
};
use futures::Stream;
use serde_json::json;
use support::*;
use tokio::task::JoinHandle;

fn options() -> WorkerOptions {
    WorkerOptions {
        lease_duration: Duration::from_secs(10),
        heartbeat_wait: Duration::from_secs(1),
        poll_wait: Duration::from_secs(2),
        ..WorkerOptions::default()
    }
}

/// Runs a worker with `handler` for the world's agent until the returned handle stops it.
fn serve<F, S>(
    world: &World,
    options: WorkerOptions,
    handler: F,
) -> (
    agentry_client::worker::StopHandle,
    JoinHandle<Result<(), Error>>,
)
where
    F: Fn(TaskContext) -> S + Send + Sync + 'static,
    S: Stream<Item = StepResult> + Send + 'static,
{
    let mut worker = Worker::with_options(world.worker.clone(), options);
    worker.agent(&world.agent, handler).unwrap();
    let stop = worker.stop_handle();
    (stop, tokio::spawn(worker.run()))
}

/// Says it will search, proposes the plan, and once approved calls the tool and answers.
fn researcher(task: TaskContext) -> impl Stream<Item = StepResult> + Send + use<> {
    steps(move |out| async move {
        if task.resume().is_none() {
            out.emit(Step::text("Let me look. ")).await;
            let plan = vec![pb::PlanStep {
                tool: "search".into(),
                arguments: Some(json_value(json!({"q": "x"}))),
                ..Default::default()
            }];
            if !task.propose_plan(plan).await?.approved {
                return Ok(());
            }
        }
        out.emit(Step::tool_call("c1", "search", json!({"q": "x"})))
            .await;
        out.emit(Step::tool_result("c1", json!({"hits": 3}))).await;
        out.emit(Step::message("Found 3.")).await;
        Ok(())
    })
}

async fn wait_for(world: &World, run: &str, done: impl Fn(&pb::Run) -> bool) -> pb::Run {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let current = world.get_run(run).await;
        if done(&current) {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_cancel_sets_the_token_drops_the_stream_and_ends_the_run_cancelled() {
    let server = Server::start().await;
    let world = world(&server.url(), &server.root).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let token: Arc<Mutex<Option<CancelToken>>> = Arc::default();
    let (flag, seen) = (dropped.clone(), token.clone());
    let (stop, worker) = serve(&world, options(), move |task| {
        *seen.lock().unwrap() = Some(task.cancel_token());
        let guard = SetOnDrop(flag.clone());
        steps(move |out| async move {
            let _guard = guard;
            out.emit(Step::text("working")).await;
            std::future::pending::<()>().await;
            Ok(())
        })
    });
    let run = world.run("cancel me", pb::AutonomyLevel::L3).await;
    wait_for(&world, &run.name, |r| r.last_sequence >= 3).await;
    world
        .dev
        .clone()
        .execution
        .cancel_run(pb::CancelRunRequest {
            name: run.name.clone(),
            reason: "changed my mind".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let events = world.events(&run.name).await;
    let ended = world.get_run(&run.name).await;
    println!(
        "cancel: ended {:?} in {:?}: {events:?}",
        ended.status(),
        started.elapsed()
    );
    assert_eq!(ended.status(), pb::RunStatus::Cancelled);
    assert_eq!(ended.attempt, 1);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler's stream was dropped"
    );
    assert!(token.lock().unwrap().as_ref().unwrap().is_cancelled());
    assert!(
        events.contains(&"a1 delta \"working\"".to_owned()),
        "{events:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the cancel arrived with the next heartbeat answer"
    );
    stop.stop();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_plan_the_autonomy_level_allows_goes_on_at_once() {
    let server = Server::start().await;
    let world = world(&server.url(), &server.root).await;
    let (stop, worker) = serve(&world, options(), researcher);
    let run = world.run("search at L2", pb::AutonomyLevel::L2).await;
    let events = world.events(&run.name).await;
    assert_eq!(
        events,
        [
            "a0 status UNSPECIFIED->QUEUED",
            "a1 status QUEUED->RUNNING",
            "a1 delta \"Let me look. \"",
            "a1 plan search auto=true",
            "a1 decided APPROVE",
            "a1 tool_started c1 search",
            "a1 tool_completed c1",
            "a1 message ASSISTANT \"Found 3.\"",
            "a1 status RUNNING->SUCCEEDED END_TURN",
        ]
    );
    stop.stop();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_plan_that_needs_a_human_waits_and_resumes_once_approved() {
    let server = Server::start().await;
    let world = world(&server.url(), &server.root).await;
    let (stop, worker) = serve(&world, options(), researcher);
    let run = world.run("search at L1", pb::AutonomyLevel::L1).await;
    approve(&world, &run.name).await;
    let events = world.events(&run.name).await;
    assert_eq!(
        events,
        [
            "a0 status UNSPECIFIED->QUEUED",
            "a1 status QUEUED->RUNNING",
            "a1 delta \"Let me look. \"",
            "a1 plan search auto=false",
            "a1 status RUNNING->REQUIRES_ACTION",
            "a1 decided APPROVE",
            "a1 status REQUIRES_ACTION->QUEUED",
            "a1 status QUEUED->RUNNING",
            "a1 tool_started c1 search",
            "a1 tool_completed c1",
            "a1 message ASSISTANT \"Found 3.\"",
            "a1 status RUNNING->SUCCEEDED END_TURN",
        ]
    );
    stop.stop();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_retryable_failure_is_retried_and_a_fatal_one_fails_the_run() {
    let server = Server::start().await;
    let world = world(&server.url(), &server.root).await;
    let (stop, worker) = serve(&world, options(), |task: TaskContext| {
        steps(move |out| async move {
            let text = task.input()[0].content.clone();
            out.emit(Step::text(format!("attempt {}", task.attempt())))
                .await;
            if text == "fatal" {
                return Err(HandlerError::fatal("Broken", "no way"));
            }
            if task.attempt() == 1 {
                return Err(HandlerError::retryable("Flaky", "try again")
                    .retry_after(Duration::from_millis(100)));
            }
            out.emit(Step::message("made it")).await;
            Ok(())
        })
    });
    let flaky = world.run("flaky", pb::AutonomyLevel::L0).await;
    let fatal = world.run("fatal", pb::AutonomyLevel::L0).await;
    let events = world.events(&flaky.name).await;
    assert_eq!(
        events,
        [
            "a0 status UNSPECIFIED->QUEUED",
            "a1 status QUEUED->RUNNING",
            "a1 delta \"attempt 1\"",
            "a1 error Flaky",
            "a1 status RUNNING->QUEUED ERROR",
            "a2 status QUEUED->RUNNING",
            "a2 delta \"attempt 2\"",
            "a2 message ASSISTANT \"made it\"",
            "a2 status RUNNING->SUCCEEDED END_TURN",
        ]
    );
    let flaky = world.get_run(&flaky.name).await;
    assert_eq!(
        (flaky.status(), flaky.attempt),
        (pb::RunStatus::Succeeded, 2)
    );
    world.events(&fatal.name).await;
    let fatal = world.get_run(&fatal.name).await;
    assert_eq!((fatal.status(), fatal.attempt), (pb::RunStatus::Failed, 1));
    let error = fatal.error.unwrap();
    assert_eq!(
        (error.r#type.as_str(), error.message.as_str()),
        ("Broken", "no way")
    );
    stop.stop();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_concurrency_limit_holds_and_a_stop_lets_running_handlers_finish() {
    let server = Server::start().await;
    let world = world(&server.url(), &server.root).await;
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, m) = (now.clone(), most.clone());
    let (stop, worker) = serve(
        &world,
        WorkerOptions {
            concurrency: 2,
            ..options()
        },
        move |_task| {
            let (n, m) = (n.clone(), m.clone());
            steps(move |out| async move {
                m.fetch_max(n.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(400)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                out.emit(Step::message("done")).await;
                Ok(())
            })
        },
    );
    let mut runs = Vec::new();
    for i in 0..4 {
        runs.push(world.run(&format!("run {i}"), pb::AutonomyLevel::L0).await);
    }
    for run in &runs {
        world.events(&run.name).await;
        assert_eq!(
            world.get_run(&run.name).await.status(),
            pb::RunStatus::Succeeded
        );
    }
    assert_eq!(most.load(Ordering::SeqCst), 2, "never more than 2 at once");

    // Stop while a handler runs: run() returns after the run succeeded. The handler
    // itself says it runs; the run's RUNNING status alone would not do, because it
    // commits before the worker has the task, and a stop in that instant drops the
    // answer (the run is then retried once its lease lapses).
    let last = world.run("during stop", pb::AutonomyLevel::L0).await;
    tokio::time::timeout(LONG, async {
        while now.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the handler starts");
    stop.stop();
    tokio::time::timeout(LONG, worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        world.get_run(&last.name).await.status(),
        pb::RunStatus::Succeeded
    );
}

#[tokio::test]
async fn a_server_restart_mid_run_is_ridden_out_on_attempt_1() {
    let mut server = Server::start().await;
    let world = world(&server.url(), &server.root).await;
    let (stop, worker) = serve(&world, options(), |_task| {
        steps(move |out| async move {
            out.emit(Step::text("before ")).await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            // The server is down now: this batch and the end are retried until it is back.
            out.emit(Step::text("after")).await;
            out.emit(Step::message("before after")).await;
            Ok(())
        })
    });
    let run = world.run("survive", pb::AutonomyLevel::L0).await;
    wait_for(&world, &run.name, |r| r.last_sequence >= 3).await;
    let started = std::time::Instant::now();
    server.restart(Duration::from_secs(3)).await;
    println!("restart: server back after {:?}", started.elapsed());
    let events = world.events(&run.name).await;
    assert_eq!(
        events,
        [
            "a0 status UNSPECIFIED->QUEUED",
            "a1 status QUEUED->RUNNING",
            "a1 delta \"before \"",
            "a1 delta \"after\"",
            "a1 message ASSISTANT \"before after\"",
            "a1 status RUNNING->SUCCEEDED END_TURN",
        ]
    );
    let ended = world.get_run(&run.name).await;
    assert_eq!(
        (ended.status(), ended.attempt),
        (pb::RunStatus::Succeeded, 1)
    );
    stop.stop();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_server_down_past_the_lease_costs_an_attempt_but_is_no_handler_failure() {
    let mut server = Server::start().await;
    let world = world(&server.url(), &server.root).await;
    let options = WorkerOptions {
        lease_duration: Duration::from_secs(2),
        heartbeat_wait: Duration::from_secs(1),
        ..options()
    };
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let (stop, worker) = serve(&world, options, move |task: TaskContext| {
        let guard = (task.attempt() == 1).then(|| SetOnDrop(flag.clone()));
        steps(move |out| async move {
            let _guard = guard;
            out.emit(Step::text(format!("attempt {}", task.attempt())))
                .await;
            if task.attempt() == 1 {
                std::future::pending::<()>().await; // the lease runs out under it
            }
            out.emit(Step::message("done")).await;
            Ok(())
        })
    });
    let run = world.run("outlast", pb::AutonomyLevel::L0).await;
    wait_for(&world, &run.name, |r| r.last_sequence >= 3).await;
    server.restart(Duration::from_secs(5)).await;
    let events = world.events(&run.name).await;
    assert_eq!(
        events,
        [
            "a0 status UNSPECIFIED->QUEUED",
            "a1 status QUEUED->RUNNING",
            "a1 delta \"attempt 1\"",
            "a1 status RUNNING->QUEUED WORKER_LOST",
            "a2 status QUEUED->RUNNING",
            "a2 delta \"attempt 2\"",
            "a2 message ASSISTANT \"done\"",
            "a2 status RUNNING->SUCCEEDED END_TURN",
        ]
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the abandoned attempt's stream was dropped"
    );
    stop.stop();
    worker.await.unwrap().unwrap();
}
