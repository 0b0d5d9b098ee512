//! The reaper's timers: what a due timer does to its run, decided again under the lock
//! (the run may have moved on since the reaper read it).

use super::{Ending, RunChange, RunStatus, StopReason, worker_lost};
use crate::Result;

/// The timers a run may fall due on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Timer {
    /// The worker's lease lapsed without a heartbeat.
    Lease,
    /// The run's timeout passed.
    Deadline,
    /// A plan waited past its approval timeout.
    Approval,
}

impl Timer {
    pub const ALL: [Timer; 3] = [Timer::Lease, Timer::Deadline, Timer::Approval];
}

/// What a due timer did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fired {
    /// Lapsed lease: another attempt (WORKER_LOST).
    LeaseRequeued,
    /// Lapsed lease with the attempts used up: FAILED (WORKER_LOST).
    LeaseFailed,
    /// Lapsed lease of a CANCELLING run: CANCELLED.
    LeaseCancelled,
    /// TIMED_OUT.
    TimedOut,
    /// The plan was rejected by `expired`; the run is back in the queue.
    ApprovalExpired,
    /// Not due (any more).
    Nothing,
}

impl RunChange {
    /// Fires `timer` at the change's time: what happens to the run, and the ending to
    /// apply (with its open calls closed) when its attempt ends.
    pub fn fire(&mut self, timer: Timer) -> Result<(Fired, Option<Ending>)> {
        let now = self.now;
        let run = &self.run;
        match timer {
            Timer::Lease => {
                if !run.status.is_leased() || run.lease_expire_time.is_none_or(|t| t >= now) {
                    return Ok((Fired::Nothing, None));
                }
                if run.status == RunStatus::Cancelling {
                    let message = "the lease lapsed while cancelling";
                    let ending =
                        Ending::finish(RunStatus::Cancelled, StopReason::Cancelled, message);
                    return Ok((Fired::LeaseCancelled, Some(ending)));
                }
                let lost = worker_lost();
                let policy = &run.spec.retry_policy;
                let fired = if policy.retries(run.attempt, &lost.error_type) {
                    let ending = Ending::Requeue {
                        reason: StopReason::WorkerLost,
                        message: lost.message.clone(),
                        delay: policy.backoff(run.attempt),
                    };
                    (Fired::LeaseRequeued, Some(ending))
                } else {
                    let (to, reason) = (RunStatus::Failed, StopReason::WorkerLost);
                    (
                        Fired::LeaseFailed,
                        Some(Ending::finish(to, reason, &lost.message)),
                    )
                };
                self.run.error = Some(lost);
                Ok(fired)
            }
            Timer::Deadline => {
                if run.status.is_terminal() || run.deadline().is_none_or(|d| d >= now) {
                    return Ok((Fired::Nothing, None));
                }
                let message = "the run timed out";
                let ending = Ending::finish(RunStatus::TimedOut, StopReason::Timeout, message);
                Ok((Fired::TimedOut, Some(ending)))
            }
            Timer::Approval => {
                if !self.approval_expired() {
                    return Ok((Fired::Nothing, None));
                }
                self.expire_approval()?;
                Ok((Fired::ApprovalExpired, None))
            }
        }
    }
}
