//! PollTask's claim: a run leased to a worker, given back unless its answer reached it.

use crate::{
    model::Instance,
    run::{Lease, Run},
};

/// A run leased by [`ClaimStore::claim_run`](super::ClaimStore::claim_run), with the
/// instance it runs as (read in the claim's transaction). Dropped before
/// [`Claim::delivered`], it gives the run back: a claim commits before the worker has its
/// task token, and a claim whose answer never reached its worker would otherwise hold the
/// run until its lease lapsed.
pub struct Claim {
    pub run: Run,
    pub instance: Instance,
    release: Release,
}

/// How storage gives back a claim that was not delivered.
pub trait ClaimRelease: Send + Sync {
    /// Puts the run back in the queue, on the same attempt and at its old place in
    /// line; called at most once, from `Drop`, without waiting (it may spawn a task).
    fn give_back(self: Box<Self>);
}

/// Armed: dropping it gives the claim back. Storage arms it before it commits the
/// claim, so that even a caller dropped while the commit is in flight gives it back.
pub struct Release(Option<Box<dyn ClaimRelease>>);

impl Release {
    pub fn armed(release: impl ClaimRelease + 'static) -> Self {
        Self(Some(Box::new(release)))
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release.give_back();
        }
    }
}

impl Claim {
    /// A claim that `release` gives back unless it is delivered.
    pub fn new(run: Run, instance: Instance, release: Release) -> Self {
        Self {
            run,
            instance,
            release,
        }
    }

    /// The lease the claim holds, which the worker's task token carries.
    pub fn lease(&self) -> Lease {
        self.run.lease()
    }

    /// The answer is on its way to the worker: the lease stays.
    pub fn delivered(mut self) -> (Run, Instance) {
        self.release.0 = None;
        (self.run, self.instance)
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("run", &self.run.id)
            .field("attempt", &self.run.attempt)
            .field("armed", &self.release.0.is_some())
            .finish()
    }
}
