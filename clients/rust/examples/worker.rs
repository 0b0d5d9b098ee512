//! A worker serving a `researcher` agent: it says what it will do, proposes a plan (its
//! `search` tool may need a human, per the run's autonomy level) and, once approved,
//! calls the tool, records a finding in a context and answers. SIGTERM or Ctrl-C stops
//! it gracefully: no new runs, running ones finish.
//!
//!     AGENTRY_URL=http://127.0.0.1:50051 AGENTRY_API_KEY=agk_… \
//!       cargo run -p agentry-client --example worker -- \
//!       workspaces/acme/agents/researcher workspaces/acme/projects/web/contexts/notes
//!
//! The tests run it as a process. `AGENTRY_LEASE_SECS` shortens the lease (a killed
//! worker's runs come back sooner); with `CRASH_MARKER` set, the first approved attempt
//! creates that file right after its tool call was sent and then hangs, to be killed.

use std::{path::PathBuf, time::Duration};

use agentry_client::{
    Error, connect, pb,
    worker::{Step, StepResult, TaskContext, Worker, WorkerOptions, json_value, steps},
};
use futures::Stream;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("AGENTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let key = std::env::var("AGENTRY_API_KEY").expect("AGENTRY_API_KEY");
    let mut args = std::env::args().skip(1);
    let agent = args.next().expect("an agent name");
    let context = args.next().expect("a context name");
    let mut options = WorkerOptions::default();
    if let Some(secs) = std::env::var("AGENTRY_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        options.lease_duration = Duration::from_secs_f64(secs);
        options.heartbeat_wait = Duration::from_secs_f64(secs / 2.0);
        options.poll_wait = Duration::from_secs(5);
    }
    let crash_marker = std::env::var_os("CRASH_MARKER").map(PathBuf::from);

    // A worker: one handler per agent, run on up to `concurrency` runs at once.
    let mut worker = Worker::with_options(connect(url, &key).await?, options);
    worker.agent(&agent, move |task| {
        researcher(task, context.clone(), crash_marker.clone())
    })?;

    // Stop gracefully on SIGTERM or Ctrl-C: no new runs, running handlers finish.
    let stop = worker.stop_handle();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.stop();
    });
    println!("worker {} serving {agent}", std::process::id());
    worker.run().await
}

/// The handler: a stream of steps, written as an async block that emits them. A cancel
/// drops it; an `Err` fails the attempt (retryable or not, see HandlerError).
fn researcher(
    task: TaskContext,
    context: String,
    crash_marker: Option<PathBuf>,
) -> impl Stream<Item = StepResult> + Send + use<> {
    steps(move |out| async move {
        let question = task
            .input()
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        if task.resume().is_none() {
            out.emit(Step::text("Let me look that up. ")).await;
            let plan = vec![pb::PlanStep {
                tool: "search".into(),
                arguments: Some(json_value(json!({ "q": question }))),
                ..Default::default()
            }];
            if !task.propose_plan(plan).await?.approved {
                // The run waits for a human; the decision comes back as `task.resume()`.
                return Ok(());
            }
        }
        let call = format!("call-{}", task.attempt());
        out.emit(Step::tool_call(&call, "search", json!({ "q": question })))
            .await;
        if let Some(marker) = crash_marker.filter(|m| !m.exists()) {
            tokio::time::sleep(Duration::from_millis(500)).await; // the tool call is sent
            std::fs::write(&marker, std::process::id().to_string())?;
            tokio::time::sleep(Duration::from_secs(3600)).await; // killed here
        }
        out.emit(Step::tool_result(&call, json!({ "hits": 3 })))
            .await;
        let finding = json!({ "findings": [format!("3 hits for {question}")] });
        task.client()
            .contexts
            .write_context(pb::WriteContextRequest {
                name: context,
                change: Some(pb::write_context_request::Change::MergePatch(json_value(
                    finding,
                ))),
                ..Default::default()
            })
            .await
            .map_err(Error::from)?;
        out.emit(Step::text("Found 3 results.")).await;
        out.emit(Step::message("Found 3 results.")).await;
        Ok(())
    })
}
