//! GetRunStats' figures as the database computes them: counts by status, finished and
//! succeeded runs, usage sums and nearest-rank percentiles, for the project and per
//! agent, identical on both back ends.

use agentry_core::names::ProjectName;
use agentry_core::port::{RunStatsQuery, RunStatsStore};
use agentry_store::Percentiles;

use super::{
    timers::{run_in, tenant},
    *,
};

/// Nearest rank: the value at rank max(1, ceil(q × n)) of the sorted values.
fn nearest_rank(values: &[i64]) -> Percentiles {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| {
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    };
    Percentiles {
        count: sorted.len() as i64,
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
    }
}

conformance!(run_stats_are_aggregated_by_the_database, |store, db| {
    tenant(&store, "acme").await;
    // Runs 1..=20 started after i ms and ran 10·i ms (except 19 and 20, still running);
    // 1..=15 succeeded, 16..=18 failed; 21 and 22 never started. Even runs belong to
    // agent `other`.
    let mut waits = (Vec::new(), Vec::new(), Vec::new());
    let mut runs = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=22i64 {
        let run = run_in(&store, "acme", &format!("s{i}"), 0).await;
        let agent = if i % 2 == 0 && i <= 20 {
            "other"
        } else {
            "echo"
        };
        let (wait, time) = (i * 1000, i * 10_000);
        let status = match i {
            1..=15 => "SUCCEEDED",
            16..=18 => "FAILED",
            19..=20 => "RUNNING",
            _ => "QUEUED",
        };
        let timing = match i {
            1..=18 => format!(
                "start_time = create_time + {wait}, end_time = create_time + {}",
                wait + time
            ),
            19..=20 => format!("start_time = create_time + {wait}"),
            _ => "start_time = NULL".to_owned(),
        };
        let sql = format!(
            "UPDATE runs SET status = '{status}', agent_id = '{agent}', {timing}, \
             input_tokens = {i}, output_tokens = 1, cost_usd = 0.5 WHERE run_id = '{}'",
            run.id
        );
        assert_eq!(db.execute(&sql).await.expect("shape the run"), 1);
        let (all, mine) = if agent == "echo" {
            (&mut waits.0, &mut waits.1)
        } else {
            (&mut waits.0, &mut waits.2)
        };
        if i <= 20 {
            all.push(wait);
            mine.push(wait);
        }
        let (all, mine) = if agent == "echo" {
            (&mut runs.0, &mut runs.1)
        } else {
            (&mut runs.0, &mut runs.2)
        };
        if i <= 18 {
            all.push(time);
            mine.push(time);
        }
    }
    let project = ProjectName {
        workspace: "acme".into(),
        project: "web".into(),
    };
    let (total, agents) = store
        .run_stats(&project, stats_query(0, i64::MAX))
        .await
        .expect("stats");
    assert_eq!(total.agent, None);
    assert_eq!(total.total, 22);
    assert_eq!(
        total.by_status.clone().into_iter().collect::<Vec<_>>(),
        [
            ("FAILED".to_owned(), 3),
            ("QUEUED".into(), 2),
            ("RUNNING".into(), 2),
            ("SUCCEEDED".into(), 15),
        ]
    );
    assert_eq!((total.finished, total.succeeded), (18, 15));
    assert_eq!(
        (total.usage.input_tokens, total.usage.output_tokens),
        ((1..=22).sum::<i64>(), 22)
    );
    assert!((total.usage.cost_usd - 11.0).abs() < 1e-9);
    // Worked by hand: 20 waits of 1..=20 ms, 18 run times of 10..=180 ms.
    assert_eq!(
        total.queue_wait,
        Percentiles {
            count: 20,
            p50: 10_000,
            p95: 19_000,
            p99: 20_000
        }
    );
    assert_eq!(
        total.run_time,
        Percentiles {
            count: 18,
            p50: 90_000,
            p95: 180_000,
            p99: 180_000
        }
    );
    assert_eq!(total.queue_wait, nearest_rank(&waits.0));
    assert_eq!(total.run_time, nearest_rank(&runs.0));

    let names: Vec<&str> = agents
        .iter()
        .map(|a| a.agent.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(names, ["echo", "other"]);
    let (echo, other) = (&agents[0], &agents[1]);
    assert_eq!((echo.total, other.total), (12, 10));
    assert_eq!(echo.queue_wait, nearest_rank(&waits.1));
    assert_eq!(echo.run_time, nearest_rank(&runs.1));
    assert_eq!(other.queue_wait, nearest_rank(&waits.2));
    assert_eq!(other.run_time, nearest_rank(&runs.2));
    assert_eq!(echo.by_status.get("QUEUED"), Some(&2));
    assert_eq!(other.by_status.get("QUEUED"), None);

    // An empty window: zeros, no agents.
    let (empty, none) = store
        .run_stats(&project, stats_query(0, 1))
        .await
        .expect("stats");
    assert_eq!((empty.total, empty.queue_wait), (0, Percentiles::default()));
    assert!(none.is_empty());
});

/// Every agent's figures too, over `[start, end)`.
fn stats_query(start: i64, end: i64) -> RunStatsQuery {
    RunStatsQuery {
        start,
        end,
        by_agent: true,
    }
}
