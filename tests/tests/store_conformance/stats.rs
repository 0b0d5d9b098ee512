//! GetRunStats' figures as the database computes them: counts by status, finished and
//! succeeded runs, usage sums and nearest-rank percentiles, for the project and per
//! agent, identical on both back ends.

use agentry_core::names::ProjectName;
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
        .run_stats(&project, 0, i64::MAX, true)
        .await
        .expect("stats");
    assert_eq!(total.agent, "");
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

    let names: Vec<&str> = agents.iter().map(|a| a.agent.as_str()).collect();
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
    let (empty, none) = store.run_stats(&project, 0, 1, true).await.expect("stats");
    assert_eq!((empty.total, empty.queue_wait), (0, Percentiles::default()));
    assert!(none.is_empty());
});

/// A small deterministic generator (xorshift64*), so that a failure reproduces.
struct Random(u64);

impl Random {
    fn below(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 1) as i64 % n
    }
}

/// One run as the comparison shaped it.
#[derive(Clone)]
struct Shaped {
    agent: &'static str,
    status: &'static str,
    create: i64,
    wait: Option<i64>,
    took: Option<i64>,
    input: i64,
    cost: f64,
}

const HOUR: i64 = 3_600_000_000;

/// A random state for a run: created within four days of `base`; a duration is often
/// one of a few repeated values or within one bucket, otherwise any number of micros.
fn shape(random: &mut Random, base: i64) -> Shaped {
    let duration = |random: &mut Random, scale: i64| {
        match random.below(4) {
            0 => [1_000, 250_000, 7_000_000][random.below(3) as usize],
            // One bucket (two significant digits), many values.
            1 => 1_000_000 + random.below(100_000),
            _ => random.below(scale),
        }
    };
    let status =
        ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"][random.below(5) as usize];
    let wait = (status != "QUEUED").then(|| duration(random, 5_000_000));
    let took = matches!(status, "SUCCEEDED" | "FAILED").then(|| duration(random, 90_000_000));
    Shaped {
        agent: ["echo", "other", "third"][random.below(3) as usize],
        status,
        create: base + random.below(96 * HOUR),
        wait,
        took,
        input: random.below(1000),
        cost: random.below(8) as f64 * 0.25,
    }
}

/// The figures of `runs`, computed directly.
fn direct(runs: &[&Shaped], agent: &str) -> agentry_store::RunStatsGroup {
    let mut figures = agentry_store::RunStatsGroup {
        agent: agent.to_owned(),
        total: runs.len() as i64,
        ..Default::default()
    };
    for run in runs {
        *figures.by_status.entry(run.status.to_owned()).or_insert(0) += 1;
        let status = agentry_core::run::RunStatus::parse(run.status).expect("a status");
        figures.finished += i64::from(status.is_terminal());
        figures.succeeded += i64::from(run.status == "SUCCEEDED");
        figures.usage.input_tokens += run.input;
        figures.usage.output_tokens += 1;
        figures.usage.cost_usd += run.cost;
    }
    let waits: Vec<i64> = runs.iter().filter_map(|r| r.wait).collect();
    let took: Vec<i64> = runs.iter().filter_map(|r| r.took).collect();
    (figures.queue_wait, figures.run_time) = (nearest_rank(&waits), nearest_rank(&took));
    figures
}

conformance!(
    run_stats_rollup_matches_a_direct_computation,
    |store, db| {
        tenant(&store, "acme").await;
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let base = 1_700_000_000_000_000 / HOUR * HOUR;
        let mut runs = Vec::new();
        for i in 0..80 {
            let run = run_in(&store, "acme", &format!("s{i}"), 0).await;
            runs.push((run.id, shape(&mut random, base)));
        }
        // Every run shaped, then a third reshaped: the rollup takes the old state away.
        for round in 0..2 {
            for (id, shaped) in runs.iter_mut() {
                if round == 1 && random.below(3) != 0 {
                    continue;
                }
                *shaped = shape(&mut random, base);
                let (wait, took) = (shaped.wait, shaped.took);
                // (The right-hand sides of a SET see the old row: times are literal.)
                let create = shaped.create;
                let start = wait.map_or("NULL".to_owned(), |w| format!("{}", create + w));
                let end = took.map_or("NULL".to_owned(), |t| {
                    format!("{}", create + wait.expect("a started run") + t)
                });
                let sql = format!(
                    "UPDATE runs SET status = '{}', agent_id = '{}', create_time = {}, \
                 start_time = {start}, end_time = {end}, input_tokens = {}, output_tokens = 1, \
                 cost_usd = {} WHERE run_id = '{id}'",
                    shaped.status, shaped.agent, shaped.create, shaped.input, shaped.cost
                );
                assert_eq!(db.execute(&sql).await.expect("shape the run"), 1);
            }
        }
        let project = ProjectName {
            workspace: "acme".into(),
            project: "web".into(),
        };
        let mut windows = vec![
            (0, i64::MAX),
            (base, base + 96 * HOUR),
            (base + 1, base + 2),
        ];
        for _ in 0..12 {
            let from = base - HOUR + random.below(98 * HOUR);
            windows.push((
                from,
                from + random.below([HOUR / 2, 30 * HOUR, 80 * HOUR][windows.len() % 3]),
            ));
        }
        for (start, end) in windows {
            let (total, agents) = store
                .run_stats(&project, start, end, true)
                .await
                .expect("stats");
            let inside: Vec<&Shaped> = runs
                .iter()
                .map(|(_, s)| s)
                .filter(|s| s.create >= start && s.create < end)
                .collect();
            let expected = direct(&inside, "");
            assert!((total.usage.cost_usd - expected.usage.cost_usd).abs() < 1e-9);
            let exact = |mut g: agentry_store::RunStatsGroup| {
                g.usage.cost_usd = 0.0;
                g
            };
            assert_eq!(exact(total), exact(expected), "window {start}..{end}");
            let mut names: Vec<&str> = inside.iter().map(|s| s.agent).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(agents.len(), names.len(), "window {start}..{end}");
            for (figures, name) in agents.into_iter().zip(names) {
                let mine: Vec<&Shaped> =
                    inside.iter().copied().filter(|s| s.agent == name).collect();
                let expected = direct(&mine, name);
                assert!((figures.usage.cost_usd - expected.usage.cost_usd).abs() < 1e-9);
                assert_eq!(
                    exact(figures),
                    exact(expected),
                    "window {start}..{end}, {name}"
                );
            }
        }
    }
);
