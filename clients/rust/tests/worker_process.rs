//! A worker process (examples/worker.rs) killed with SIGKILL mid-run: its lease lapses,
//! its open tool call is closed, and a fresh worker process finishes the run on attempt
//! 2, after a plan a human approved.

mod support;

use std::{path::PathBuf, process::Stdio, time::Duration};

use agentry_client::pb;
use support::*;
use tokio::process::{Child, Command};

/// examples/worker.rs as the test build made it (a test run without a target filter
/// builds the examples too), or built by cargo when it is missing or older than its
/// sources (a run of this test alone). Building it with cargo when it is current would
/// flip the features of shared dependencies and recompile them.
fn example_bin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug")
        .join("examples/worker");
    let sources = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if built.is_none_or(|built| {
        newest(&sources.join("src")).max(newest(&sources.join("examples/worker.rs"))) > built
    }) {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "agentry-client", "--example", "worker"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the worker example failed");
    }
    bin
}

/// The newest modification time of a file or of the files under a directory.
fn newest(path: &std::path::Path) -> std::time::SystemTime {
    let meta = std::fs::metadata(path).expect("a source path");
    if !meta.is_dir() {
        return meta.modified().expect("mtime");
    }
    std::fs::read_dir(path)
        .expect("a source directory")
        .map(|entry| newest(&entry.expect("an entry").path()))
        .max()
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
}

fn worker(server: &Server, world: &World, crash_marker: Option<&PathBuf>, log: &str) -> Child {
    let mut command = Command::new(example_bin());
    command
        .args([&world.agent, &world.context])
        .env("AGENTRY_URL", server.url())
        .env("AGENTRY_API_KEY", &world.worker_key)
        .env("AGENTRY_LEASE_SECS", "2")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(server.dir.join(log)).unwrap())
        .kill_on_drop(true);
    if let Some(marker) = crash_marker {
        command.env("CRASH_MARKER", marker);
    }
    command.spawn().expect("the worker example runs")
}

#[tokio::test]
async fn a_worker_killed_mid_run_is_replaced_and_the_run_finishes_on_attempt_2() {
    let server = Server::start().await;
    let world = world(&server.url(), &server.root).await;
    let marker = server.dir.join("crashed");
    let mut first = worker(&server, &world, Some(&marker), "worker-1.log");
    let run = world
        .run("rust async runtimes", pb::AutonomyLevel::L1)
        .await;
    approve(&world, &run.name).await;
    let deadline = tokio::time::Instant::now() + LONG;
    while !marker.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never reached its tool call"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    let killed = std::time::Instant::now();
    let mut second = worker(&server, &world, None, "worker-2.log");
    let events = world.events(&run.name).await;
    println!(
        "killed worker: run finished {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(
        events,
        [
            "a0 status UNSPECIFIED->QUEUED",
            "a1 status QUEUED->RUNNING",
            "a1 delta \"Let me look that up. \"",
            "a1 plan search auto=false",
            "a1 status RUNNING->REQUIRES_ACTION",
            "a1 decided APPROVE",
            "a1 status REQUIRES_ACTION->QUEUED",
            "a1 status QUEUED->RUNNING",
            "a1 tool_started call-1 search",
            // The worker was killed here: its open call is closed and the attempt re-queued.
            "a1 tool_completed call-1 synthetic",
            "a1 status RUNNING->QUEUED WORKER_LOST",
            "a2 status QUEUED->RUNNING",
            "a2 tool_started call-2 search",
            "a2 tool_completed call-2",
            "a2 delta \"Found 3 results.\"",
            "a2 message ASSISTANT \"Found 3 results.\"",
            "a2 status RUNNING->SUCCEEDED END_TURN",
        ]
    );
    let ended = world.get_run(&run.name).await;
    assert_eq!(
        (ended.status(), ended.attempt),
        (pb::RunStatus::Succeeded, 2)
    );
    // The second process wrote the finding into the context.
    let head = world
        .dev
        .clone()
        .contexts
        .read_context(pb::ReadContextRequest {
            name: world.context.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.version, 2);
    second.start_kill().unwrap();
}
