//! Runs, worker side (WORKER keys). PollTask long-polls on the queues of its agents (a
//! new run wakes one idle poller of its agent) and HeartbeatTask on its run, through the
//! store's change feed; neither reads storage unless woken. Every call after PollTask names its lease by the task token: an HMAC-signed, versioned
//! (workspace, project, session, run, attempt, lease epoch) (see [`super::token`]) that the store checks
//! against the run row. A claim whose answer cannot be built, or whose caller leaves
//! before it is answered, goes back to the queue on the same attempt (see
//! `agentry_core::port::Claim`); PollTask has no request id to re-deliver it by, and a worker
//! that never saw the token could not use it anyway.

use std::time::Duration;

use agentry_core::wake::WakeKey;
use agentry_core::{
    Error, Result,
    absent::non_empty,
    names::{AgentName, RunName, WorkspaceName},
    port::{Claim, ClaimAttempt, ClaimRequest, Subscription},
    run::{EventInput, Lease, PlanStep, RunStatus, TaskCompletion, TaskFailure},
    time::{DurationMicros, UnixMicros, now_micros},
};
use agentry_proto::v1 as pb;

use super::convert::{
    approval_to_proto, duration, error_from_proto, event_input_from_proto, messages_from_proto,
    run_to_proto, stop_from_proto, usage_from_proto,
};
use super::token;
use crate::{
    auth::{Action, Principal},
    call::Call,
    convert::{timestamp, value_to_json},
    notify::{Woken, unless_stopped, wait_for_change},
    registry,
    request::RequestCtx,
};

const SECOND: DurationMicros = 1_000_000;
const MAX_WAIT: DurationMicros = 60 * SECOND;
const DEFAULT_WAIT: DurationMicros = 30 * SECOND;
const DEFAULT_LEASE: DurationMicros = 30 * SECOND;
const MAX_BATCH: usize = 1000;
const MAX_AGENTS: usize = 100;
const MAX_STEPS: usize = 100;

/// How long a lease renewal may still take once the server is stopping: plenty while
/// the database answers, and a bound on the drain while it does not.
const RENEWAL_GRACE: Duration = Duration::from_millis(500);

/// The lease a token names, after checking the caller may work in its workspace.
fn lease(ctx: &RequestCtx, p: &Principal, token: &str) -> Result<Lease> {
    let invalid = || Error::invalid("task_token", "not a task token this service issued");
    if token.is_empty() {
        return Err(Error::invalid("task_token", "required"));
    }
    let lease = token::decode(&ctx.pages, token).ok_or_else(invalid)?;
    p.check(&lease.workspace, Action::Work)?;
    Ok(lease)
}

fn run_name_of(lease: &Lease) -> RunName {
    RunName {
        workspace: lease.workspace.clone(),
        project: lease.project.clone(),
        session: lease.session.clone(),
        run: lease.run.clone(),
    }
}

/// Waits for a change of a key of `changes` or at most `limit`.
async fn wait_for(ctx: &RequestCtx, changes: &Subscription, limit: Duration) -> Woken {
    let mut stopping = ctx.stopping.clone();
    wait_for_change(changes, Some(limit), &mut stopping, std::future::pending()).await
}

fn remaining(deadline: UnixMicros) -> DurationMicros {
    (deadline - now_micros()).max(0)
}

/// The answer to a claim. The agent revision is immutable and usually cached; if it
/// cannot be read, the error drops `claim`, which puts the run back in the queue.
async fn task(ctx: &RequestCtx, claim: Claim) -> Result<pb::Task> {
    let agent = ctx
        .agent_revision(
            &claim.run.workspace,
            &claim.run.agent,
            claim.run.agent_revision,
        )
        .await?;
    let lease = claim.lease();
    // Nothing below awaits: once delivered, the answer goes straight to the caller.
    let (run, instance) = claim.delivered();
    let resume = run
        .approval
        .as_ref()
        .filter(|a| a.decision.is_some() && a.decided_by.as_deref() != Some("auto"))
        .map(|a| pb::ResumeInput {
            approval: Some(approval_to_proto(a)),
        });
    Ok(pb::Task {
        task_token: token::encode(&ctx.pages, &lease),
        attempt: run.attempt,
        lease_expire_time: run.lease_expire_time.and_then(timestamp),
        deadline: run.deadline().and_then(timestamp),
        resume,
        instance: Some(registry::instances::to_proto(instance)),
        agent: Some(registry::agents::to_proto(agent)),
        run: Some(run_to_proto(run)),
    })
}

/// The tools of the agent revision the leased run pins (named by the token; cached).
async fn pinned_tools(ctx: &RequestCtx, lease: &Lease) -> Result<Vec<agentry_core::model::Tool>> {
    let agent = ctx
        .agent_revision(&lease.workspace, &lease.agent, lease.agent_revision)
        .await?;
    Ok(agent.spec.tools)
}

pub async fn poll_task(ctx: &Call<'_>, req: pb::PollTaskRequest) -> Result<pb::PollTaskResponse> {
    let workspace: WorkspaceName = ctx.authorize("parent", &req.parent, Action::Work)?;
    if req.agents.is_empty() || req.agents.len() > MAX_AGENTS {
        return Err(Error::invalid(
            "agents",
            format!("name 1 to {MAX_AGENTS} agents"),
        ));
    }
    let mut agents = Vec::with_capacity(req.agents.len());
    for (i, agent) in req.agents.iter().enumerate() {
        let name = AgentName::parse(&format!("agents[{i}]"), agent)?;
        ctx.caller
            .check_reference(&workspace.workspace, &name.workspace)?;
        if name.workspace != workspace.workspace {
            return Err(Error::invalid(
                format!("agents[{i}]"),
                "an agent of the parent workspace",
            ));
        }
        agents.push(name.agent);
    }
    let identity = non_empty(crate::convert::text("identity", req.identity.clone())?);
    let wait = match &req.wait {
        Some(d) => duration("wait", d, 0, MAX_WAIT)?,
        None => DEFAULT_WAIT,
    };
    let lease_duration = match &req.lease_duration {
        Some(d) => duration("lease_duration", d, SECOND, 600 * SECOND)?,
        None => DEFAULT_LEASE,
    };
    let deadline = now_micros() + wait;
    // Subscribed before the first look, so a run queued in between still wakes us. A
    // new run wakes one idle poller of its agent, not all of them.
    let queues = agents
        .iter()
        .map(|agent| WakeKey::queue(&workspace.workspace, agent))
        .collect();
    let changes = ctx.feed.subscribe(queues);
    let mut attempt = ClaimAttempt::First;
    loop {
        // A claim dropped by shutdown (or by the client leaving) goes back to the queue.
        let claimed = ctx.store.claim_run(ClaimRequest {
            workspace: &workspace.workspace,
            agents: &agents,
            worker: identity.as_deref(),
            lease_duration,
            attempt,
        });
        let Some(claimed) = unless_stopped(&ctx.stopping, Duration::ZERO, claimed).await else {
            return Ok(pb::PollTaskResponse::default());
        };
        if let Some(claim) = claimed? {
            return Ok(pb::PollTaskResponse {
                task: Some(task(ctx, claim).await?),
            });
        }
        let left = remaining(deadline);
        if left == 0 {
            return Ok(pb::PollTaskResponse::default());
        }
        // Woken or out of time, it looks once more; the look then ends the call.
        let limit = Duration::from_micros(left as u64);
        match wait_for(ctx, &changes, limit).await {
            Woken::Stopping => return Ok(pb::PollTaskResponse::default()),
            Woken::Look => attempt = ClaimAttempt::Woken,
            _ => attempt = ClaimAttempt::TimedOut,
        }
    }
}

pub async fn heartbeat_task(
    ctx: &Call<'_>,
    req: pb::HeartbeatTaskRequest,
) -> Result<pb::HeartbeatTaskResponse> {
    let lease = lease(ctx, &ctx.caller, &req.task_token)?;
    let wait = match &req.wait {
        Some(d) => duration("wait", d, 0, MAX_WAIT)?,
        None => 0,
    };
    let changes = ctx.feed.subscribe(vec![WakeKey::run(
        &lease.workspace,
        &lease.project,
        &lease.run,
    )]);
    let renewed = ctx.store.heartbeat_task(&lease, wait);
    let Some(run) = unless_stopped(&ctx.stopping, RENEWAL_GRACE, renewed).await else {
        return Err(Error::Unavailable {
            message: "the server is shutting down; send the heartbeat again".into(),
        });
    };
    let run = run?;
    let lease_expire_time = run.lease_expire_time.and_then(timestamp);
    let deadline = now_micros() + wait;
    let name = run_name_of(&lease);
    let mut cancel = run.cancel_requested;
    while !cancel {
        let left = remaining(deadline);
        if left == 0 {
            break;
        }
        let limit = Duration::from_micros(left as u64);
        if wait_for(ctx, &changes, limit).await != Woken::Look {
            break;
        }
        // The lease is renewed already: if the run cannot be read again (the database is
        // unavailable, the server stops), answer with that now rather than hold the call.
        let read = ctx.store.get_run(&name);
        let Some(Ok(run)) = unless_stopped(&ctx.stopping, Duration::ZERO, read).await else {
            break;
        };
        // A run that stopped being this lease's (timed out, lease lost) is over for the
        // worker too: its next call is refused.
        let ours = run.attempt == lease.attempt
            && run.lease_epoch == lease.epoch
            && run.status.is_leased();
        cancel = run.cancel_requested || !ours;
    }
    Ok(pb::HeartbeatTaskResponse {
        cancel_requested: cancel,
        lease_expire_time,
    })
}

/// A worker's events: decoded, and the tools of the calls they start checked against the
/// revision the leased run pins.
async fn events_from_proto(
    ctx: &RequestCtx,
    lease: &Lease,
    events: Vec<pb::RunEventInput>,
) -> Result<Vec<EventInput>> {
    let inputs = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| event_input_from_proto(i, e))
        .collect::<Result<Vec<_>>>()?;
    if !inputs
        .iter()
        .any(|e| matches!(e, EventInput::ToolStarted(_)))
    {
        return Ok(inputs);
    }
    // Tool calls name tools of the pinned revision (immutable: read outside the write).
    let tools = pinned_tools(ctx, lease).await?;
    for (i, input) in inputs.iter().enumerate() {
        if let EventInput::ToolStarted(call) = input
            && !tools.iter().any(|t| t.name == call.tool)
        {
            return Err(Error::invalid(
                format!("events[{i}].tool_call_started.tool_call.tool"),
                format!(
                    "{} is not a tool of the agent revision this run pins",
                    agentry_core::error::quote(&call.tool)
                ),
            ));
        }
    }
    Ok(inputs)
}

pub async fn append_run_events(
    ctx: &Call<'_>,
    req: pb::AppendRunEventsRequest,
) -> Result<pb::AppendRunEventsResponse> {
    let lease = lease(ctx, &ctx.caller, &req.task_token)?;
    if req.events.is_empty() || req.events.len() > MAX_BATCH {
        return Err(Error::invalid(
            "events",
            format!("1 to {MAX_BATCH} events per call"),
        ));
    }
    let mut m = ctx.mutation_of(&run_name_of(&lease), &req)?;
    m.audit = false;
    let inputs = events_from_proto(ctx, &lease, req.events).await?;
    let (last_sequence, cancel_requested) = ctx.store.append_run_events(&m, &lease, inputs).await?;
    Ok(pb::AppendRunEventsResponse {
        last_sequence,
        cancel_requested,
    })
}

pub async fn propose_plan(
    ctx: &Call<'_>,
    req: pb::ProposePlanRequest,
) -> Result<pb::ProposePlanResponse> {
    let lease = lease(ctx, &ctx.caller, &req.task_token)?;
    if req.steps.is_empty() || req.steps.len() > MAX_STEPS {
        return Err(Error::invalid("steps", format!("1 to {MAX_STEPS} steps")));
    }
    let m = ctx.mutation_of(&run_name_of(&lease), &req)?;
    // Risks come from the revision the run pins (immutable, so read outside the write).
    let tools = pinned_tools(ctx, &lease).await?;
    let mut steps = Vec::with_capacity(req.steps.len());
    for (i, step) in req.steps.into_iter().enumerate() {
        let tool = tools.iter().find(|t| t.name == step.tool).ok_or_else(|| {
            Error::invalid(
                format!("steps[{i}].tool"),
                format!(
                    "{} is not a tool of the agent revision this run pins",
                    agentry_core::error::quote(&step.tool)
                ),
            )
        })?;
        steps.push(PlanStep {
            risk: tool.risk,
            tool: step.tool,
            arguments: step
                .arguments
                .map(|v| value_to_json(&format!("steps[{i}].arguments"), v, 0))
                .transpose()?,
            description: crate::convert::text(
                &format!("steps[{i}].description"),
                step.description,
            )?,
        });
    }
    let (approved, approval) = ctx.store.propose_plan(&m, &lease, steps).await?;
    Ok(pb::ProposePlanResponse {
        approved,
        approval: Some(approval_to_proto(&approval)),
    })
}

pub async fn complete_task(ctx: &Call<'_>, req: pb::CompleteTaskRequest) -> Result<pb::Run> {
    let lease = lease(ctx, &ctx.caller, &req.task_token)?;
    if req.output.len() > MAX_BATCH {
        return Err(Error::invalid(
            "output",
            format!("at most {MAX_BATCH} messages"),
        ));
    }
    if req.events.len() > MAX_BATCH {
        return Err(Error::invalid(
            "events",
            format!("at most {MAX_BATCH} events"),
        ));
    }
    let m = ctx.mutation_of(&run_name_of(&lease), &req)?;
    let events = events_from_proto(ctx, &lease, req.events).await?;
    let output = messages_from_proto("output", req.output)?;
    let usage = usage_from_proto("usage", req.usage)?;
    let stop = match stop_from_proto("stop_reason", req.stop_reason)? {
        agentry_core::run::StopReason::Unspecified => agentry_core::run::StopReason::EndTurn,
        other => other,
    };
    let done = TaskCompletion {
        events,
        output,
        usage,
        stop_reason: stop,
    };
    let run = ctx.store.complete_task(&m, &lease, done).await?;
    Ok(run_to_proto(run))
}

pub async fn fail_task(ctx: &Call<'_>, req: pb::FailTaskRequest) -> Result<pb::Run> {
    let lease = lease(ctx, &ctx.caller, &req.task_token)?;
    let m = ctx.mutation_of(&run_name_of(&lease), &req)?;
    let error = error_from_proto("error", req.error)?;
    let delay = req
        .next_retry_delay
        .as_ref()
        .map(|d| duration("next_retry_delay", d, 0, 7 * 86_400 * SECOND))
        .transpose()?;
    let failure = TaskFailure {
        error,
        retryable: req.retryable,
        next_retry_delay: delay,
    };
    let run = ctx.store.fail_task(&m, &lease, failure).await?;
    debug_assert!(run.status != RunStatus::Running);
    Ok(run_to_proto(run))
}
