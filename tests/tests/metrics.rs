//! `--metrics-listen`: every metric the README lists is served at `/metrics` from the
//! start, the values move with activity, no label carries an id, and `/healthz` and
//! `/readyz` say what they promise.

use std::time::Duration;

use agentry_e2e::{process::http_get, *};
use pb::{
    context_service_client::ContextServiceClient, execution_service_client::ExecutionServiceClient,
};

const METRICS: &[&str] = &[
    "agentry_rpc_requests_total",
    "agentry_rpc_duration_seconds",
    "agentry_runs",
    "agentry_run_pickup_seconds",
    "agentry_leases_expired_total",
    "agentry_reaper_actions_total",
    "agentry_streams_open",
    "agentry_context_writes_total",
    "agentry_db_pool_connections",
    "agentry_context_write_batch_writes",
    "agentry_context_write_batch_seconds",
];

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let metric = series.split('{').next().unwrap_or(series);
            metric == name && labels.iter().all(|label| series.contains(label))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

async fn scrape(app: &TestApp) -> String {
    let (status, body) = http_get(app.metrics_addr.expect("metrics served"), "/metrics").await;
    assert_eq!(status, 200);
    body
}

fn with_metrics(config: &mut agentry_server::config::Config) {
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
}

#[tokio::test]
async fn metrics_are_listed_and_move_with_activity_sqlite() {
    metrics_are_listed_and_move_with_activity(Backend::Sqlite).await;
}

#[tokio::test]
async fn metrics_are_listed_and_move_with_activity_postgres() {
    metrics_are_listed_and_move_with_activity(Backend::Postgres).await;
}

async fn metrics_are_listed_and_move_with_activity(backend: Backend) {
    let app = spawn_app_with(backend, with_metrics).await;
    let before = scrape(&app).await;
    for name in METRICS {
        if *name == "agentry_rpc_requests_total" || *name == "agentry_rpc_duration_seconds" {
            continue; // listed once a call has been made
        }
        assert!(
            before.contains(&format!("# TYPE {name} ")),
            "{name} is missing from:\n{before}"
        );
    }
    assert_eq!(
        sample(&before, r#"agentry_runs{status="QUEUED"}"#),
        Some(0.0)
    );
    assert!(sample(&before, r#"agentry_db_pool_connections{state="max"}"#).unwrap() >= 1.0);

    // Activity: a tenant, an instance, a context written twice, a run leased by a worker
    // whose lease then lapses, an open watch, and a failing call.
    let acme = app.tenant("acme").await;
    let instance = acme.instance_with_agent("web", "echo", "echo-1").await;
    let project = acme.project_name("web");
    let mut contexts =
        ContextServiceClient::with_interceptor(app.channel(), Bearer::new(&acme.admin_key));
    let context = contexts
        .create_context(pb::CreateContextRequest {
            parent: project.clone(),
            context_id: "memory".into(),
            context: Some(pb::Context::default()),
            data: Some(to_value(json!({"turn": 1}))),
            ..Default::default()
        })
        .await
        .must();
    for _ in 0..2 {
        contexts
            .write_context(pb::WriteContextRequest {
                name: context.name.clone(),
                change: Some(pb::write_context_request::Change::MergePatch(to_value(
                    json!({"turn": 2}),
                ))),
                ..Default::default()
            })
            .await
            .must();
    }
    let mut watch = contexts
        .watch_context(pb::WatchContextRequest {
            name: context.name.clone(),
            after_version: 0,
            ..Default::default()
        })
        .await
        .must();
    watch.message().await.unwrap().expect("version 1");

    let mut execution = app.execution(&acme.admin_key).await;
    let session = execution
        .create_session(pb::CreateSessionRequest {
            parent: project.clone(),
            session: Some(pb::Session {
                instance: instance.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .must();
    let run = execution
        .create_run(pb::CreateRunRequest {
            parent: session.name.clone(),
            run: Some(pb::Run {
                input: vec![pb::Message {
                    role: pb::MessageRole::User as i32,
                    content: "hello".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .must();
    let queued = eventually(Duration::from_secs(10), || async {
        let text = scrape(&app).await;
        (sample(&text, r#"agentry_runs{status="QUEUED"}"#) == Some(1.0)).then_some(text)
    })
    .await;
    assert!(queued.is_some(), "agentry_runs counts the queued run");

    let worker_key = acme.key(pb::Role::Worker).await;
    let mut worker =
        ExecutionServiceClient::with_interceptor(app.channel(), Bearer::new(&worker_key));
    let task = worker
        .poll_task(pb::PollTaskRequest {
            parent: acme.name.clone(),
            agents: vec![acme.agent_name("echo")],
            identity: "w1".into(),
            wait: seconds(5),
            lease_duration: seconds(1),
        })
        .await
        .must();
    assert!(task.task.is_some(), "the worker leases the run");
    let missing = app
        .root()
        .await
        .get_workspace(req::get_workspace("workspaces/nope"))
        .await;
    assert_status(missing, tonic::Code::NotFound, "RESOURCE_NOT_FOUND");

    let after = eventually(Duration::from_secs(20), || async {
        let text = scrape(&app).await;
        let lapsed = sample(&text, "agentry_leases_expired_total").unwrap_or(0.0) >= 1.0;
        lapsed.then_some(text)
    })
    .await
    .expect("the lapsed lease is counted");

    let ok = |method: &str| {
        format!(
            r#"agentry_rpc_requests_total{{service="agentry.v1.RegistryService",method="{method}",code="OK"}}"#
        )
    };
    assert_eq!(sample(&after, &ok("CreateWorkspace")), Some(1.0));
    assert_eq!(
        sample(
            &after,
            r#"agentry_rpc_requests_total{service="agentry.v1.RegistryService",method="GetWorkspace",code="NOT_FOUND"}"#
        ),
        Some(1.0)
    );
    assert!(
        total(
            &after,
            "agentry_rpc_duration_seconds_count",
            &[r#"method="WriteContext""#]
        ) >= 2.0
    );
    assert_eq!(
        sample(&after, r#"agentry_context_writes_total{op="create"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, r#"agentry_context_writes_total{op="merge_patch"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, r#"agentry_context_writes_total{op="noop"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, r#"agentry_streams_open{kind="watch_context"}"#),
        Some(1.0)
    );
    // The two writes, one after the other, committed in a group-commit batch each (the
    // noop stores its audit record) on Postgres; SQLite writes one at a time, outside
    // any batch.
    let batches = if backend == Backend::Postgres {
        2.0
    } else {
        0.0
    };
    assert_eq!(
        sample(&after, "agentry_context_write_batch_writes_count"),
        Some(batches)
    );
    assert_eq!(
        sample(&after, "agentry_context_write_batch_writes_sum"),
        Some(batches)
    );
    for phase in ["lock", "store", "commit"] {
        assert_eq!(
            sample(
                &after,
                &format!(r#"agentry_context_write_batch_seconds_count{{phase="{phase}"}}"#)
            ),
            Some(batches),
            "{phase}"
        );
    }
    assert_eq!(
        sample(&after, "agentry_run_pickup_seconds_count"),
        Some(1.0)
    );
    assert!(
        sample(
            &after,
            r#"agentry_reaper_actions_total{action="lease_requeued"}"#
        )
        .unwrap()
            >= 1.0
    );

    // No label carries an id of a run, session, key or workspace.
    let ids = [
        run.name.rsplit('/').next().unwrap().to_owned(),
        session.name.rsplit('/').next().unwrap().to_owned(),
        worker_key.clone(),
        "acme".to_owned(),
    ];
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        for id in &ids {
            assert!(!line.contains(id.as_str()), "{line} carries {id}");
        }
    }

    // The watch ends: the gauge goes back down.
    drop(watch);
    let closed = eventually(Duration::from_secs(10), || async {
        let text = scrape(&app).await;
        (sample(&text, r#"agentry_streams_open{kind="watch_context"}"#) == Some(0.0)).then_some(())
    })
    .await;
    assert!(
        closed.is_some(),
        "a closed stream leaves agentry_streams_open"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn probes_say_live_and_ready_sqlite() {
    probes_say_live_and_ready(Backend::Sqlite).await;
}

#[tokio::test]
async fn probes_say_live_and_ready_postgres() {
    probes_say_live_and_ready(Backend::Postgres).await;
}

/// Live and ready; then, with a migration's record gone, live and not ready.
async fn probes_say_live_and_ready(backend: Backend) {
    let app = spawn_app_with(backend, with_metrics).await;
    let addr = app.metrics_addr.unwrap();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!((status, body.trim()), (200, "ready"));

    app.database()
        .execute("DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)")
        .await
        .unwrap();
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("migrations not applied"), "{body}");
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    app.shutdown().await;
}

/// While every database connection hangs, `/metrics` still answers at once with the last
/// counts it had, and `/readyz` says not ready: a scrape or a probe never waits for the
/// database longer than `PROBE_DB_WAIT`.
#[tokio::test]
async fn probes_answer_at_once_while_the_database_hangs() {
    let database = fresh_database(Backend::Postgres).await;
    let proxy = PgProxy::start(&database.url).await;
    let through_proxy = proxy.url();
    let app = spawn_app_with(Backend::Postgres, |config| {
        with_metrics(config);
        config.database_url = agentry_server::config::Secret::new(through_proxy);
    })
    .await;
    let addr = app.metrics_addr.unwrap();
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    scrape(&app).await;

    proxy.stall();
    // Past the age of the last count, so that the next scrape asks the database again.
    tokio::time::sleep(agentry_server::metrics::RUNS_MAX_AGE + Duration::from_millis(500)).await;
    let bound = agentry_server::metrics::PROBE_DB_WAIT + Duration::from_secs(1);
    let started = std::time::Instant::now();
    let body = scrape(&app).await;
    let took = started.elapsed();
    assert!(took < bound, "a scrape took {took:?} during the outage");
    assert!(
        sample(&body, "agentry_runs{status=\"QUEUED\"}").is_some(),
        "the last counts are still served:\n{body}"
    );
    let started = std::time::Instant::now();
    let (status, body) = http_get(addr, "/readyz").await;
    let took = started.elapsed();
    assert!(took < bound, "/readyz took {took:?} during the outage");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("did not answer"), "{body}");

    proxy.restore();
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    app.shutdown().await;
    database.drop_database().await;
}
