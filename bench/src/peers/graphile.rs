//! graphile-worker as a peer: its Node runner (`bench/peers/graphile-worker.mjs`, with
//! graphile-worker's defaults and `concurrency` slots) on a database of its own in the same
//! Postgres cluster, and `clients` producers here that add no-op jobs with
//! `graphile_worker.add_job` over sqlx, each waiting for its job's completion (the
//! runner's `job:complete`, emitted once the result is written back) before it adds the
//! next: the same closed loop as the Agentry clients, one job in flight per client.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use sqlx::{Connection, Executor, PgConnection, postgres::PgPoolOptions};
use tokio::sync::oneshot;

use crate::{
    server::with_database,
    stats::{Summary, summarize},
};

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Instant>>>>;

pub struct Graphile {
    child: Child,
    waiters: Waiters,
    pub database_url: String,
    admin_url: String,
    database: String,
}

/// The runner script, next to graphile-worker's node_modules in `tools`.
const SCRIPT: &str = include_str!("../../peers/graphile-worker.mjs");

impl Graphile {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn start(
        node: &str,
        tools: &Path,
        admin_url: &str,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        if !tools.join("node_modules/graphile-worker").exists() {
            bail!(
                "graphile-worker is not installed in {} (scripts/bench peers installs it)",
                tools.display()
            );
        }
        let tools = tools
            .canonicalize()
            .with_context(|| format!("{}", tools.display()))?;
        let script = tools.join("graphile-worker.mjs");
        std::fs::write(&script, SCRIPT)?;
        let database = format!("graphile_bench_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(admin_url).await?;
        admin
            .execute(format!("CREATE DATABASE \"{database}\"").as_str())
            .await?;
        admin.close().await?;
        let database_url = with_database(admin_url, &database);
        let mut child = Command::new(node)
            .arg(&script)
            .current_dir(&tools)
            .env("DATABASE_URL", &database_url)
            .env("CONCURRENCY", concurrency.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {node}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let waiters: Waiters = Arc::default();
        let (ready_tx, ready_rx) = oneshot::channel();
        let lines = waiters.clone();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                } else if let Some(id) = line.strip_prefix("done ").and_then(|i| i.parse().ok())
                    && let Some(waiter) = lines.lock().expect("waiters").remove(&id)
                {
                    let _ = waiter.send(Instant::now());
                }
                // Anything else is graphile-worker's own log.
            }
        });
        let graphile = Graphile {
            child,
            waiters,
            database_url,
            admin_url: admin_url.to_owned(),
            database,
        };
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .context("graphile-worker did not start within 60 s")?
            .context("graphile-worker exited before it was ready")?;
        Ok(graphile)
    }

    /// `jobs` no-op jobs from `clients` closed-loop producers: jobs/s from the first add to
    /// the last completion, and each job's latency (add sent → completion read).
    pub async fn run_jobs(&self, clients: usize, jobs: usize) -> anyhow::Result<Summary> {
        let pool = PgPoolOptions::new()
            .max_connections(clients as u32)
            .connect(&self.database_url)
            .await?;
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let producers: Vec<_> = (0..clients)
            .map(|_| {
                let (pool, next, waiters) = (pool.clone(), next.clone(), self.waiters.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut last = started;
                    while next.fetch_add(1, Ordering::SeqCst) < jobs {
                        let id = JOB_IDS.fetch_add(1, Ordering::SeqCst);
                        let (tx, rx) = oneshot::channel();
                        waiters.lock().expect("waiters").insert(id, tx);
                        let sent = Instant::now();
                        sqlx::query(
                            "SELECT graphile_worker.add_job('noop', json_build_object('id', $1::bigint))",
                        )
                        .bind(id as i64)
                        .execute(&pool)
                        .await?;
                        let done = tokio::time::timeout(Duration::from_secs(30), rx)
                            .await
                            .context("a graphile-worker job did not complete within 30 s")??;
                        samples.push(done - sent);
                        last = last.max(done);
                    }
                    anyhow::Ok((samples, last))
                })
            })
            .collect();
        let mut samples = Vec::new();
        let mut finished = started;
        for producer in producers {
            let (s, last) = producer.await??;
            samples.extend(s);
            finished = finished.max(last);
        }
        pool.close().await;
        Ok(summarize(samples, finished - started))
    }
}

/// Job ids, distinct over the whole benchmark (producers share the waiter map).
static JOB_IDS: AtomicU64 = AtomicU64::new(1);

impl Drop for Graphile {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let (admin_url, database) = (self.admin_url.clone(), self.database.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().map(|rt| {
                rt.block_on(async {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                        let _ = admin
                            .execute(
                                format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")
                                    .as_str(),
                            )
                            .await;
                    }
                })
            })
        })
        .join();
    }
}
