//! `agentry-bench peers`: Agentry beside the systems a user would pick instead, on the
//! same machine, in one run, driven by the same Rust client stack (tonic) at the same
//! concurrency, alternating between the two:
//!
//! - versioned compare-and-swap writes of a 1 KiB document, 32 clients each on its own
//!   key and 1 client: WriteContext with `expected_version` against etcd's Txn
//!   (compare the key's version, then put);
//! - head reads at 32 clients: ReadContext against etcd's linearizable Range;
//! - no-op runs: CreateRun → PollTask → AppendRunEvents (3 events) → CompleteTask with
//!   `workers` workers and `clients` closed-loop clients, against graphile-worker no-op
//!   jobs with `workers` slots and `clients` closed-loop producers, on the same Postgres.
//!
//! Under each figure: CPU per operation of the server (or the peer), Postgres and the load
//! generator, from /proc. Beside them, floors any Postgres-backed design pays, through
//! pgbench (`-M prepared`): a versioned write as one head UPDATE plus one 1 KiB jsonb
//! INSERT in one transaction, and a run as the four transactions of the API's four calls
//! on a minimal queue with an event log. Postgres should run with fsync and
//! synchronous_commit on (`scripts/bench peers` starts such a cluster); the header says
//! what it found.

mod etcd;
mod floor;
mod graphile;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use agentry_proto::v1 as pb;
use anyhow::{Context as _, bail};
use sqlx::{Connection, PgConnection, Row};

use crate::{
    Cli,
    context::document,
    cpu::{Meter, Times},
    execution,
    load::alternate,
    pgbench,
    server::{self, channel},
    stats::Summary,
};

const CHANNELS: usize = 4;
const SLICE: Duration = Duration::from_secs(1);
const DOC_BYTES: usize = 1024;

#[derive(clap::Args)]
pub struct Args {
    /// The etcd binary (Debian's etcd-server).
    #[arg(long, default_value = "etcd")]
    etcd: String,
    /// The node binary, for graphile-worker.
    #[arg(long, default_value = "node")]
    node: String,
    /// Where graphile-worker is installed (its node_modules).
    #[arg(long, default_value = ".tools/peers")]
    tools: PathBuf,
    /// Runs (and jobs) per round of the run workload.
    #[arg(long, default_value_t = 2000)]
    runs: usize,
    /// Workers (graphile-worker: concurrency).
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Closed-loop clients creating runs (graphile-worker: producers adding jobs).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Rounds of the run workload, alternating Agentry and graphile-worker.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Agentry's workers send the run's three events with CompleteTask instead of an
    /// AppendRunEvents call before it.
    #[arg(long)]
    events_with_completion: bool,
    /// Only the context workloads (against etcd), not the run workload.
    #[arg(long, conflicts_with = "runs_only")]
    contexts_only: bool,
    /// Only the run workload (against graphile-worker), not the context workloads.
    #[arg(long)]
    runs_only: bool,
}

/// One system's figures for a workload.
struct Side {
    summary: Summary,
    cpu: Times,
}

impl Side {
    fn line(&self, label: &str, unit: &str, peer: Option<&str>) {
        let s = &self.summary;
        println!(
            "  {label:<46} {:>9.0} {unit}/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
            s.per_second,
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3,
        );
        println!("      CPU per op: {}", self.cpu.per_call_of(s.ops, peer));
    }

    fn postgres_ms(&self) -> f64 {
        self.cpu.postgres / self.summary.ops.max(1) as f64 * 1e3
    }
}

/// A row of the closing table.
struct Row_ {
    workload: String,
    agentry: f64,
    peer: f64,
    peer_name: &'static str,
    goal: f64,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let durability = postgres_settings(&cli.database_url).await?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "peers benchmark: {} s per measurement; Postgres {durability}; load average {}\n",
        cli.seconds,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut rows = Vec::new();
    let mut postgres_cpu = Vec::new();

    // Contexts against etcd.
    if !args.runs_only {
        let root = format!("bench-root-{}", uuid::Uuid::now_v7().simple());
        let server = server::start(&cli.binary, &cli.database_url, &root).await?;
        let etcd = etcd::Etcd::start(&args.etcd).await?;
        let meter = Meter::new(server.pid())
            .with_peer(etcd.pid())
            .for_cluster(&cli.database_url)
            .await?;
        let contexts = context_setup(&server, &root).await?;
        let kv = etcd::Kv::new(channel(&etcd.addr).await?);
        let duration = Duration::from_secs(cli.seconds);
        let floor_url = floor::database(&cli.database_url).await?;

        for concurrency in [32, 1] {
            let [agentry, peer] = cas(&contexts, &kv, &meter, concurrency, duration).await?;
            println!(
                "— compare-and-swap write of a 1 KiB document, {concurrency} client(s), each on its own key"
            );
            agentry.line("Agentry WriteContext(expected_version)", "ops", None);
            peer.line("etcd Txn(version = v → put)", "ops", Some("etcd"));
            let before = meter.now();
            let floor = pgbench::tps(cli, &floor_url, floor::WRITE, &[], concurrency)?;
            let floor_cpu = meter.now().since(&before);
            let floor_tx = floor * cli.seconds as f64;
            println!(
                "  {:<46} {floor:>9.0} tx/s    Postgres CPU per tx {:.0} µs [floor]",
                "pgbench: head UPDATE + 1 KiB jsonb INSERT",
                floor_cpu.postgres / floor_tx.max(1.0) * 1e6
            );
            println!(
                "  Agentry / etcd {:.2}; Agentry / floor {:.2}\n",
                agentry.summary.per_second / peer.summary.per_second,
                agentry.summary.per_second / floor
            );
            postgres_cpu.push((
                format!("CAS write, {concurrency} client(s)"),
                agentry.postgres_ms(),
                0.4,
            ));
            rows.push(Row_ {
                workload: format!("CAS write of 1 KiB, {concurrency} client(s)"),
                agentry: agentry.summary.per_second,
                peer: peer.summary.per_second,
                peer_name: "etcd",
                goal: if concurrency == 1 { 0.6 } else { 1.0 },
            });
        }

        let [agentry, peer] = reads(&contexts, &kv, &meter, 32, duration).await?;
        println!("— head read, 32 clients");
        agentry.line("Agentry ReadContext (head)", "ops", None);
        peer.line("etcd Range (linearizable)", "ops", Some("etcd"));
        println!(
            "  Agentry / etcd {:.2}\n",
            agentry.summary.per_second / peer.summary.per_second
        );
        rows.push(Row_ {
            workload: "head read, 32 clients".into(),
            agentry: agentry.summary.per_second,
            peer: peer.summary.per_second,
            peer_name: "etcd",
            goal: 1.5,
        });
    }

    // Runs against graphile-worker.
    if !args.contexts_only {
        let root = format!("bench-root-{}", uuid::Uuid::now_v7().simple());
        let server = server::start(&cli.binary, &cli.database_url, &root).await?;
        let graphile =
            graphile::Graphile::start(&args.node, &args.tools, &cli.database_url, args.workers)
                .await?;
        let meter = Meter::new(server.pid())
            .with_peer(graphile.pid())
            .for_cluster(&cli.database_url)
            .await?;
        let channels: Vec<_> =
            futures::future::try_join_all((0..CHANNELS).map(|_| channel(&server.addr))).await?;
        let keys = execution::setup(
            channels[0].clone(),
            &root,
            execution::WORKSPACE_ID,
            args.workers,
            args.clients,
        )
        .await?;
        let tenants = std::slice::from_ref(&keys);
        let events = if args.events_with_completion {
            execution::Events::WithCompletion
        } else {
            execution::Events::Appended
        };
        // Warm both up (connections, prepared statements, caches).
        execution::throughput(&channels, tenants, args.workers, args.clients, 200, events).await?;
        graphile.run_jobs(args.clients, 200).await?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            let before = meter.now();
            let t = execution::throughput(
                &channels,
                tenants,
                args.workers,
                args.clients,
                args.runs,
                events,
            )
            .await?;
            let cpu = meter.now().since(&before);
            ours.push(Side {
                summary: Summary {
                    ops: args.runs,
                    per_second: t.runs_per_second,
                    p50: t.run.p50,
                    p99: t.run.p99,
                },
                cpu,
            });
            let before = meter.now();
            let summary = graphile.run_jobs(args.clients, args.runs).await?;
            theirs.push(Side {
                summary,
                cpu: meter.now().since(&before),
            });
        }
        println!(
            "— no-op run: {} workers, {} closed-loop clients, {} runs per round, {} rounds alternating",
            args.workers, args.clients, args.runs, args.rounds
        );
        for (round, (a, g)) in ours.iter().zip(&theirs).enumerate() {
            a.line(
                &format!("Agentry run, 3 events (round {})", round + 1),
                "runs",
                None,
            );
            g.line(
                &format!("graphile-worker no-op job (round {})", round + 1),
                "jobs",
                Some("graphile-worker"),
            );
        }
        let floor_url = floor::database(&cli.database_url).await?;
        let before = meter.now();
        let floor = pgbench::tps(cli, &floor_url, floor::RUN, &[], args.workers)?;
        let floor_cpu = meter.now().since(&before);
        println!(
            "  {:<46} {floor:>9.0} runs/s  Postgres CPU per run {:.0} µs [floor]",
            "pgbench: 4 transactions of a minimal queue",
            floor_cpu.postgres / (floor * cli.seconds as f64).max(1.0) * 1e6
        );
        let mean = |sides: &[Side]| {
            sides.iter().map(|s| s.summary.per_second).sum::<f64>() / sides.len().max(1) as f64
        };
        let (a, g) = (mean(&ours), mean(&theirs));
        println!(
            "  Agentry / graphile-worker {:.2} (means of the rounds)\n",
            a / g
        );
        let pg = ours.iter().map(Side::postgres_ms).sum::<f64>() / ours.len().max(1) as f64;
        postgres_cpu.push(("no-op run".into(), pg, 1.5));
        rows.push(Row_ {
            workload: format!(
                "no-op run, 3 events, {} workers, {} clients",
                args.workers, args.clients
            ),
            agentry: a,
            peer: g,
            peer_name: "graphile-worker",
            goal: 1.0,
        });
        drop(graphile);
    }

    println!("| workload | Agentry | peer | Agentry / peer | goal | met |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let ratio = r.agentry / r.peer;
        println!(
            "| {} | {:.0}/s | {} {:.0}/s | {ratio:.2} | ≥ {:.1} | {} |",
            r.workload,
            r.agentry,
            r.peer_name,
            r.peer,
            r.goal,
            if ratio >= r.goal { "✓" } else { "✗" }
        );
    }
    for (what, ms, goal) in &postgres_cpu {
        println!(
            "| Postgres CPU per op, {what} | {ms:.2} ms | | | ≤ {goal} ms | {} |",
            if ms <= goal { "✓" } else { "✗" }
        );
    }
    Ok(())
}

async fn postgres_settings(url: &str) -> anyhow::Result<String> {
    let mut db = PgConnection::connect(url).await?;
    let mut out = Vec::new();
    for setting in ["server_version", "fsync", "synchronous_commit"] {
        let row = sqlx::query(&format!("SHOW {setting}"))
            .fetch_one(&mut db)
            .await?;
        out.push(format!("{setting}={}", row.get::<String, _>(0)));
    }
    db.close().await?;
    Ok(out.join(" "))
}

struct ContextSetup {
    clients: Vec<server::Contexts>,
}

fn context_name(i: usize) -> String {
    format!("workspaces/bench/projects/p/contexts/c{i}")
}

async fn context_setup(server: &server::Server, root: &str) -> anyhow::Result<ContextSetup> {
    let channels: Vec<_> =
        futures::future::try_join_all((0..CHANNELS).map(|_| channel(&server.addr))).await?;
    let mut registry = server::registry(channels[0].clone(), root);
    registry
        .create_workspace(pb::CreateWorkspaceRequest {
            workspace_id: "bench".into(),
            workspace: Some(pb::Workspace::default()),
            request_id: String::new(),
        })
        .await?;
    registry
        .create_project(pb::CreateProjectRequest {
            parent: "workspaces/bench".into(),
            project_id: "p".into(),
            project: Some(pb::Project::default()),
            request_id: String::new(),
        })
        .await?;
    let key = registry
        .create_api_key(pb::CreateApiKeyRequest {
            parent: "workspaces/bench".into(),
            api_key: Some(pb::ApiKey {
                role: pb::Role::Developer as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .secret;
    let clients: Vec<_> = channels
        .iter()
        .map(|c| server::contexts(c.clone(), &key))
        .collect();
    let mut setup = clients[0].clone();
    for i in 0..32 {
        setup
            .create_context(pb::CreateContextRequest {
                parent: "workspaces/bench/projects/p".into(),
                context_id: format!("c{i}"),
                context: Some(pb::Context::default()),
                data: Some(document(0, DOC_BYTES)),
                request_id: String::new(),
            })
            .await?;
    }
    Ok(ContextSetup { clients })
}

/// The document etcd stores: the same 1 KiB of JSON, as bytes.
fn etcd_document(n: u64) -> Vec<u8> {
    use prost::Message as _;
    // The proto encoding of the same Value the Agentry side sends: both carry the same
    // structure, and etcd stores opaque bytes.
    document(n, DOC_BYTES).encode_to_vec()
}

async fn cas(
    setup: &ContextSetup,
    kv: &etcd::Kv,
    meter: &Meter,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<[Side; 2]> {
    // Each client's own key, and the version it last wrote there.
    let ours: Arc<Vec<AtomicI64>> = Arc::new((0..concurrency).map(|_| AtomicI64::new(0)).collect());
    let theirs: Arc<Vec<AtomicI64>> =
        Arc::new((0..concurrency).map(|_| AtomicI64::new(0)).collect());
    let mut reader = setup.clients[0].clone();
    let mut etcd_reader = kv.clone();
    for i in 0..concurrency {
        let head = reader
            .get_context(pb::GetContextRequest {
                name: context_name(i),
            })
            .await?
            .into_inner()
            .head_version;
        ours[i].store(head, Ordering::SeqCst);
        let version = etcd_reader
            .get(&format!("k{i}"))
            .await?
            .kvs
            .first()
            .map_or(0, |kv| kv.version);
        theirs[i].store(version, Ordering::SeqCst);
    }
    let clients = setup.clients.clone();
    let kv = kv.clone();
    let ([a, b], _) = alternate(
        concurrency,
        duration,
        SLICE,
        meter,
        move |worker, n| {
            let mut client = clients[worker % CHANNELS].clone();
            let ours = ours.clone();
            async move {
                let expected = ours[worker].load(Ordering::SeqCst);
                let written = client
                    .write_context(pb::WriteContextRequest {
                        name: context_name(worker),
                        expected_version: Some(expected),
                        change: Some(pb::write_context_request::Change::Data(document(
                            n + 1,
                            DOC_BYTES,
                        ))),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let version = written.version.context("no version")?.version;
                ours[worker].store(version, Ordering::SeqCst);
                Ok(())
            }
        },
        move |worker, n| {
            let mut kv = kv.clone();
            let theirs = theirs.clone();
            async move {
                let expected = theirs[worker].load(Ordering::SeqCst);
                if !kv
                    .cas(&format!("k{worker}"), expected, etcd_document(n + 1))
                    .await?
                {
                    bail!("etcd CAS on k{worker} failed at version {expected}");
                }
                theirs[worker].store(expected + 1, Ordering::SeqCst);
                Ok(())
            }
        },
    )
    .await?;
    Ok([a, b].map(|(summary, cpu)| Side { summary, cpu }))
}

async fn reads(
    setup: &ContextSetup,
    kv: &etcd::Kv,
    meter: &Meter,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<[Side; 2]> {
    let clients = setup.clients.clone();
    let kv = kv.clone();
    let ([a, b], _) = alternate(
        concurrency,
        duration,
        SLICE,
        meter,
        move |worker, _| {
            let mut client = clients[worker % CHANNELS].clone();
            async move {
                client
                    .read_context(pb::ReadContextRequest {
                        name: context_name(worker),
                        version: 0,
                    })
                    .await?;
                Ok(())
            }
        },
        move |worker, _| {
            let mut kv = kv.clone();
            async move {
                let found = kv.get(&format!("k{worker}")).await?;
                if found.kvs.is_empty() {
                    bail!("etcd key k{worker} is missing");
                }
                Ok(())
            }
        },
    )
    .await?;
    Ok([a, b].map(|(summary, cpu)| Side { summary, cpu }))
}
