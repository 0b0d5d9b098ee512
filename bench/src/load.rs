//! Closed-loop load: `concurrency` tasks, each issuing its next call when the previous one
//! returns, for a fixed time; and two such loads measured in alternating slices.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    cpu,
    stats::{Summary, summarize},
};

pub async fn drive<F, Fut>(concurrency: usize, duration: Duration, op: F) -> anyhow::Result<Summary>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let (samples, elapsed) = run(concurrency, duration, Arc::new(op)).await?;
    Ok(summarize(samples, elapsed))
}

/// Two loads measured in alternating slices of `slice` until each has run for
/// `duration`, with the CPU time each used (see [`cpu`]). This machine's speed swings
/// from second to second; slices of both loads see the same swings, so the ratio of
/// their rates holds still where two measurements one after the other would not.
///
/// The slices run in the order A B, B A, A B, … so that neither load always follows the
/// other (a load that starts right after the other finds the machine as that one left
/// it), and each slice begins with an unmeasured warm-up of a tenth of its length, in
/// which the load's server wakes its idle threads and connections.
///
/// With them, the rate of B over the rate of A in each pair of slices (one per pair, in
/// the order run): their median is a ratio that one slow slice, which moves the whole
/// run's mean, does not move.
pub async fn alternate<A, FutA, B, FutB>(
    concurrency: usize,
    duration: Duration,
    slice: Duration,
    meter: &cpu::Meter,
    a: A,
    b: B,
) -> anyhow::Result<([(Summary, cpu::Times); 2], Vec<f64>)>
where
    A: Fn(usize, u64) -> FutA + Send + Sync + 'static,
    FutA: Future<Output = anyhow::Result<()>> + Send,
    B: Fn(usize, u64) -> FutB + Send + Sync + 'static,
    FutB: Future<Output = anyhow::Result<()>> + Send,
{
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut runs: [(Vec<Duration>, Duration, cpu::Times); 2] = Default::default();
    let slices = duration.as_nanos().div_ceil(slice.as_nanos().max(1)).max(1) as u32;
    let length = duration / slices;
    let mut ratios = Vec::with_capacity(slices as usize);
    for pair in 0..slices {
        let mut rates = [0.0; 2];
        let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let measured = |d| {
                let (a, b) = (a.clone(), b.clone());
                async move {
                    if which == 0 {
                        run(concurrency, d, a).await
                    } else {
                        run(concurrency, d, b).await
                    }
                }
            };
            measured(length / 10).await?;
            let before = meter.now();
            let (samples, elapsed) = measured(length).await?;
            rates[which] = samples.len() as f64 / elapsed.as_secs_f64().max(1e-9);
            let into = &mut runs[which];
            into.2 += meter.now().since(&before);
            into.0.extend(samples);
            into.1 += elapsed;
        }
        ratios.push(rates[1] / rates[0].max(f64::MIN_POSITIVE));
    }
    let runs = runs.map(|(samples, elapsed, times)| (summarize(samples, elapsed), times));
    Ok((runs, ratios))
}

async fn run<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: Arc<F>,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(worker, i).await?;
                    samples.push(t.elapsed());
                    i += 1;
                }
                anyhow::Ok(samples)
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    Ok((samples, started.elapsed()))
}
