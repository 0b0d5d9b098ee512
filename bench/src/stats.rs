//! Latency samples → throughput and percentiles, and the one-line report format.

use std::time::Duration;

pub struct Summary {
    pub ops: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
}

pub fn summarize(mut samples: Vec<Duration>, elapsed: Duration) -> Summary {
    samples.sort_unstable();
    let pick = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Summary {
        ops: samples.len(),
        per_second: samples.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

pub fn report(label: &str, s: &Summary) {
    println!(
        "{label:<44} {:>9.0} ops/s   p50 {:>8.3} ms   p99 {:>8.3} ms   ({} ops)",
        s.per_second,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.ops
    );
}

/// The median of `values` (NaN when there are none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub fn ratio(label: &str, value: f64, ceiling: f64, goal: f64) {
    let r = value / ceiling;
    let verdict = if r >= goal { "meets" } else { "below" };
    println!("{label:<44} {r:>9.2} of the ceiling ({verdict} the goal of {goal:.2})");
}
