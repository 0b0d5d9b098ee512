//! The ExecutionService benchmark (issue: ExecutionService). Setup through the API: one
//! workspace (max_concurrent_runs raised above the worker count), one project, one agent,
//! one instance, a DEVELOPER key for clients and a WORKER key for workers.
//!
//! 1. Light load, one client and one worker, `--samples` runs one after another:
//!    - pickup: CreateRun sent → the worker's already waiting PollTask returns the run;
//!    - event delivery: AppendRunEvents (3 events) sent → a StreamRunEvents subscriber
//!      of the run has received all three (3 batches per run);
//!    - cancel delivery: CancelRun sent → the worker's HeartbeatTask, blocked in its
//!      `wait`, returns `cancel_requested`. The worker then confirms with CompleteTask.
//! 2. Throughput: `--runs` no-op runs, `--workers` workers each looping PollTask →
//!    AppendRunEvents (3 message_delta events) → CompleteTask, while `--clients` clients
//!    create runs, each on its own session (strategy ENQUEUE), one run in flight per
//!    session so that the session does not serialize the workers: runs/s over all runs.
//!    Then the same with the three events carried by CompleteTask, and the same load
//!    spread over `--workspaces` workspaces (one workspace should reach 80 % of that).
//! 3. Ceiling, in the same run: pgbench executing the SQL the server runs for one run
//!    (`bench/sql/execution.sql`: the CreateRun, claim, AppendRunEvents and CompleteTask
//!    transactions) at the same concurrency as the workers, `-M prepared`; each pgbench
//!    transaction is one whole run.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use agentry_proto::v1::{self as pb, execution_service_client::ExecutionServiceClient};
use anyhow::{Context as _, anyhow, bail};
use tokio::sync::{Semaphore, mpsc};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::Channel,
};

use crate::{
    Cli, pgbench,
    server::{self, channel},
    stats::{Summary, summarize},
};

const CHANNELS: usize = 4;
/// The workspace of the single-workspace phases; the others are `bench-{i}`.
pub(crate) const WORKSPACE_ID: &str = "bench";
/// How long the light-load phase lets a PollTask or HeartbeatTask reach the server and
/// start waiting before the client acts.
const SETTLE: Duration = Duration::from_millis(25);
/// Light-load runs done before measuring (connections, caches, prepared statements).
const WARMUP: usize = 10;
/// Any single wait in the benchmark longer than this is a failure, not a sample.
const STUCK: Duration = Duration::from_secs(20);

const GOAL_PICKUP_P99: Duration = Duration::from_millis(20);
const GOAL_EVENT_P99: Duration = Duration::from_millis(10);
const GOAL_CANCEL_P99: Duration = Duration::from_millis(100);
const GOAL_RATIO: f64 = 0.3;
/// One workspace alone reaches this share of the rate of many (issue 15).
const GOAL_ONE_OF_MANY: f64 = 0.8;

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent workers in the throughput phase; also pgbench's concurrency.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Clients creating runs in the throughput phase, each on its own session
    /// (default: 2 × workers).
    #[arg(long)]
    clients: Option<usize>,
    /// Runs in the throughput phase.
    #[arg(long, default_value_t = 2000)]
    runs: usize,
    /// Runs in the light-load latency phase (after the warm-up runs).
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Workspaces of the many-workspace throughput phase (workers and clients spread
    /// over them), compared with the same load on one workspace.
    #[arg(long, default_value_t = 4)]
    workspaces: usize,
    /// Only the throughput phase (`--runs` runs, then the server stops), its events
    /// with CompleteTask when set to `with-completion`: a clean window for
    /// pg_stat_statements or a profiler.
    #[arg(long, value_name = "appended|with-completion")]
    only_throughput: Option<String>,
}

/// Adds `authorization: Bearer <key>`.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub(crate) type Exec = ExecutionServiceClient<InterceptedService<Channel, Bearer>>;

pub(crate) fn exec(channel: Channel, key: &str) -> Exec {
    let bearer = Bearer(format!("Bearer {key}").parse().expect("ascii key"));
    ExecutionServiceClient::with_interceptor(channel, bearer)
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn workspace_name(workspace: &str) -> String {
    format!("workspaces/{workspace}")
}

fn project_name(workspace: &str) -> String {
    format!("workspaces/{workspace}/projects/p")
}

fn agent_name(workspace: &str) -> String {
    format!("workspaces/{workspace}/agents/echo")
}

fn session_name(workspace: &str, id: &str) -> String {
    format!("{}/sessions/{id}", project_name(workspace))
}

/// The session id of `…/sessions/{s}/runs/{r}`.
fn session_of(run: &str) -> Option<&str> {
    let rest = run.split_once("/sessions/")?.1;
    Some(rest.split_once('/')?.0)
}

pub(crate) fn create_run_request(workspace: &str, session: &str, n: usize) -> pb::CreateRunRequest {
    pb::CreateRunRequest {
        parent: session_name(workspace, session),
        run: Some(pb::Run {
            input: vec![pb::Message {
                role: pb::MessageRole::User as i32,
                content: format!("ping {n}"),
                ..Default::default()
            }],
            multitask_strategy: pb::MultitaskStrategy::Enqueue as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn poll_request(workspace: &str, identity: &str, wait: Duration) -> pb::PollTaskRequest {
    pb::PollTaskRequest {
        parent: workspace_name(workspace),
        agents: vec![agent_name(workspace)],
        identity: identity.into(),
        wait: Some(duration(wait)),
        lease_duration: Some(duration(Duration::from_secs(30))),
    }
}

/// Three message_delta events, as a streaming model would append them.
fn three_deltas(n: usize) -> Vec<pb::RunEventInput> {
    ["Hel", "lo, ", "world"]
        .iter()
        .map(|text| pb::RunEventInput {
            kind: Some(pb::run_event_input::Kind::MessageDelta(pb::MessageDelta {
                message_id: format!("m{n}"),
                text: (*text).into(),
            })),
        })
        .collect()
}

fn append_request(token: &str, n: usize) -> pb::AppendRunEventsRequest {
    pb::AppendRunEventsRequest {
        task_token: token.into(),
        events: three_deltas(n),
        request_id: String::new(),
    }
}

/// CompleteTask carrying the three events (no AppendRunEvents call before it).
fn complete_with_events_request(token: &str) -> pb::CompleteTaskRequest {
    pb::CompleteTaskRequest {
        task_token: token.into(),
        events: three_deltas(0),
        ..Default::default()
    }
}

pub(crate) fn complete_request(token: &str) -> pb::CompleteTaskRequest {
    pb::CompleteTaskRequest {
        task_token: token.into(),
        ..Default::default()
    }
}

pub(crate) struct Keys {
    /// The workspace's id.
    pub(crate) workspace: String,
    pub(crate) developer: String,
    pub(crate) worker: String,
    /// Resource names, for the pgbench script.
    developer_name: String,
    worker_name: String,
}

pub(crate) async fn setup(
    channel: Channel,
    root: &str,
    workspace: &str,
    workers: usize,
    clients: usize,
) -> anyhow::Result<Keys> {
    let ws = workspace_name(workspace);
    let project = project_name(workspace);
    let mut registry = server::registry(channel.clone(), root);
    registry
        .create_workspace(pb::CreateWorkspaceRequest {
            workspace_id: workspace.into(),
            workspace: Some(pb::Workspace::default()),
            request_id: String::new(),
        })
        .await?;
    // Quotas are ROOT only; make room for every worker (and then some).
    registry
        .update_workspace(pb::UpdateWorkspaceRequest {
            workspace: Some(pb::Workspace {
                name: ws.clone(),
                quotas: Some(pb::Quotas {
                    max_concurrent_runs: (workers * 4).max(64) as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["quotas.max_concurrent_runs".into()],
            }),
            request_id: String::new(),
        })
        .await
        .context("raise max_concurrent_runs")?;
    registry
        .create_project(pb::CreateProjectRequest {
            parent: ws.clone(),
            project_id: "p".into(),
            project: Some(pb::Project::default()),
            request_id: String::new(),
        })
        .await?;
    let mut key = async |role: pb::Role| -> anyhow::Result<(String, String)> {
        let created = registry
            .create_api_key(pb::CreateApiKeyRequest {
                parent: ws.clone(),
                api_key: Some(pb::ApiKey {
                    role: role as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        Ok((
            created.secret,
            created.api_key.map(|k| k.name).unwrap_or_default(),
        ))
    };
    let (developer, developer_name) = key(pb::Role::Developer).await?;
    let (worker, worker_name) = key(pb::Role::Worker).await?;
    let mut registry = server::registry(channel.clone(), &developer);
    registry
        .create_agent(pb::CreateAgentRequest {
            parent: ws.clone(),
            agent_id: "echo".into(),
            agent: Some(pb::Agent {
                display_name: "Echo".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?;
    registry
        .create_instance(pb::CreateInstanceRequest {
            parent: project.clone(),
            instance_id: "echo-1".into(),
            instance: Some(pb::Instance {
                agent: agent_name(workspace),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?;
    // Sessions: `lat` (light load), `c{i}` (throughput clients), `pg{i}` (pgbench clients).
    let mut client = exec(channel, &developer);
    let ids = std::iter::once("lat".to_owned())
        .chain((0..clients).map(|i| format!("c{i}")))
        .chain((0..workers).map(|i| format!("pg{i}")));
    for id in ids {
        client
            .create_session(pb::CreateSessionRequest {
                parent: project.clone(),
                session_id: id,
                session: Some(pb::Session {
                    instance: format!("{project}/instances/echo-1"),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .context("CreateSession")?;
    }
    Ok(Keys {
        workspace: workspace.into(),
        developer,
        worker,
        developer_name,
        worker_name,
    })
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let clients = args.clients.unwrap_or(args.workers * 2).max(1);
    if args.workers == 0 || args.runs == 0 || args.samples == 0 {
        bail!("--workers, --runs and --samples must be positive");
    }
    let root = format!("bench-root-{}", uuid::Uuid::now_v7().simple());
    let server = server::start(&cli.binary, &cli.database_url, &root).await?;
    let channels: Vec<_> =
        futures::future::try_join_all((0..CHANNELS).map(|_| channel(&server.addr))).await?;
    let keys = setup(
        channels[0].clone(),
        &root,
        WORKSPACE_ID,
        args.workers,
        clients,
    )
    .await?;
    // Other work on the machine moves every figure; say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "execution benchmark: server {} on Postgres; light load: {} runs (1 client, 1 worker); \
         throughput: {} no-op runs, {} workers, {} clients; pgbench {} s; load average {}\n",
        server.addr,
        args.samples,
        args.runs,
        args.workers,
        clients,
        cli.seconds,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let line = |label: &str, s: &Summary| {
        println!(
            "  {label:<58} p50 {:>8.3} ms   p99 {:>8.3} ms   ({} samples)",
            ms(s.p50),
            ms(s.p99),
            s.ops
        );
    };

    if let Some(events) = &args.only_throughput {
        let events = match events.as_str() {
            "appended" => Events::Appended,
            "with-completion" => Events::WithCompletion,
            other => bail!("--only-throughput {other}: appended or with-completion"),
        };
        let one = std::slice::from_ref(&keys);
        let t = throughput(&channels, one, args.workers, clients, args.runs, events).await?;
        println!("runs: {:.0} runs/s", t.runs_per_second);
        return Ok(());
    }
    let light = light_load(&channels, &keys, args.samples).await?;
    println!("— light load: 1 client, 1 worker, one run at a time");
    line("CreateRun (client call)", &light.create);
    line(
        "pickup (CreateRun sent → waiting PollTask returns)",
        &light.pickup,
    );
    line(
        "event delivery (AppendRunEvents ×3 sent → stream has all 3)",
        &light.events,
    );
    line(
        "cancel delivery (CancelRun sent → HeartbeatTask returns)",
        &light.cancel,
    );
    println!();

    let throughput = appended_runs(&channels, std::slice::from_ref(&keys), args, clients).await?;
    println!(
        "— throughput: {} runs (CreateRun → PollTask → AppendRunEvents ×3 → CompleteTask), {} workers, {clients} clients",
        args.runs, args.workers
    );
    println!(
        "  {:<58} {:>9.0} runs/s   ({:.2} s)",
        "runs",
        throughput.runs_per_second,
        throughput.elapsed.as_secs_f64()
    );
    line("CreateRun (client call)", &throughput.create);
    line(
        "PollTask → task (worker call, includes idle waiting)",
        &throughput.poll,
    );
    line(
        "AppendRunEvents, 3 events (worker call)",
        &throughput.append,
    );
    line("CompleteTask (worker call)", &throughput.complete);
    line(
        "run latency (CreateRun sent → CompleteTask returns)",
        &throughput.run,
    );

    let ceiling = pgbench(cli, &server.database_url, &keys, args.workers)?;
    println!(
        "  {:<58} {ceiling:>9.0} runs/s   (pgbench -M prepared -c {}, same statements) [ceiling]",
        "pgbench: the SQL of one run", args.workers
    );
    let ratio = throughput.runs_per_second / ceiling;
    let fused =
        throughput_with_completion(&channels, &keys, args.workers, clients, args.runs).await?;
    let many = many_workspaces(&channels, &root, args, clients).await?;
    let share = throughput.runs_per_second / many.runs_per_second;
    println!();

    let verdict = |ok: bool| if ok { "✓" } else { "✗" };
    println!("| goal | measured | target | met |");
    println!("|---|---|---|---|");
    println!(
        "| pickup p99, light load | {:.2} ms | < {} ms | {} |",
        ms(light.pickup.p99),
        GOAL_PICKUP_P99.as_millis(),
        verdict(light.pickup.p99 < GOAL_PICKUP_P99)
    );
    println!(
        "| event delivery p99, light load | {:.2} ms | < {} ms | {} |",
        ms(light.events.p99),
        GOAL_EVENT_P99.as_millis(),
        verdict(light.events.p99 < GOAL_EVENT_P99)
    );
    println!(
        "| cancel delivery p99 | {:.2} ms | < {} ms | {} |",
        ms(light.cancel.p99),
        GOAL_CANCEL_P99.as_millis(),
        verdict(light.cancel.p99 < GOAL_CANCEL_P99)
    );
    println!(
        "| runs/s vs pgbench ({} workers) | {:.0} / {:.0} = {ratio:.2} | ≥ {GOAL_RATIO} | {} |",
        args.workers,
        throughput.runs_per_second,
        ceiling,
        verdict(ratio >= GOAL_RATIO)
    );
    println!(
        "| one workspace vs {} workspaces, same load | {:.0} / {:.0} = {share:.2} | ≥ {GOAL_ONE_OF_MANY} | {} |",
        args.workspaces,
        throughput.runs_per_second,
        many.runs_per_second,
        verdict(share >= GOAL_ONE_OF_MANY)
    );
    println!(
        "| runs/s, events in CompleteTask vs AppendRunEvents | {:.0} / {:.0} = {:.2} | — | |",
        fused.runs_per_second,
        throughput.runs_per_second,
        fused.runs_per_second / throughput.runs_per_second
    );
    Ok(())
}

/// The throughput phase on `tenants`, the events appended before CompleteTask.
async fn appended_runs(
    channels: &[Channel],
    tenants: &[Keys],
    args: &Args,
    clients: usize,
) -> anyhow::Result<Throughput> {
    let (workers, runs) = (args.workers, args.runs);
    throughput(channels, tenants, workers, clients, runs, Events::Appended).await
}

/// The throughput phase with the three events carried by CompleteTask.
async fn throughput_with_completion(
    channels: &[Channel],
    keys: &Keys,
    workers: usize,
    clients: usize,
    runs: usize,
) -> anyhow::Result<Throughput> {
    let one = std::slice::from_ref(keys);
    let t = throughput(
        channels,
        one,
        workers,
        clients,
        runs,
        Events::WithCompletion,
    )
    .await?;
    println!(
        "  {:<58} {:>9.0} runs/s   ({:.2} s)",
        "runs, the 3 events in CompleteTask (no AppendRunEvents)",
        t.runs_per_second,
        t.elapsed.as_secs_f64()
    );
    Ok(t)
}

/// The throughput phase with its workers and clients spread over `--workspaces`
/// workspaces: what one workspace reaches is compared with this.
async fn many_workspaces(
    channels: &[Channel],
    root: &str,
    args: &Args,
    clients: usize,
) -> anyhow::Result<Throughput> {
    let mut tenants = Vec::new();
    for i in 0..args.workspaces.max(1) {
        let id = format!("{WORKSPACE_ID}-{i}");
        tenants.push(setup(channels[0].clone(), root, &id, args.workers, clients).await?);
    }
    let t = appended_runs(channels, &tenants, args, clients).await?;
    println!(
        "  {:<58} {:>9.0} runs/s   ({:.2} s)",
        format!("runs, {} workspaces", tenants.len()),
        t.runs_per_second,
        t.elapsed.as_secs_f64()
    );
    Ok(t)
}

struct Light {
    create: Summary,
    pickup: Summary,
    events: Summary,
    cancel: Summary,
}

/// Percentiles of latency samples (the rate in the summary means nothing here).
fn latencies(samples: Vec<Duration>) -> Summary {
    summarize(samples, Duration::from_secs(1))
}

async fn stuck<T>(what: &str, f: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(STUCK, f)
        .await
        .map_err(|_| anyhow!("{what}: nothing after {STUCK:?}"))
}

async fn light_load(channels: &[Channel], keys: &Keys, samples: usize) -> anyhow::Result<Light> {
    let mut client = exec(channels[0].clone(), &keys.developer);
    let subscriber = exec(channels[1].clone(), &keys.developer);
    let worker = exec(channels[2].clone(), &keys.worker);
    let (mut create, mut pickup, mut events, mut cancel) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for n in 0..WARMUP + samples {
        let measured = n >= WARMUP;

        // Pickup: the worker is already waiting when the run is created.
        let mut w = worker.clone();
        let request = poll_request(&keys.workspace, "bench-light", Duration::from_secs(30));
        let poll = tokio::spawn(async move {
            let task = w.poll_task(request).await;
            (task, Instant::now())
        });
        tokio::time::sleep(SETTLE).await;
        let sent = Instant::now();
        let run = client
            .create_run(create_run_request(&keys.workspace, "lat", n))
            .await
            .context("CreateRun")?
            .into_inner();
        let created = sent.elapsed();
        let (task, returned) = stuck("PollTask", poll).await??;
        let task = task
            .context("PollTask")?
            .into_inner()
            .task
            .context("PollTask returned no task within its wait")?;
        if task.run.as_ref().map(|r| r.name.as_str()) != Some(run.name.as_str()) {
            bail!("PollTask returned another run than the one just created");
        }
        if measured {
            create.push(created);
            pickup.push(returned - sent);
        }
        let token = task.task_token;

        // Event delivery: a subscriber that timestamps every event it receives.
        let (tx, mut rx) = mpsc::unbounded_channel::<(i64, Instant)>();
        let mut s = subscriber.clone();
        let name = run.name.clone();
        let reader = tokio::spawn(async move {
            let mut stream = s
                .stream_run_events(pb::StreamRunEventsRequest {
                    name,
                    after_sequence: 0,
                })
                .await?
                .into_inner();
            while let Some(message) = stream.message().await? {
                let at = Instant::now();
                if let Some(event) = message.event {
                    let _ = tx.send((event.sequence, at));
                }
            }
            anyhow::Ok(())
        });
        // The stream is live once it has replayed the claim (QUEUED → RUNNING) event.
        let claimed = task.run.as_ref().map_or(0, |r| r.last_sequence).max(2);
        let mut seen = 0;
        while seen < claimed {
            seen = stuck("StreamRunEvents replay", rx.recv())
                .await?
                .context("the event stream ended early")?
                .0;
        }
        let mut w = worker.clone();
        for batch in 0..3 {
            let sent = Instant::now();
            let last = w
                .append_run_events(append_request(&token, batch))
                .await
                .context("AppendRunEvents")?
                .into_inner()
                .last_sequence;
            let arrived = loop {
                let (sequence, at) = stuck("StreamRunEvents live", rx.recv())
                    .await?
                    .context("the event stream ended early")?;
                if sequence >= last {
                    break at;
                }
            };
            if measured {
                events.push(arrived - sent);
            }
        }

        // Cancel delivery: the worker is blocked in HeartbeatTask when the cancel comes.
        let mut w = worker.clone();
        let heartbeat_token = token.clone();
        let heartbeat = tokio::spawn(async move {
            let response = w
                .heartbeat_task(pb::HeartbeatTaskRequest {
                    task_token: heartbeat_token,
                    wait: Some(duration(Duration::from_secs(10))),
                })
                .await;
            (response, Instant::now())
        });
        tokio::time::sleep(SETTLE).await;
        let sent = Instant::now();
        client
            .cancel_run(pb::CancelRunRequest {
                name: run.name.clone(),
                ..Default::default()
            })
            .await
            .context("CancelRun")?;
        let (response, returned) = stuck("HeartbeatTask", heartbeat).await??;
        if !response
            .context("HeartbeatTask")?
            .into_inner()
            .cancel_requested
        {
            bail!("HeartbeatTask returned without cancel_requested after CancelRun");
        }
        if measured {
            cancel.push(returned - sent);
        }
        // The worker confirms; the run ends CANCELLED and the stream ends after it.
        worker
            .clone()
            .complete_task(complete_request(&token))
            .await
            .context("CompleteTask (confirming the cancel)")?;
        while stuck("StreamRunEvents end", rx.recv()).await?.is_some() {}
        stuck("StreamRunEvents end", reader).await???;
    }
    Ok(Light {
        create: latencies(create),
        pickup: latencies(pickup),
        events: latencies(events),
        cancel: latencies(cancel),
    })
}

pub(crate) struct Throughput {
    pub runs_per_second: f64,
    pub elapsed: Duration,
    pub create: Summary,
    pub poll: Summary,
    pub append: Summary,
    pub complete: Summary,
    pub run: Summary,
}

/// How the workers of [`throughput`] report a run's three events.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Events {
    /// AppendRunEvents, then CompleteTask.
    Appended,
    /// In CompleteTask's `events`.
    WithCompletion,
}

/// `runs` no-op runs; client and worker `i` work in workspace `tenants[i % len]`.
pub(crate) async fn throughput(
    channels: &[Channel],
    tenants: &[Keys],
    workers: usize,
    clients: usize,
    runs: usize,
    events: Events,
) -> anyhow::Result<Throughput> {
    // One run in flight per client session: a client creates its next run once a worker
    // has completed its previous one.
    let window: Arc<Vec<Semaphore>> = Arc::new((0..clients).map(|_| Semaphore::new(1)).collect());
    let created = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    // Run name → when its CreateRun was sent.
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let finished: Arc<Mutex<Option<Instant>>> = Arc::default();
    // Set when the phase ends, or when any task fails, so that no task waits for runs
    // that will never come; it also releases clients waiting on their window.
    let stop = Arc::new(AtomicBool::new(false));
    let halt = {
        let (stop, window) = (stop.clone(), window.clone());
        Arc::new(move || {
            stop.store(true, Ordering::SeqCst);
            for w in window.iter() {
                w.add_permits(1);
            }
        })
    };
    let started = Instant::now();

    let client_tasks: Vec<_> = (0..clients)
        .map(|i| {
            let keys = &tenants[i % tenants.len()];
            let workspace = keys.workspace.clone();
            let mut client = exec(channels[i % CHANNELS].clone(), &keys.developer);
            let (window, created, sent_at) = (window.clone(), created.clone(), sent_at.clone());
            let (stop, halt) = (stop.clone(), halt.clone());
            tokio::spawn(async move {
                let session = format!("c{i}");
                let mut samples = Vec::new();
                let result = async {
                    loop {
                        window[i].acquire().await?.forget();
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let n = created.fetch_add(1, Ordering::SeqCst);
                        if n >= runs {
                            break;
                        }
                        let t = Instant::now();
                        let run = client
                            .create_run(create_run_request(&workspace, &session, n))
                            .await
                            .context("CreateRun")?
                            .into_inner();
                        samples.push(t.elapsed());
                        sent_at.lock().expect("lock").insert(run.name, t);
                    }
                    anyhow::Ok(())
                }
                .await;
                if result.is_err() {
                    halt();
                }
                result.map(|()| samples)
            })
        })
        .collect();

    let worker_tasks: Vec<_> = (0..workers)
        .map(|i| {
            let keys = &tenants[i % tenants.len()];
            let workspace = keys.workspace.clone();
            let mut worker = exec(channels[(i + 1) % CHANNELS].clone(), &keys.worker);
            let (window, completed, sent_at, finished) = (
                window.clone(),
                completed.clone(),
                sent_at.clone(),
                finished.clone(),
            );
            let (stop, halt) = (stop.clone(), halt.clone());
            tokio::spawn(async move {
                let identity = format!("bench-worker-{i}");
                let (mut poll, mut append, mut complete, mut run) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let result = async {
                    while completed.load(Ordering::SeqCst) < runs && !stop.load(Ordering::SeqCst) {
                        let t = Instant::now();
                        let task = worker
                            .poll_task(poll_request(
                                &workspace,
                                &identity,
                                Duration::from_millis(500),
                            ))
                            .await
                            .context("PollTask")?
                            .into_inner()
                            .task;
                        let Some(task) = task else { continue };
                        poll.push(t.elapsed());
                        let token = &task.task_token;
                        let completion = if events == Events::Appended {
                            let t = Instant::now();
                            worker
                                .append_run_events(append_request(token, 0))
                                .await
                                .context("AppendRunEvents")?;
                            append.push(t.elapsed());
                            complete_request(token)
                        } else {
                            complete_with_events_request(token)
                        };
                        let t = Instant::now();
                        worker
                            .complete_task(completion)
                            .await
                            .context("CompleteTask")?;
                        let done = Instant::now();
                        complete.push(done - t);
                        let name = task.run.map(|r| r.name).unwrap_or_default();
                        if let Some(sent) = sent_at.lock().expect("lock").remove(&name) {
                            run.push(done - sent);
                        }
                        if completed.fetch_add(1, Ordering::SeqCst) + 1 == runs {
                            *finished.lock().expect("lock") = Some(done);
                        }
                        let session = session_of(&name)
                            .and_then(|s| s.strip_prefix('c'))
                            .and_then(|i| i.parse::<usize>().ok())
                            .with_context(|| format!("unexpected run name {name}"))?;
                        window[session].add_permits(1);
                    }
                    anyhow::Ok(())
                }
                .await;
                if result.is_err() {
                    halt();
                }
                result.map(|()| (poll, append, complete, run))
            })
        })
        .collect();

    let deadline = STUCK + Duration::from_millis(50) * runs as u32;
    let mut create = Vec::new();
    let (mut poll, mut append, mut complete, mut run) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let joined = tokio::time::timeout(deadline, async {
        for task in worker_tasks {
            let (p, a, c, r) = task.await??;
            poll.extend(p);
            append.extend(a);
            complete.extend(c);
            run.extend(r);
        }
        // Clients blocked on their window after the last run was created.
        halt();
        for task in client_tasks {
            create.extend(task.await??);
        }
        anyhow::Ok(())
    })
    .await;
    match joined {
        Ok(result) => result?,
        Err(_) => bail!(
            "throughput: {} of {runs} runs completed after {deadline:?}",
            completed.load(Ordering::SeqCst)
        ),
    }
    let elapsed = finished
        .lock()
        .expect("lock")
        .context("the last run never completed")?
        - started;
    Ok(Throughput {
        runs_per_second: runs as f64 / elapsed.as_secs_f64(),
        elapsed,
        create: latencies(create),
        poll: latencies(poll),
        append: latencies(append),
        complete: latencies(complete),
        run: latencies(run),
    })
}

/// The SQL of one run (see the file's header), with pgbench variables for the keys.
const PGBENCH_SCRIPT: &str = include_str!("../sql/execution.sql");

/// Runs per second of the per-run SQL through pgbench, `concurrency` clients, each on its
/// own session `pg{client_id}` (made in `setup`).
fn pgbench(cli: &Cli, database_url: &str, keys: &Keys, concurrency: usize) -> anyhow::Result<f64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros();
    let defines = [
        ("now", now.to_string()),
        ("developer", keys.developer_name.clone()),
        ("worker", keys.worker_name.clone()),
    ];
    Ok(pgbench::reference(
        cli,
        database_url,
        PGBENCH_SCRIPT,
        &defines,
        concurrency,
    ))
}
