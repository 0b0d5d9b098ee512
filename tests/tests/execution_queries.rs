//! Reading back what ran: GetRunStats (counts by status, success rate, latency
//! percentiles, usage, per agent, time windows), ListRuns (per session and project-wide,
//! newest first, filters, pages) and ListMessages pages.

mod execution_support;

use std::time::Duration;

use agentry_e2e::*;
use execution_support::*;
use tonic::Code;

/// World plus agent `other` (same tools) with instance `bot2`; the worker serves both.
async fn two_agents(app: &TestApp) -> (World, String, String) {
    let mut w = World::setup(app).await;
    let other = w.acme.agent("other", tool_agent()).await;
    let bot2 = w
        .acme
        .instance(
            "web",
            "bot2",
            pb::Instance {
                agent: other.name.clone(),
                ..Default::default()
            },
        )
        .await;
    w.worker.agents.push(other.name.clone());
    (w, other.name, bot2.name)
}

/// A QUEUED run in project `side` (same agent), which no query of `web` may count.
async fn run_in_another_project(w: &World) -> pb::Run {
    w.acme.project("side").await;
    let instance = pb::Instance {
        agent: w.agent.clone(),
        ..Default::default()
    };
    w.acme.instance("side", "bot", instance).await;
    let session = w
        .client
        .clone()
        .create_session(create_session(
            &w.acme.project_name("side"),
            "x",
            &w.acme.instance_name("side", "bot"),
        ))
        .await
        .must();
    w.run(&session.name, "elsewhere").await
}

fn names(runs: &[pb::Run]) -> Vec<String> {
    runs.iter().map(|r| r.name.clone()).collect()
}

/// Only the non-zero entries of a count map.
fn nonzero(map: &std::collections::BTreeMap<String, i64>) -> Vec<(String, i64)> {
    map.iter()
        .filter(|(_, n)| **n != 0)
        .map(|(k, n)| (k.clone(), *n))
        .collect()
}

#[track_caller]
fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-6,
        "{what}: {actual} vs {expected}"
    );
}

/// Asserts the percentiles of `stats` are consistent with the sorted `values` (ms),
/// whether nearest-rank or interpolated.
#[track_caller]
fn assert_percentiles(stats: &pb::DurationStats, values: &[f64], what: &str) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    assert_eq!(stats.count, n as i64, "{what}: count");
    let (p50, p95, p99) = (
        millis_of(&stats.p50),
        millis_of(&stats.p95),
        millis_of(&stats.p99),
    );
    let slack = 1.0;
    let lo50 = v[(n - 1) / 2];
    let hi50 = v[n / 2];
    assert!(
        p50 >= lo50 - slack && p50 <= hi50 + slack,
        "{what}: p50 {p50} not the median of {v:?}"
    );
    assert!(
        p50 <= p95 + slack && p95 <= p99 + slack,
        "{what}: p50 ≤ p95 ≤ p99: {stats:?}"
    );
    assert!(
        p99 <= v[n - 1] + slack,
        "{what}: p99 {p99} above the max of {v:?}"
    );
    assert!(
        p99 >= v[n - 2] - slack,
        "{what}: p99 {p99} below the second largest of {v:?}"
    );
}

backend_tests!(
    run_stats_count_statuses_rates_percentiles_and_usage,
    |app| async move {
        let (w, other, bot2) = two_agents(&app).await;
        // Four runs that start, working 100, 300, 500 and 200 ms; three succeed, one fails.
        let mut finished = Vec::new();
        for (i, (instance, work_ms, fail)) in [
            (w.instance.clone(), 100, false),
            (w.instance.clone(), 300, false),
            (bot2.clone(), 500, false),
            (bot2.clone(), 200, true),
        ]
        .into_iter()
        .enumerate()
        {
            let session = w.session_with(&format!("s{i}"), &instance).await;
            let run = w
                .start(
                    &session.name,
                    pb::Run {
                        retry_policy: retry(100, 1),
                        ..spec("go")
                    },
                )
                .await;
            let task = w.worker.claim().await;
            assert_eq!(task.run.as_ref().unwrap().name, run.name);
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
            let n = i as i64 + 1;
            if fail {
                w.worker
                    .append(&task.task_token, vec![usage_event(n, 1, 0.01)])
                    .await;
                w.worker
                    .fail(&task.task_token, "Boom", false)
                    .await
                    .unwrap();
            } else {
                w.worker
                    .try_complete(
                        &task.task_token,
                        vec![assistant("ok")],
                        Some(usage(10 * n, 5, 0.1 * n as f64)),
                    )
                    .await
                    .unwrap();
            }
            finished.push(w.get_run(&run.name).await);
        }
        let cancelled = w.session("cancelled").await;
        let run = w.run(&cancelled.name, "never").await;
        w.cancel(&run.name, "").await.unwrap();
        let queued = w.session("queued").await;
        w.run(&queued.name, "later").await;
        run_in_another_project(&w).await;

        let stats = w
            .reader
            .clone()
            .get_run_stats(pb::GetRunStatsRequest {
                parent: w.project.clone(),
                group_by_agent: true,
                ..Default::default()
            })
            .await
            .must();
        let total = stats.total.clone().expect("the project total");
        assert_eq!(total.agent, "");
        assert_eq!(total.total, 6);
        assert_eq!(
            nonzero(&total.count_by_status),
            [
                ("RUN_STATUS_CANCELLED".to_string(), 1),
                ("RUN_STATUS_FAILED".into(), 1),
                ("RUN_STATUS_QUEUED".into(), 1),
                ("RUN_STATUS_SUCCEEDED".into(), 3),
            ]
        );
        assert_close(total.success_rate, 3.0 / 5.0, "success rate");
        let run_times: Vec<f64> = finished
            .iter()
            .map(|r| millis_between(&r.start_time, &r.end_time))
            .collect();
        let waits: Vec<f64> = finished
            .iter()
            .map(|r| millis_between(&r.create_time, &r.start_time))
            .collect();
        println!("run times {run_times:?} ms; stats {:?}", total.run_time);
        assert_percentiles(total.run_time.as_ref().unwrap(), &run_times, "run_time");
        assert_percentiles(total.queue_wait.as_ref().unwrap(), &waits, "queue_wait");
        let u = total.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens),
            (10 + 20 + 30 + 4, 5 + 5 + 5 + 1)
        );
        assert_close(u.cost_usd, 0.1 + 0.2 + 0.3 + 0.01, "cost");
        let window = millis_between(&stats.start_time, &stats.end_time);
        assert!(
            (window - 24.0 * 3600.0 * 1000.0).abs() < 1000.0,
            "the default window is 24 h: {window} ms"
        );
        assert!(nanos(&stats.end_time) <= now_nanos() + 1_000_000_000);

        let mut by_agent = stats.by_agent.clone();
        by_agent.sort_by(|a, b| a.agent.cmp(&b.agent));
        let agents: Vec<&str> = by_agent.iter().map(|s| s.agent.as_str()).collect();
        assert_eq!(agents, [w.agent.as_str(), other.as_str()]);
        let helper = &by_agent[0];
        assert_eq!(helper.total, 4);
        assert_eq!(
            nonzero(&helper.count_by_status),
            [
                ("RUN_STATUS_CANCELLED".to_string(), 1),
                ("RUN_STATUS_QUEUED".into(), 1),
                ("RUN_STATUS_SUCCEEDED".into(), 2),
            ]
        );
        assert_close(helper.success_rate, 2.0 / 3.0, "helper success rate");
        assert_percentiles(
            helper.run_time.as_ref().unwrap(),
            &run_times[..2],
            "helper run_time",
        );
        let second = &by_agent[1];
        assert_eq!(second.total, 2);
        assert_close(second.success_rate, 0.5, "other success rate");
        assert_eq!(second.usage.as_ref().unwrap().input_tokens, 34);

        // Without grouping, no breakdown.
        let plain = w
            .client
            .clone()
            .get_run_stats(pb::GetRunStatsRequest {
                parent: w.project.clone(),
                ..Default::default()
            })
            .await
            .must();
        assert!(plain.by_agent.is_empty());
        assert_eq!(plain.total.unwrap().total, 6);

        // A window: runs created in [start, end).
        let third = &finished[2];
        let early = w
            .client
            .clone()
            .get_run_stats(pb::GetRunStatsRequest {
                parent: w.project.clone(),
                start_time: finished[0].create_time,
                end_time: third.create_time,
                group_by_agent: false,
            })
            .await
            .must();
        let early = early.total.unwrap();
        assert_eq!(early.total, 2, "the first two runs only");
        assert_close(early.success_rate, 1.0, "early success rate");
        let past = w
            .client
            .clone()
            .get_run_stats(pb::GetRunStatsRequest {
                parent: w.project.clone(),
                start_time: timestamp_from_nanos(now_nanos() - 72 * 3600 * 1_000_000_000),
                end_time: timestamp_from_nanos(now_nanos() - 48 * 3600 * 1_000_000_000),
                group_by_agent: true,
            })
            .await
            .must();
        let empty = past.total.unwrap();
        assert_eq!(empty.total, 0);
        assert_eq!(empty.success_rate, 0.0, "0 when none finished");
        assert!(nonzero(&empty.count_by_status).is_empty());
        let backwards = w
            .client
            .clone()
            .get_run_stats(pb::GetRunStatsRequest {
                parent: w.project.clone(),
                start_time: third.create_time,
                end_time: finished[0].create_time,
                group_by_agent: false,
            })
            .await;
        assert_eq!(backwards.unwrap_err().code(), Code::InvalidArgument);
    }
);

backend_tests!(list_runs_filters_and_pages_newest_first, |app| async move {
    let (w, other, bot2) = two_agents(&app).await;
    let a = w.session("a").await;
    let b = w.session_with("b", &bot2).await;
    let r1 = w.run(&a.name, "1").await;
    serve_one(&w, "ok").await;
    let r2 = w.run(&a.name, "2").await;
    serve_one(&w, "ok").await;
    let r4 = w.run(&b.name, "4").await;
    serve_one(&w, "ok").await;
    let r3 = w.run(&a.name, "3").await;
    let task = w.worker.claim().await;
    assert_eq!(task.run.unwrap().name, r3.name);
    let r5 = w.run(&b.name, "5").await;
    // A run in another project is never listed here.
    let side_run = run_in_another_project(&w).await;
    let side_all = side_run.name.split("/sessions/").next().unwrap().to_owned() + "/sessions/-";
    assert_eq!(names(&w.runs(&side_all, "").await), [side_run.name]);
    let all = format!("{}/sessions/-", w.project);
    let n = |runs: &[&pb::Run]| runs.iter().map(|r| r.name.clone()).collect::<Vec<_>>();

    assert_eq!(names(&w.runs(&a.name, "").await), n(&[&r3, &r2, &r1]));
    assert_eq!(names(&w.runs(&b.name, "").await), n(&[&r5, &r4]));
    assert_eq!(
        names(&w.runs(&all, "").await),
        n(&[&r5, &r3, &r4, &r2, &r1])
    );
    assert_eq!(names(&w.runs(&all, "status = RUNNING").await), n(&[&r3]));
    assert_eq!(names(&w.runs(&all, "status = QUEUED").await), n(&[&r5]));
    assert_eq!(
        names(&w.runs(&all, "status = SUCCEEDED").await),
        n(&[&r4, &r2, &r1])
    );
    assert_eq!(
        names(&w.runs(&a.name, "status = SUCCEEDED").await),
        n(&[&r2, &r1])
    );
    assert_eq!(
        names(&w.runs(&all, &format!("agent = \"{}\"", w.agent)).await),
        n(&[&r3, &r2, &r1])
    );
    assert_eq!(
        names(&w.runs(&all, &format!("agent = \"{other}\"")).await),
        n(&[&r5, &r4])
    );
    assert_eq!(
        names(&w.runs(&all, &format!("instance = \"{bot2}\"")).await),
        n(&[&r5, &r4])
    );
    let after_r2 = format!("create_time > \"{}\"", rfc3339(&r2.create_time));
    assert_eq!(names(&w.runs(&all, &after_r2).await), n(&[&r5, &r3, &r4]));
    let before_r4 = format!("create_time < \"{}\"", rfc3339(&r4.create_time));
    assert_eq!(names(&w.runs(&all, &before_r4).await), n(&[&r2, &r1]));
    assert_eq!(
        names(
            &w.runs(&all, &format!("status = SUCCEEDED AND {after_r2}"))
                .await
        ),
        n(&[&r4])
    );
    assert_eq!(
        names(&w.runs(&all, &format!("{after_r2} AND {before_r4}")).await),
        Vec::<String>::new()
    );

    // Pages of 2, then of 1 with a filter: every run once, in order.
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = w
            .client
            .clone()
            .list_runs(list_runs(&all, "", 2, &token))
            .await
            .must();
        assert!(page.runs.len() <= 2);
        pages.push(names(&page.runs));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        pages,
        [n(&[&r5, &r3]), n(&[&r4, &r2]), n(&[&r1])],
        "pages of two, newest first"
    );
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = w
            .client
            .clone()
            .list_runs(list_runs(&all, "status = SUCCEEDED", 1, &token))
            .await
            .must();
        seen.extend(names(&page.runs));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, n(&[&r4, &r2, &r1]));

    for bad in [
        "bogus = 1",
        "status = NOPE",
        "status RUNNING",
        "create_time > \"yesterday\"",
    ] {
        let result = w
            .client
            .clone()
            .list_runs(list_runs(&all, bad, 10, ""))
            .await;
        assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    let forged = w
        .client
        .clone()
        .list_runs(list_runs(&all, "", 2, "garbage"))
        .await;
    assert_status(forged, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
    let negative = w
        .client
        .clone()
        .list_runs(list_runs(&all, "", -1, ""))
        .await;
    assert_status(negative, Code::InvalidArgument, "INVALID_ARGUMENT");
    let missing = w
        .client
        .clone()
        .list_runs(list_runs(&w.session_name("nope"), "", 10, ""))
        .await;
    assert_status(missing, Code::NotFound, "RESOURCE_NOT_FOUND");
});

backend_tests!(
    list_messages_pages_the_transcript_in_order,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        w.start(
            &session.name,
            pb::Run {
                input: vec![message(pb::MessageRole::System, "sys"), user("u1")],
                ..Default::default()
            },
        )
        .await;
        let task = w.worker.claim().await;
        w.worker
            .append(&task.task_token, vec![said(assistant("a1"))])
            .await;
        w.worker.complete(&task.task_token, "a1b").await;
        w.run(&session.name, "u2").await;
        serve_one(&w, "a2").await;
        w.run(&session.name, "u3").await;

        let everything = w.messages(&session.name, false).await;
        assert_eq!(
            transcript(&everything),
            [
                line("SYSTEM", "sys", ""),
                line("USER", "u1", ""),
                line("ASSISTANT", "a1", ""),
                line("ASSISTANT", "a1b", ""),
                line("USER", "u2", ""),
                line("ASSISTANT", "a2", ""),
                line("USER", "u3", ""),
            ]
        );
        assert_eq!(w.get_session(&session.name).await.message_count, 7);

        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let page = w
                .reader
                .clone()
                .list_messages(list_messages(&session.name, false, 3, &token))
                .await
                .must();
            pages.push(page.messages.iter().map(|m| m.sequence).collect::<Vec<_>>());
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);

        let default = w
            .client
            .clone()
            .list_messages(list_messages(&session.name, false, 0, ""))
            .await
            .must();
        assert_eq!(default.messages, everything, "the default page holds all 7");
        let big = w
            .client
            .clone()
            .list_messages(list_messages(&session.name, false, 100_000, ""))
            .await
            .must();
        assert_eq!(
            big.messages.len(),
            7,
            "a huge page size is capped, not refused"
        );

        let forged = w
            .client
            .clone()
            .list_messages(list_messages(&session.name, false, 3, "garbage"))
            .await;
        assert_status(forged, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
        let negative = w
            .client
            .clone()
            .list_messages(list_messages(&session.name, false, -3, ""))
            .await;
        assert_status(negative, Code::InvalidArgument, "INVALID_ARGUMENT");
        // A page token is bound to its listing.
        let first = w
            .client
            .clone()
            .list_messages(list_messages(&session.name, false, 3, ""))
            .await
            .must();
        let other = w.session("other").await;
        let reused = w
            .client
            .clone()
            .list_messages(list_messages(&other.name, false, 3, &first.next_page_token))
            .await;
        assert_status(reused, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
    }
);

backend_tests!(list_sessions_pages_newest_first, |app| async move {
    let w = World::setup(&app).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(w.session(&format!("s{i}")).await.name);
    }
    created.reverse();
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = w
            .reader
            .clone()
            .list_sessions(pb::ListSessionsRequest {
                parent: w.project.clone(),
                page_size: 2,
                page_token: token.clone(),
                filter: String::new(),
            })
            .await
            .must();
        pages.push(
            page.sessions
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        pages,
        [&created[0..2], &created[2..4], &created[4..5]].map(|p| p.to_vec())
    );
    let forged = w
        .client
        .clone()
        .list_sessions(pb::ListSessionsRequest {
            parent: w.project.clone(),
            page_size: 2,
            page_token: "garbage".into(),
            filter: String::new(),
        })
        .await;
    assert_status(forged, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
});
