//! `scale-lists`: how list pages and GetRunStats grow with the number of runs. For each
//! size, a fresh server and database: one project (setup through the API, one real run
//! created and cancelled as the template), then `size` runs loaded next to it with one
//! `INSERT … SELECT … generate_series` (copies of the template, spread over the last 30
//! days, one in 1,000 FAILED), autovacuum off on `runs` so that nothing analyzes it
//! behind the benchmark's back. Then, through the API, before and after `ANALYZE runs`,
//! the latency (p50/p99) of:
//!
//! - a ListRuns page of 50 at depth 0, in the middle and at the end of the project's runs
//!   (the deep page tokens come from walking the list once with pages of 1,000; a token
//!   does not depend on the page size);
//! - the first and the last page of ListRuns with `status = FAILED` (few runs);
//! - GetRunStats over all of them (the whole 30-day window), once the server's roller
//!   has folded the loaded runs into its rollups (the time that took is printed).
//!
//! Then the plan shapes of the depth-0 and FAILED pages and of
//! GetRunStats' statements (`scale_plans`), and whether ANALYZE changed them.

use std::time::{Duration, Instant};

use agentry_proto::v1 as pb;
use anyhow::Context as _;
use sqlx::{Connection, Executor, PgConnection};

use crate::{
    Cli,
    execution::{self, Exec},
    scale_plans,
    server::{self, channel},
    stats::summarize,
};

const PROJECT: &str = "workspaces/bench/projects/p";
const ALL_RUNS: &str = "workspaces/bench/projects/p/sessions/-";
const DAYS: i64 = 30;

#[derive(clap::Args)]
pub struct Args {
    /// Runs in the project, one fresh database each.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000, 1_000_000])]
    sizes: Vec<i64>,
    /// Calls per list measurement.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Calls per GetRunStats measurement.
    #[arg(long, default_value_t = 20)]
    stats_samples: usize,
}

/// Copies of `template` (a cancelled run): ids that sort after the template's, one every
/// `30 days / size`, ending now; queue wait 1–200 ms, run time 0.5–9.4 s.
const LOAD: &str = "
INSERT INTO runs (workspace_id, run_id, project_id, session_id, instance_id, agent_id,
    agent_revision, status, stop_reason, ready, spec, attempt, error, input_tokens,
    output_tokens, cost_usd, last_sequence, cancel_requested, supersede, approval,
    approval_expire_time, output, next_attempt_time, deadline, lease_epoch,
    lease_expire_time, lease_duration, worker, create_time, start_time, end_time, update_time)
SELECT t.workspace_id, 'load-' || lpad(i::text, 9, '0'), t.project_id, t.session_id,
    t.instance_id, t.agent_id, t.agent_revision,
    CASE WHEN i % 1000 = 999 THEN 'FAILED' ELSE 'SUCCEEDED' END,
    CASE WHEN i % 1000 = 999 THEN 'ERROR' ELSE 'END_TURN' END,
    0, t.spec, 1, '', 100 + i % 900, 10 + i % 90, 0.0001 * (i % 100), 0, 0, 0, '', NULL,
    '', c.time, NULL, 1, NULL, 0, '', c.time, c.time + 1000 * (1 + i % 200),
    c.time + 1000 * (1 + i % 200) + 500000 + 1000 * ((i * 7919) % 8900), c.time
FROM runs t, generate_series(0, $1 - 1) i,
    LATERAL (SELECT $2 + (i * $3) AS time) c
WHERE t.workspace_id = 'bench' AND t.run_id = $4";

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64
}

fn list(filter: &str, size: i32, token: &str) -> pb::ListRunsRequest {
    pb::ListRunsRequest {
        parent: ALL_RUNS.into(),
        page_size: size,
        page_token: token.into(),
        filter: filter.into(),
    }
}

/// Tokens of `filter`'s list for the page at about half way and for the last page of 50.
async fn deep_tokens(client: &mut Exec, filter: &str) -> anyhow::Result<(String, String)> {
    let mut tokens = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_runs(list(filter, 1000, &token))
            .await
            .context("ListRuns walk")?
            .into_inner();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        tokens.push(token.clone());
    }
    let middle = tokens.get(tokens.len() / 2).cloned().unwrap_or_default();
    Ok((middle, tokens.last().cloned().unwrap_or_default()))
}

fn report(size: i64, phase: &str, what: &str, samples: Vec<Duration>) {
    let s = summarize(samples, Duration::from_secs(1));
    println!(
        "{size:>9} runs  {phase:<15} {what:<32} p50 {:>9.3} ms   p99 {:>9.3} ms",
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

async fn time_lists(
    client: &mut Exec,
    request: &pb::ListRunsRequest,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client
            .list_runs(request.clone())
            .await
            .context("ListRuns")?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

struct Tokens {
    middle: String,
    end: String,
    failed_end: String,
}

async fn measure(
    client: &mut Exec,
    args: &Args,
    size: i64,
    phase: &str,
    tokens: &Tokens,
    window: (i64, i64),
) -> anyhow::Result<()> {
    let pages = [
        ("ListRuns page, depth 0", list("", 50, "")),
        ("ListRuns page, middle", list("", 50, &tokens.middle)),
        ("ListRuns page, end", list("", 50, &tokens.end)),
        (
            "ListRuns status=FAILED, first",
            list("status = FAILED", 50, ""),
        ),
        (
            "ListRuns status=FAILED, end",
            list("status = FAILED", 50, &tokens.failed_end),
        ),
    ];
    for (what, request) in &pages {
        let samples = time_lists(client, request, args.samples).await?;
        report(size, phase, what, samples);
    }
    let request = pb::GetRunStatsRequest {
        parent: PROJECT.into(),
        start_time: Some(timestamp(window.0)),
        end_time: Some(timestamp(window.1)),
        group_by_agent: false,
    };
    let mut samples = Vec::new();
    let mut total = 0;
    for _ in 0..args.stats_samples {
        let t = Instant::now();
        let stats = client
            .get_run_stats(request.clone())
            .await
            .context("GetRunStats")?
            .into_inner();
        samples.push(t.elapsed());
        total = stats.total.map_or(0, |s| s.total);
    }
    anyhow::ensure!(total >= size, "GetRunStats counted {total} runs of {size}");
    report(size, phase, "GetRunStats, all runs", samples);
    Ok(())
}

async fn one_size(cli: &Cli, args: &Args, size: i64) -> anyhow::Result<()> {
    let root = format!("bench-root-{}", uuid::Uuid::now_v7().simple());
    let server = server::start(&cli.binary, &cli.database_url, &root).await?;
    let channel = channel(&server.addr).await?;
    let keys = execution::setup(channel.clone(), &root, execution::WORKSPACE_ID, 1, 0).await?;
    let mut client = execution::exec(channel, &keys.developer);
    let template = client
        .create_run(execution::create_run_request(
            execution::WORKSPACE_ID,
            "lat",
            0,
        ))
        .await
        .context("CreateRun")?
        .into_inner();
    client
        .cancel_run(pb::CancelRunRequest {
            name: template.name.clone(),
            ..Default::default()
        })
        .await
        .context("CancelRun")?;
    let template_id = template.name.rsplit('/').next().unwrap_or_default();
    let mut db = PgConnection::connect(&server.database_url).await?;
    db.execute("ALTER TABLE runs SET (autovacuum_enabled = false)")
        .await?;
    let end = now_micros();
    let start = end - DAYS * 86_400_000_000;
    let loaded = Instant::now();
    sqlx::query(LOAD)
        .bind(size)
        .bind(start)
        .bind((end - start) / size)
        .bind(template_id)
        .execute(&mut db)
        .await
        .context("load the runs")?;
    println!(
        "{size:>9} runs  loaded in {:.1} s (INSERT … generate_series, every index in place)",
        loaded.elapsed().as_secs_f64()
    );
    let (middle, end_token) = deep_tokens(&mut client, "").await?;
    let (_, failed_end) = deep_tokens(&mut client, "status = FAILED").await?;
    let tokens = Tokens {
        middle,
        end: end_token,
        failed_end,
    };
    rolled_up(&mut db, end).await?;
    let window = (start - 1_000_000, end + 1_000_000);
    measure(&mut client, args, size, "before ANALYZE", &tokens, window).await?;
    let before = scale_plans::shapes(&mut db, window).await?;
    db.execute("ANALYZE runs").await?;
    measure(&mut client, args, size, "after ANALYZE", &tokens, window).await?;
    let after = scale_plans::shapes(&mut db, window).await?;
    for ((what, before), (_, after)) in before.iter().zip(&after) {
        if before == after {
            println!("{size:>9} runs  plan of {what}, the same before and after ANALYZE: {before}");
        } else {
            println!(
                "{size:>9} runs  plan of {what} CHANGED with ANALYZE: before {before}; after {after}"
            );
        }
    }
    let _ = db.close().await;
    Ok(())
}

/// Waits until the server's roller has folded the loaded runs into GetRunStats' rollups
/// (its watermark reaches the hour it may seal: 5 minutes before `end`, floored).
async fn rolled_up(db: &mut PgConnection, end: i64) -> anyhow::Result<()> {
    const HOUR: i64 = 3_600_000_000;
    let goal = (end - 300_000_000) / HOUR * HOUR;
    let started = Instant::now();
    loop {
        let sealed: Option<(i64,)> = sqlx::query_as(
            "SELECT sealed_until FROM run_rollup_marks WHERE workspace_id = 'bench'",
        )
        .fetch_optional(&mut *db)
        .await?;
        if sealed.is_some_and(|(t,)| t >= goal) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the roller did not fold the runs in 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "          waited {:.1} s more for the server's roller to fold the runs (it works during the list walks)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "scale-lists: ListRuns (50 per page) and GetRunStats against the number of runs in one \
         project; {} calls per list figure, {} per stats figure; load average {}",
        args.samples,
        args.stats_samples,
        load.trim()
    );
    for &size in &args.sizes {
        one_size(cli, args, size).await?;
    }
    Ok(())
}
