//! GetRunStats from rollups gives the figures of a scan of the whole window: the same
//! counts and sums exactly and percentiles within 1 %, for sealed hours, partial hours
//! at the window's edges and the runs after the watermark; a re-roll changes nothing; a
//! run still unfinished holds the watermark back until it ends; a deleted run's hours
//! are unsealed and folded again. Whole sealed days are summed into daily rows, which
//! hold the sums of their hours and give the same answers, at partial days too.

use agentry_core::names::{ProjectName, SessionName};
use agentry_core::port::{RunStatsGroup, RunStatsQuery, RunStatsStore, SessionStore};
use agentry_core::time::now_micros;
use agentry_store::Percentiles;

use super::{
    timers::{run_in, tenant},
    *,
};

const HOUR: i64 = 3_600_000_000;
const MINUTE: i64 = 60_000_000;
const ROLL: std::time::Duration = std::time::Duration::from_secs(60);

fn web() -> ProjectName {
    ProjectName {
        workspace: "acme".into(),
        project: "web".into(),
    }
}

async fn stats(store: &Store, start: i64, end: i64) -> (RunStatsGroup, Vec<RunStatsGroup>) {
    let query = RunStatsQuery {
        start,
        end,
        by_agent: true,
    };
    store.run_stats(&web(), query).await.expect("stats")
}

/// The answer of a scan of the whole window: the rollups hidden (no hour below the
/// watermark), asked, and shown again.
async fn scanned(
    store: &Store,
    db: &FreshDatabase,
    start: i64,
    end: i64,
) -> (RunStatsGroup, Vec<RunStatsGroup>) {
    let flip = "UPDATE run_rollup_marks SET sealed_until = -sealed_until - 1";
    db.execute(flip).await.expect("hide");
    let answer = stats(store, start, end).await;
    db.execute(flip).await.expect("show");
    answer
}

fn close(exact: &Percentiles, rolled: &Percentiles, what: &str) {
    assert_eq!(exact.count, rolled.count, "{what} count");
    for (e, r) in [
        (exact.p50, rolled.p50),
        (exact.p95, rolled.p95),
        (exact.p99, rolled.p99),
    ] {
        let error = (e - r).abs() as f64 / e.abs().max(1) as f64;
        assert!(error <= 0.01, "{what}: exact {e}, rolled {r}");
    }
}

fn same(exact: &RunStatsGroup, rolled: &RunStatsGroup) {
    assert_eq!(exact.agent, rolled.agent);
    assert_eq!(exact.total, rolled.total);
    assert_eq!(exact.by_status, rolled.by_status);
    assert_eq!(
        (exact.finished, exact.succeeded),
        (rolled.finished, rolled.succeeded)
    );
    assert_eq!(exact.usage.input_tokens, rolled.usage.input_tokens);
    assert_eq!(exact.usage.output_tokens, rolled.usage.output_tokens);
    assert!((exact.usage.cost_usd - rolled.usage.cost_usd).abs() < 1e-9);
    close(&exact.queue_wait, &rolled.queue_wait, "queue wait");
    close(&exact.run_time, &rolled.run_time, "run time");
}

/// Every window of `windows` gives the scan's figures.
async fn agrees(store: &Store, db: &FreshDatabase, windows: &[(i64, i64)]) {
    for &(start, end) in windows {
        let (exact, exact_agents) = scanned(store, db, start, end).await;
        let (rolled, rolled_agents) = stats(store, start, end).await;
        same(&exact, &rolled);
        assert_eq!(exact_agents.len(), rolled_agents.len());
        for (e, r) in exact_agents.iter().zip(&rolled_agents) {
            same(e, r);
        }
    }
}

async fn watermark(db: &FreshDatabase, at: i64) -> bool {
    db.count(&format!("run_rollup_marks WHERE sealed_until = {at}"))
        .await
        == 1
}

conformance!(rolled_up_stats_match_a_scan_of_the_window, |store, db| {
    tenant(&store, "acme").await;
    let now = now_micros();
    let base = (now / HOUR) * HOUR - 10 * HOUR;
    let mut sessions = Vec::new();
    // 40 runs over hours base .. base+6h; run 25 (at base + 3h10m) still QUEUED, run 39
    // RUNNING a minute ago; the rest finished in four ways, over two agents.
    for i in 0..40i64 {
        let run = run_in(&store, "acme", &format!("s{i}"), 0).await;
        sessions.push(format!("s{i}"));
        let create = match i {
            25 => base + 3 * HOUR + 10 * MINUTE,
            39 => now - MINUTE,
            _ => base + i * 9 * MINUTE + i * 7,
        };
        let status = match i {
            25 => "QUEUED",
            39 => "RUNNING",
            _ => ["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"][(i % 4) as usize],
        };
        let wait = if i % 7 == 0 {
            50 + i
        } else {
            1_000 * i + 37 * i * i
        };
        let timing = match status {
            "QUEUED" => "start_time = NULL, end_time = NULL".to_owned(),
            "RUNNING" => format!("start_time = {}, end_time = NULL", create + wait),
            _ if i % 5 == 3 => "start_time = NULL".to_owned(),
            _ => format!(
                "start_time = {}, end_time = {}",
                create + wait,
                create + wait + 123_457 * i
            ),
        };
        let agent = if i % 3 == 0 { "other" } else { "echo" };
        let sql = format!(
            "UPDATE runs SET status = '{status}', agent_id = '{agent}', create_time = {create}, \
             {timing}, input_tokens = {i}, output_tokens = {}, cost_usd = {} WHERE run_id = '{}'",
            i * 3,
            0.25 * i as f64,
            run.id
        );
        assert_eq!(db.execute(&sql).await.expect("shape the run"), 1);
    }
    let windows = [
        (0, i64::MAX),
        (base, base + 5 * HOUR),
        (base + 30 * MINUTE + 7, base + 4 * HOUR + 123),
        (base + 2 * HOUR, now + HOUR),
        (base + HOUR + 1, base + 2 * HOUR + 1),
    ];
    let before = stats(&store, 0, i64::MAX).await;

    // The watermark stops at the hour of the unfinished run.
    let (folded, behind) = store.roll_run_stats(ROLL).await.expect("roll");
    assert!(!behind);
    assert_eq!(folded, 20, "the runs of the three hours before run 25");
    assert!(watermark(&db, base + 3 * HOUR).await);
    assert!(db.count("run_rollups").await > 0);
    same(&before.0, &stats(&store, 0, i64::MAX).await.0);
    // (The sealed hours, or their days, are read from the rollups, not scanned.)
    for table in ["run_rollups", "run_rollups_daily"] {
        let skew = format!("UPDATE {table} SET runs = runs + 1000");
        db.execute(&skew).await.expect("skew");
    }
    assert!(stats(&store, 0, i64::MAX).await.0.total > 1000);
    for table in ["run_rollups", "run_rollups_daily"] {
        let unskew = format!("UPDATE {table} SET runs = runs - 1000");
        db.execute(&unskew).await.expect("unskew");
    }
    agrees(&store, &db, &windows).await;

    // Rolling again folds nothing and changes nothing.
    assert_eq!(store.roll_run_stats(ROLL).await.expect("roll"), (0, false));
    agrees(&store, &db, &windows).await;

    // Run 25 ends: its hour and the ones after it are sealed up to the running run.
    let finish = format!(
        "UPDATE runs SET status = 'SUCCEEDED', start_time = create_time + 999, \
         end_time = create_time + 5000999 WHERE create_time = {}",
        base + 3 * HOUR + 10 * MINUTE
    );
    assert_eq!(db.execute(&finish).await.expect("finish"), 1);
    let (folded, _) = store.roll_run_stats(ROLL).await.expect("roll");
    assert_eq!(folded, 19, "runs 20 to 38, 25 among them");
    let sealed = format!("run_rollup_marks WHERE sealed_until >= {}", base + 9 * HOUR);
    assert_eq!(db.count(&sealed).await, 1);
    agrees(&store, &db, &windows).await;

    // A deleted session unseals its run's hour; the figures stay right before and after
    // the hours are folded again.
    let session = SessionName {
        workspace: "acme".into(),
        project: "web".into(),
        session: sessions[12].clone(),
    };
    let idle = "UPDATE sessions SET active_run = '' WHERE session_id = 's12'";
    assert_eq!(db.execute(idle).await.expect("the session is idle"), 1);
    store
        .delete_session(&mutation("acme", "DeleteSession", "s12", "", b""), &session)
        .await
        .expect("delete the session");
    let hour_of_12 = ((base + 12 * 9 * MINUTE + 84) / HOUR) * HOUR;
    assert!(watermark(&db, hour_of_12).await);
    agrees(&store, &db, &windows).await;
    store.roll_run_stats(ROLL).await.expect("roll");
    assert!(
        db.count(&format!(
            "run_rollup_marks WHERE sealed_until > {hour_of_12}"
        ))
        .await
            == 1
    );
    agrees(&store, &db, &windows).await;
    assert_eq!(stats(&store, 0, i64::MAX).await.0.total, 39);

    // The rollups go with their project.
    db.execute("DELETE FROM projects")
        .await
        .expect("delete the project");
    assert_eq!(db.count("run_rollups").await, 0);
    assert_eq!(db.count("run_rollup_marks").await, 0);
});

const DAY: i64 = 24 * HOUR;

/// `db`'s daily rows that differ from the sums of their hours (in counts and sums).
async fn days_unlike_their_hours(db: &FreshDatabase) -> i64 {
    let sum = |column: &str| {
        format!(
            "d.{column} <> (SELECT SUM(h.{column}) FROM run_rollups h \
             WHERE h.workspace_id = d.workspace_id AND h.project_id = d.project_id \
             AND h.agent_id = d.agent_id AND h.status = d.status \
             AND h.bucket >= d.bucket AND h.bucket < d.bucket + {DAY})"
        )
    };
    let columns = ["runs", "input_tokens", "output_tokens", "started", "ended"];
    let differ: Vec<String> = columns.iter().map(|c| sum(c)).collect();
    db.count(&format!(
        "run_rollups_daily d WHERE {} OR d.bucket % {DAY} <> 0",
        differ.join(" OR ")
    ))
    .await
}

/// The window's figures from the daily rows equal those from the hours alone.
async fn days_answer_like_hours(store: &Store, db: &FreshDatabase, start: i64, end: i64) {
    let (from_days, _) = stats(store, start, end).await;
    let hide = "UPDATE run_rollup_marks SET daily_until = daily_until - 1000 * 86400000000";
    db.execute(hide).await.expect("hide the days");
    let (from_hours, _) = stats(store, start, end).await;
    let show = "UPDATE run_rollup_marks SET daily_until = daily_until + 1000 * 86400000000";
    db.execute(show).await.expect("show the days");
    same(&from_hours, &from_days);
    assert_eq!(from_hours.queue_wait, from_days.queue_wait);
    assert_eq!(from_hours.run_time, from_days.run_time);
}

conformance!(daily_rollups_sum_their_hours, |store, db| {
    tenant(&store, "acme").await;
    let now = now_micros();
    let day0 = (now / DAY) * DAY - 4 * DAY;
    // 48 finished runs every 1h47m from day0 (about 3.6 days, all before today), two
    // agents, two statuses, waits and run times spread over three decades.
    let mut sessions = Vec::new();
    for i in 0..48i64 {
        let run = run_in(&store, "acme", &format!("s{i}"), 0).await;
        sessions.push((format!("s{i}"), day0 + i * 107 * MINUTE + i * 13));
        let create = sessions[i as usize].1;
        let status = if i % 5 == 0 { "FAILED" } else { "SUCCEEDED" };
        let agent = if i % 3 == 0 { "other" } else { "echo" };
        let wait = 200 + 997 * i * i;
        let sql = format!(
            "UPDATE runs SET status = '{status}', agent_id = '{agent}', create_time = {create}, \
             start_time = {}, end_time = {}, input_tokens = {i}, output_tokens = {}, \
             cost_usd = {} WHERE run_id = '{}'",
            create + wait,
            create + wait + 31_337 * i * i + 500,
            i * 2,
            0.5 * i as f64,
            run.id
        );
        assert_eq!(db.execute(&sql).await.expect("shape the run"), 1);
    }
    store.roll_run_stats(ROLL).await.expect("roll");
    // Every day whose hours are sealed is summed (all four, unless now is within minutes
    // of midnight).
    let summed = format!(
        "run_rollup_marks WHERE daily_until >= {} AND daily_until % {DAY} = 0 \
         AND daily_until <= sealed_until",
        day0 + 3 * DAY
    );
    assert_eq!(db.count(&summed).await, 1);
    assert!(db.count("run_rollups_daily").await >= 3 * 4);
    assert_eq!(days_unlike_their_hours(&db).await, 0);
    // The days are read, not their hours.
    db.execute("UPDATE run_rollups_daily SET runs = runs + 1000")
        .await
        .expect("skew");
    assert!(stats(&store, 0, i64::MAX).await.0.total > 1000);
    db.execute("UPDATE run_rollups_daily SET runs = runs - 1000")
        .await
        .expect("unskew");
    let windows = [
        (0, i64::MAX),
        (day0, day0 + 3 * DAY),
        (day0 + 5 * HOUR + 123, day0 + 3 * DAY + 7 * HOUR + 5),
        (day0 + DAY - 1, day0 + 2 * DAY + 1),
        (day0 + DAY + 30 * MINUTE, now),
    ];
    agrees(&store, &db, &windows).await;
    for &(start, end) in &windows {
        days_answer_like_hours(&store, &db, start, end).await;
    }

    // A run deleted below the watermark unseals its day: its day's rows and the later
    // ones go until the roller sums them again.
    let (session, create) = sessions[20].clone();
    let day = (create / DAY) * DAY;
    let idle = format!("UPDATE sessions SET active_run = '' WHERE session_id = '{session}'");
    assert_eq!(db.execute(&idle).await.expect("the session is idle"), 1);
    let name = SessionName {
        workspace: "acme".into(),
        project: "web".into(),
        session: session.clone(),
    };
    store
        .delete_session(&mutation("acme", "DeleteSession", &session, "", b""), &name)
        .await
        .expect("delete the session");
    let after = format!("run_rollups_daily WHERE bucket >= {day}");
    assert_eq!(db.count(&after).await, 0);
    assert!(db.count("run_rollups_daily").await > 0, "earlier days stay");
    assert_eq!(
        db.count(&format!("run_rollup_marks WHERE daily_until = {day}"))
            .await,
        1
    );
    agrees(&store, &db, &windows).await;
    store.roll_run_stats(ROLL).await.expect("roll");
    assert_eq!(db.count(&summed).await, 1);
    assert!(db.count(&after).await > 0);
    assert_eq!(days_unlike_their_hours(&db).await, 0);
    agrees(&store, &db, &windows).await;
    assert_eq!(stats(&store, 0, i64::MAX).await.0.total, 47);

    // Hourly rollups without days (as migration 0011 finds them) get their days summed
    // without folding a run again.
    let daily = db.count("run_rollups_daily").await;
    db.execute("DELETE FROM run_rollups_daily")
        .await
        .expect("drop the days");
    db.execute("UPDATE run_rollup_marks SET daily_until = 0")
        .await
        .expect("reset");
    assert_eq!(store.roll_run_stats(ROLL).await.expect("roll"), (0, false));
    assert_eq!(db.count("run_rollups_daily").await, daily);
    assert_eq!(db.count(&summed).await, 1);
    agrees(&store, &db, &windows).await;
});
