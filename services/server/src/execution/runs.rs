//! Runs, client side. Everyone reads; ADMIN and DEVELOPER create, cancel and decide.

use agentry_core::run::{ApprovalDecision, NewRun, RunFilter, RunSpec};
use agentry_core::{
    Error, Result,
    absent::{non_empty, or_empty},
    names::{AgentName, InstanceName, ProjectName, RunName, SessionName},
    port::{Percentiles, RunStatsGroup, RunStatsQuery},
    time::{DurationMicros, now_micros},
};
use agentry_proto::v1 as pb;

use super::convert::{
    autonomy_from_proto, bindings_from_proto, decision_from_proto, duration, messages_from_proto,
    micros_to_duration, retry_policy_from_proto, run_to_proto, status_from_name,
    strategy_from_proto,
};
use crate::{
    auth::{Action, Principal},
    call::Call,
    convert::{self, filter_error, micros, timestamp},
    paging::TimeBounds,
};

const DAY: DurationMicros = 86_400_000_000;
const MAX_INPUT_MESSAGES: usize = 1000;

pub async fn create_run(ctx: &Call<'_>, req: pb::CreateRunRequest) -> Result<pb::Run> {
    let session: SessionName = ctx.authorize("parent", &req.parent, Action::Execute)?;
    let m = ctx.mutation_of(&session, &req)?;
    let run = req.run.unwrap_or_default();
    if run.input.len() > MAX_INPUT_MESSAGES {
        return Err(Error::invalid(
            "run.input",
            format!("at most {MAX_INPUT_MESSAGES} messages"),
        ));
    }
    let input = messages_from_proto("run.input", run.input)?;
    let spec = RunSpec {
        autonomy: autonomy_from_proto(run.autonomy_level)?,
        timeout: match &run.timeout {
            Some(d) => duration("run.timeout", d, 1000, 365 * DAY)?,
            None => 0,
        },
        retry_policy: retry_policy_from_proto(run.retry_policy)?,
        strategy: strategy_from_proto(run.multitask_strategy)?,
        contexts: bindings_from_proto(&ctx.caller, &session, run.contexts)?,
        labels: convert::labels("run.labels", run.labels)?,
        approval_timeout: match &req.approval_timeout {
            Some(d) => duration("approval_timeout", d, 1000, 365 * DAY)?,
            None => DAY,
        },
        input,
    };
    let new = NewRun { session, spec };
    Ok(run_to_proto(ctx.store.create_run(&m, new).await?))
}

/// `status = RUNNING AND agent = "…" AND instance = "…" AND create_time > "RFC 3339"`.
fn run_filter(p: &Principal, project: &ProjectName, text: &str) -> Result<RunFilter> {
    const SUPPORTED: &str = "status = RUNNING, agent = \"workspaces/…/agents/…\", instance = \"…/instances/…\", create_time > \"RFC 3339\", create_time < \"…\"";
    let bad = |why: &str| filter_error(why, SUPPORTED);
    let mut filter = RunFilter::default();
    let times = TimeBounds::filter(text, SUPPORTED, |key, operator, value| {
        match (key, operator) {
            ("status", "=") => {
                filter.status = Some(status_from_name(value).ok_or_else(|| bad("unknown status"))?)
            }
            ("agent", "=") => {
                let agent = AgentName::parse("filter", value)?;
                p.check_reference(&project.workspace, &agent.workspace)?;
                filter.agent = Some(agent.agent);
            }
            ("instance", "=") => {
                let instance = InstanceName::parse("filter", value)?;
                p.check_reference(&project.workspace, &instance.workspace)?;
                if instance.project() != *project {
                    return Err(bad("an instance of this project"));
                }
                filter.instance = Some(instance.instance);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    filter.created = times.into();
    Ok(filter)
}

pub async fn list_runs(ctx: &Call<'_>, req: pb::ListRunsRequest) -> Result<pb::ListRunsResponse> {
    let (project, session) = match req.parent.strip_suffix("/sessions/-") {
        Some(project) => (ProjectName::parse("parent", project)?, None),
        None => {
            let session = SessionName::parse("parent", &req.parent)?;
            (session.project(), Some(session.session))
        }
    };
    ctx.caller.check(&project.workspace, Action::Read)?;
    let mut filter = run_filter(&ctx.caller, &project, &req.filter)?;
    if let Some(session) = &session {
        // A missing session is NOT_FOUND, not an empty list.
        ctx.store
            .get_session(&SessionName {
                workspace: project.workspace.clone(),
                project: project.project.clone(),
                session: session.clone(),
            })
            .await?;
    }
    filter.session = session;
    let scope = format!("ListRuns {} {}", req.parent, req.filter);
    let page = ctx.page_of(&scope, &req)?;
    let listed = ctx.store.list_runs(&project, &filter, &page).await?;
    Ok(ctx.respond(&scope, listed, run_to_proto))
}

pub async fn cancel_run(ctx: &Call<'_>, req: pb::CancelRunRequest) -> Result<pb::Run> {
    let name: RunName = ctx.authorize("name", &req.name, Action::Execute)?;
    let reason = convert::text("reason", req.reason.clone())?;
    let m = ctx.mutation_of(&name, &req)?;
    Ok(run_to_proto(
        ctx.store.cancel_run(&m, &name, &reason).await?,
    ))
}

pub async fn decide_approval(ctx: &Call<'_>, req: pb::DecideApprovalRequest) -> Result<pb::Run> {
    let name: RunName = ctx.authorize("name", &req.name, Action::Execute)?;
    if req.approval_id.is_empty() {
        return Err(Error::invalid("approval_id", "required"));
    }
    let verdict = ApprovalDecision {
        approval_id: req.approval_id.clone(),
        decision: decision_from_proto(req.decision)?,
        comment: non_empty(convert::text("comment", req.comment.clone())?),
    };
    let m = ctx.mutation_of(&name, &req)?;
    Ok(run_to_proto(
        ctx.store.decide_approval(&m, &name, &verdict).await?,
    ))
}

fn durations(figures: &Percentiles) -> pb::DurationStats {
    pb::DurationStats {
        p50: Some(micros_to_duration(figures.p50)),
        p95: Some(micros_to_duration(figures.p95)),
        p99: Some(micros_to_duration(figures.p99)),
        count: figures.count,
    }
}

fn stats_to_proto(agent: String, figures: RunStatsGroup) -> pb::RunStats {
    pb::RunStats {
        agent,
        total: figures.total,
        count_by_status: figures
            .by_status
            .into_iter()
            .map(|(status, n)| (format!("RUN_STATUS_{status}"), n))
            .collect(),
        success_rate: if figures.finished == 0 {
            0.0
        } else {
            figures.succeeded as f64 / figures.finished as f64
        },
        queue_wait: Some(durations(&figures.queue_wait)),
        run_time: Some(durations(&figures.run_time)),
        usage: Some(pb::Usage {
            input_tokens: figures.usage.input_tokens,
            output_tokens: figures.usage.output_tokens,
            cost_usd: figures.usage.cost_usd,
        }),
    }
}

pub async fn get_run_stats(
    ctx: &Call<'_>,
    req: pb::GetRunStatsRequest,
) -> Result<pb::GetRunStatsResponse> {
    let project: ProjectName = ctx.authorize("parent", &req.parent, Action::Read)?;
    let end = match &req.end_time {
        Some(t) => micros("end_time", t)?,
        None => now_micros() + 1,
    };
    let start = match &req.start_time {
        Some(t) => micros("start_time", t)?,
        None => end - DAY,
    };
    if start >= end {
        return Err(Error::invalid("start_time", "must be before end_time"));
    }
    if end - start > 366 * DAY {
        return Err(Error::invalid(
            "start_time",
            "the window is at most 366 days",
        ));
    }
    let (total, agents) = ctx
        .store
        .run_stats(
            &project,
            RunStatsQuery {
                start,
                end,
                by_agent: req.group_by_agent,
            },
        )
        .await?;
    let total = stats_to_proto(String::new(), total);
    let by_agent = agents
        .into_iter()
        .map(|figures| {
            let agent = format!(
                "workspaces/{}/agents/{}",
                project.workspace,
                or_empty(&figures.agent)
            );
            stats_to_proto(agent, figures)
        })
        .collect();
    Ok(pb::GetRunStatsResponse {
        total: Some(total),
        by_agent,
        start_time: timestamp(start),
        end_time: timestamp(end),
    })
}
