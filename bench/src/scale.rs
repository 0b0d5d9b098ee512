//! How the cost of waiters grows (issue 15, "How the cost grows"), at several sizes so
//! that a reader sees the curve, not one point. Every figure comes from one server run
//! (`--binary`) on a fresh database; run it against two builds to compare them.
//!
//! 1. Idle streams: N WatchContext streams open and idle (on 100 contexts, 100 streams
//!    per connection), for each N of `--streams`: the CPU the server and Postgres spend
//!    per second while nothing happens, then WriteContext at 8 clients on contexts that
//!    nobody watches (writes/s, p99, CPU per write). A last row, `0 again`, measures
//!    the same with every stream closed: the writes of the earlier rows have grown the
//!    database by then, and that row tells their share of a difference from the first.
//! 2. Waiting pollers: W PollTask long-polls waiting on one workspace, for each W of
//!    `--pollers`; runs are created at a steady `--rate` per second, each taken by a
//!    waiting poller, which completes it at once and polls again: pickup latency
//!    (CreateRun sent → PollTask answered with that run) and the CPU per run of the
//!    server and Postgres, the waiting included.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use agentry_proto::v1 as pb;
use anyhow::{Context as _, bail};
use tonic::transport::Channel;

use crate::{
    Cli, context, cpu, execution,
    load::drive,
    server::{self, channel},
    stats::summarize,
};

/// Streams per connection (under HTTP/2's usual concurrent-stream limits).
const STREAMS_PER_CHANNEL: usize = 100;
const WATCHED_CONTEXTS: usize = 100;
const WRITERS: usize = 8;
/// Sessions the runs are spread over (one run in flight per session at the rate used).
const SESSIONS: usize = 16;

#[derive(clap::Args)]
pub struct Args {
    /// Idle WatchContext streams, one measurement per size.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,3000,10000")]
    streams: Vec<usize>,
    /// Waiting PollTask long-polls, one measurement per size.
    #[arg(long, value_delimiter = ',', default_value = "1,16,128,512")]
    pollers: Vec<usize>,
    /// Runs created per second while pollers wait.
    #[arg(long, default_value_t = 20)]
    rate: u32,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "scale benchmark: server {}; {} s per measurement; load average {}",
        cli.binary,
        cli.seconds,
        load.trim()
    );
    if !args.streams.is_empty() {
        idle_streams(cli, &args.streams).await?;
    }
    if !args.pollers.is_empty() {
        waiting_pollers(cli, &args.pollers, args.rate).await?;
    }
    Ok(())
}

fn micros_per(seconds: f64, count: usize) -> f64 {
    seconds / count.max(1) as f64 * 1e6
}

async fn idle_streams(cli: &Cli, sizes: &[usize]) -> anyhow::Result<()> {
    let root = format!("bench-root-{}", uuid::Uuid::now_v7().simple());
    let server = server::start(&cli.binary, &cli.database_url, &root).await?;
    let meter = cpu::Meter::new(server.pid())
        .for_cluster(&server.database_url)
        .await?;
    let (key, _) = context::prepare_contexts(&server).await?;
    let setup = server::contexts(channel(&server.addr).await?, &key);
    for i in 0..WATCHED_CONTEXTS {
        setup
            .clone()
            .create_context(pb::CreateContextRequest {
                parent: "workspaces/bench/projects/p".into(),
                context_id: format!("w{i}"),
                context: Some(pb::Context::default()),
                data: Some(context::document(0, 64)),
                request_id: String::new(),
            })
            .await?;
    }
    let writers: Vec<_> = futures::future::try_join_all((0..WRITERS).map(|_| async {
        Ok::<_, anyhow::Error>(server::contexts(channel(&server.addr).await?, &key))
    }))
    .await?;
    let writers = Arc::new(writers);
    println!(
        "\nidle WatchContext streams (on {WATCHED_CONTEXTS} contexts); writes: {WRITERS} clients on unwatched contexts"
    );
    println!(
        "{:>8} {:>14} {:>16} {:>10} {:>10} {:>22}",
        "streams", "server CPU/s", "Postgres CPU/s", "writes/s", "p99 ms", "CPU/write srv+pg µs"
    );
    let failed = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut open = Vec::new();
    let mut channels: Vec<Channel> = Vec::new();
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    for &size in &sorted {
        while open.len() < size {
            if open.len() % STREAMS_PER_CHANNEL == 0 {
                channels.push(channel(&server.addr).await?);
            }
            let client = server::contexts(channels.last().unwrap().clone(), &key);
            let n = open.len();
            open.push(tokio::spawn(watch(
                client,
                n,
                opened.clone(),
                failed.clone(),
            )));
            if open.len() % 500 == 0 {
                // Let the calls reach the server before opening more.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Every stream open (its first reads done) before the idle measurement.
        let opening = Instant::now();
        while opened.load(Ordering::Relaxed) < size && opening.elapsed() < Duration::from_secs(120)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if failed.load(Ordering::Relaxed) > 0 || opened.load(Ordering::Relaxed) < size {
            bail!(
                "{} watch streams failed, {} of {size} open",
                failed.load(Ordering::Relaxed),
                opened.load(Ordering::Relaxed)
            );
        }
        measure_idle_then_writes(cli, &meter, &writers, &size.to_string()).await?;
    }
    if failed.load(Ordering::Relaxed) > 0 {
        bail!("{} watch streams failed", failed.load(Ordering::Relaxed));
    }
    // Every stream closed, on the database the writes above have grown: what remains of
    // a difference from the first row is the database's growth, not the streams'.
    for task in open {
        task.abort();
    }
    drop(channels);
    tokio::time::sleep(Duration::from_secs(2)).await;
    measure_idle_then_writes(cli, &meter, &writers, "0 again").await?;
    Ok(())
}

/// One row: the CPU spent per second while idle, then WriteContext at [`WRITERS`]
/// clients on unwatched contexts.
async fn measure_idle_then_writes(
    cli: &Cli,
    meter: &cpu::Meter,
    writers: &Arc<Vec<server::Contexts>>,
    label: &str,
) -> anyhow::Result<()> {
    let before = meter.now();
    tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
    let idle = meter.now().since(&before);
    let per_second = |s: f64| s / cli.seconds as f64;
    let before = meter.now();
    let clients = writers.clone();
    let writes = drive(
        WRITERS,
        Duration::from_secs(cli.seconds),
        move |worker, n| {
            let mut client = clients[worker].clone();
            async move {
                client
                    .write_context(pb::WriteContextRequest {
                        name: context::context_name(worker),
                        change: Some(pb::write_context_request::Change::Data(context::document(
                            n, 1024,
                        ))),
                        ..Default::default()
                    })
                    .await?;
                Ok(())
            }
        },
    )
    .await?;
    let busy = meter.now().since(&before);
    println!(
        "{:>8} {:>13.3}s {:>15.3}s {:>10.0} {:>10.2} {:>12.0} + {:<8.0}",
        label,
        per_second(idle.server),
        per_second(idle.postgres),
        writes.per_second,
        writes.p99.as_secs_f64() * 1e3,
        micros_per(busy.server, writes.ops),
        micros_per(busy.postgres, writes.ops),
    );
    Ok(())
}

/// Holds one watch open, counting a failure if it ends.
async fn watch(
    mut client: server::Contexts,
    n: usize,
    opened: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) {
    let answer = client
        .watch_context(pb::WatchContextRequest {
            name: format!(
                "workspaces/bench/projects/p/contexts/w{}",
                n % WATCHED_CONTEXTS
            ),
            after_version: -1,
            ..Default::default()
        })
        .await;
    let Ok(stream) = answer else {
        failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    opened.fetch_add(1, Ordering::Relaxed);
    let mut stream = stream.into_inner();
    while let Ok(Some(_)) = stream.message().await {}
    failed.fetch_add(1, Ordering::Relaxed);
}

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

async fn waiting_pollers(cli: &Cli, sizes: &[usize], rate: u32) -> anyhow::Result<()> {
    let most = sizes.iter().copied().max().unwrap_or(1);
    let root = format!("bench-root-{}", uuid::Uuid::now_v7().simple());
    let server = server::start(&cli.binary, &cli.database_url, &root).await?;
    let meter = cpu::Meter::new(server.pid())
        .for_cluster(&server.database_url)
        .await?;
    // Quotas leave room for every poller; sessions c0…c15 take the runs.
    let keys = execution::setup(
        channel(&server.addr).await?,
        &root,
        execution::WORKSPACE_ID,
        most,
        SESSIONS,
    )
    .await?;
    println!(
        "\nwaiting PollTask long-polls on one workspace; {rate} runs/s created, each completed at once"
    );
    println!(
        "{:>8} {:>6} {:>12} {:>12} {:>24}",
        "pollers", "runs", "pickup p50", "pickup p99", "CPU/run srv + pg µs"
    );
    let picked: Seen = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut pollers = Vec::new();
    let mut channels: Vec<Channel> = Vec::new();
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let creator = execution::exec(channel(&server.addr).await?, &keys.developer);
    let mut n = 0;
    for &size in &sorted {
        while pollers.len() < size {
            if pollers.len() % STREAMS_PER_CHANNEL == 0 {
                channels.push(channel(&server.addr).await?);
            }
            let worker = execution::exec(channels.last().unwrap().clone(), &keys.worker);
            pollers.push(tokio::spawn(poll(worker, picked.clone(), stop.clone())));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = meter.now();
        let mut sent = Vec::new();
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        let deadline = Instant::now() + Duration::from_secs(cli.seconds);
        while Instant::now() < deadline {
            ticks.tick().await;
            let at = Instant::now();
            let run = creator
                .clone()
                .create_run(execution::create_run_request(
                    execution::WORKSPACE_ID,
                    &format!("c{}", n % SESSIONS),
                    n,
                ))
                .await
                .context("CreateRun")?
                .into_inner();
            sent.push((run.name, at));
            n += 1;
        }
        // Every run picked up (or give up after 10 s).
        let waited = Instant::now();
        let mut pickups = Vec::new();
        loop {
            pickups.clear();
            {
                let seen = picked.lock().unwrap();
                for (name, at) in &sent {
                    if let Some(got) = seen.get(name) {
                        pickups.push(got.saturating_duration_since(*at));
                    }
                }
            }
            if pickups.len() == sent.len() || waited.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let used = meter.now().since(&before);
        if pickups.len() < sent.len() {
            bail!(
                "{} of {} runs not picked up",
                sent.len() - pickups.len(),
                sent.len()
            );
        }
        let s = summarize(pickups, Duration::from_secs(1));
        println!(
            "{:>8} {:>6} {:>10.2}ms {:>10.2}ms {:>12.0} + {:<8.0}",
            size,
            sent.len(),
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3,
            micros_per(used.server, sent.len()),
            micros_per(used.postgres, sent.len()),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for poller in pollers {
        poller.abort();
    }
    Ok(())
}

/// One worker: PollTask (30 s wait) → CompleteTask at once, until `stop`.
async fn poll(mut worker: execution::Exec, picked: Seen, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(answer) = worker
            .poll_task(execution::poll_request(
                execution::WORKSPACE_ID,
                "scale",
                Duration::from_secs(30),
            ))
            .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(task) = answer.into_inner().task else {
            continue;
        };
        let name = task.run.map(|r| r.name).unwrap_or_default();
        picked.lock().unwrap().insert(name, Instant::now());
        let _ = worker
            .complete_task(execution::complete_request(&task.task_token))
            .await;
    }
}
