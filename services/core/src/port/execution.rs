//! Execution's side of the storage port: sessions and their transcripts, runs and
//! their event logs, and the calls a worker makes under a run's lease.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Mutation, PageRequest};
use crate::{
    Result,
    model::{Instance, Page},
    names::{ProjectName, RunName, SessionName},
    run::{
        Approval, Decision, EventInput, Lease, Message, MessageBody, NewRun, NewSession, PlanStep,
        Run, RunError, RunEvent, RunFilter, Session, StopReason, Usage,
    },
    time::Micros,
};

/// A run leased by [`ExecutionStore::claim_run`], with the instance it runs as (read
/// in the claim's transaction). Dropped before [`Claim::delivered`], it gives the run
/// back: a claim commits before the worker has its task token, and a claim whose
/// answer never reached its worker would otherwise hold the run until its lease lapsed.
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

/// Percentiles of a duration (micros) and how many values they were taken over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: i64,
    pub p50: Micros,
    pub p95: Micros,
    pub p99: Micros,
}

/// The figures of one group of runs: a project's, or one agent's in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStatsGroup {
    /// Empty for the project total.
    pub agent: String,
    pub total: i64,
    /// By stored status name (`SUCCEEDED` …).
    pub by_status: BTreeMap<String, i64>,
    pub finished: i64,
    pub succeeded: i64,
    /// Creation to first start, of runs that started.
    pub queue_wait: Percentiles,
    /// First start to end, of runs that ended.
    pub run_time: Percentiles,
    pub usage: Usage,
}

/// Sessions and their transcripts.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(&self, m: &Mutation, new: NewSession) -> Result<Session>;
    async fn get_session(&self, name: &SessionName) -> Result<Session>;
    /// Sessions of a project, newest first.
    async fn list_sessions(
        &self,
        project: &ProjectName,
        instance: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Session>>;
    /// Deletes an idle session with its transcript, runs and their event logs.
    async fn delete_session(&self, m: &Mutation, name: &SessionName) -> Result<()>;
    /// The transcript, oldest first.
    async fn list_messages(
        &self,
        name: &SessionName,
        show_superseded: bool,
        page: &PageRequest,
    ) -> Result<Page<Message>>;
}

/// Runs and their event logs.
#[async_trait]
pub trait RunStore: Send + Sync {
    async fn create_run(&self, m: &Mutation, new: NewRun) -> Result<Run>;
    async fn get_run(&self, name: &RunName) -> Result<Run>;
    /// Runs of one session (or of the whole project when `session` is `None`), newest
    /// first.
    async fn list_runs(
        &self,
        project: &ProjectName,
        session: Option<&str>,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<Run>>;
    async fn cancel_run(&self, m: &Mutation, name: &RunName, reason: &str) -> Result<Run>;
    async fn decide_approval(
        &self,
        m: &Mutation,
        name: &RunName,
        approval_id: &str,
        decision: Decision,
        comment: &str,
    ) -> Result<Run>;
    /// Events of a run with a sequence above `after`, oldest first, at most `limit`.
    /// With none, NOT_FOUND if the run itself is gone (its project or workspace was
    /// deleted), so that a stream following it ends rather than waiting forever.
    async fn run_events_after(
        &self,
        workspace: &str,
        run: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<RunEvent>>;
}

/// GetRunStats, computed by the database.
#[async_trait]
pub trait RunStatsStore: Send + Sync {
    /// The figures of `project`'s runs created in `[start, end)`: the total, and with
    /// `by_agent` each agent's (ordered by agent id).
    async fn run_stats(
        &self,
        project: &ProjectName,
        start: Micros,
        end: Micros,
        by_agent: bool,
    ) -> Result<(RunStatsGroup, Vec<RunStatsGroup>)>;
}

/// PollTask's claims.
#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Leases the oldest claimable run of `agents` in `workspace`, if the workspace has a
    /// free concurrent-run slot.
    async fn claim_run(
        &self,
        workspace: &str,
        agents: &[String],
        worker: &str,
        lease_duration: Micros,
    ) -> Result<Option<Claim>>;
}

/// The calls a worker makes under a run's lease. Each is fenced by the lease it names:
/// the run must still be leased, to the same attempt and lease epoch, with the lease
/// not expired.
#[async_trait]
pub trait WorkerStore: Send + Sync {
    /// Renews the lease for `wait` (the caller holds its reply that long) plus the
    /// lease's duration.
    async fn heartbeat_task(&self, lease: &Lease, wait: Micros) -> Result<Run>;
    /// Appends a batch; returns the last sequence and whether a cancel was requested.
    async fn append_run_events(
        &self,
        m: &Mutation,
        lease: &Lease,
        inputs: Vec<EventInput>,
    ) -> Result<(i64, bool)>;
    /// Applies the autonomy matrix to a plan: auto-approved (the lease goes on), or the
    /// run waits for a human in REQUIRES_ACTION and the lease ends.
    async fn propose_plan(
        &self,
        m: &Mutation,
        lease: &Lease,
        steps: Vec<PlanStep>,
    ) -> Result<(bool, Approval)>;
    async fn complete_task(
        &self,
        m: &Mutation,
        lease: &Lease,
        output: Vec<MessageBody>,
        usage: Usage,
        stop_reason: StopReason,
    ) -> Result<Run>;
    async fn fail_task(
        &self,
        m: &Mutation,
        lease: &Lease,
        error: RunError,
        retryable: bool,
        next_retry_delay: Option<Micros>,
    ) -> Result<Run>;
}
