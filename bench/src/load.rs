//! A closed-loop load generator: `concurrency` tasks, each issuing its next call when the
//! previous one returns, for a fixed time.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::stats::{Summary, summarize};

pub async fn drive<F, Fut>(concurrency: usize, duration: Duration, op: F) -> anyhow::Result<Summary>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
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
    Ok(summarize(samples, started.elapsed()))
}
