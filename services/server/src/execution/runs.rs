//! Runs, client side. Everyone reads; ADMIN and DEVELOPER create, cancel and decide.

use std::collections::BTreeMap;

use agentry_core::{
    Error, Result,
    names::{AgentName, InstanceName, ProjectName, RunName, SessionName},
    run::RunStatus,
    time::{Micros, now_micros},
};
use agentry_proto::v1 as pb;
use agentry_store::{NewRun, RunFilter, StatRow};

use super::convert::{
    autonomy_from_proto, bindings_from_proto, decision_from_proto, duration, message_from_proto,
    micros_to_duration, retry_policy_from_proto, run_to_proto, status_from_name,
    strategy_from_proto,
};
use crate::{
    auth::{Action, Principal},
    context::Ctx,
    convert::{self, filter_error, filter_terms, micros, rfc3339_micros, timestamp},
};

const DAY: Micros = 86_400_000_000;
const MAX_INPUT_MESSAGES: usize = 1000;

pub async fn create_run(ctx: &Ctx, p: &Principal, req: pb::CreateRunRequest) -> Result<pb::Run> {
    let session = SessionName::parse("parent", &req.parent)?;
    p.check(&session.workspace, Action::Execute)?;
    let m = ctx.mutation(
        p,
        "CreateRun",
        &session.workspace,
        session.to_string(),
        &req.request_id,
        &req,
    )?;
    let run = req.run.unwrap_or_default();
    if run.input.len() > MAX_INPUT_MESSAGES {
        return Err(Error::invalid(
            "run.input",
            format!("at most {MAX_INPUT_MESSAGES} messages"),
        ));
    }
    let input = run
        .input
        .into_iter()
        .enumerate()
        .map(|(i, m)| message_from_proto(&format!("run.input[{i}]"), m))
        .collect::<Result<Vec<_>>>()?;
    let new = NewRun {
        autonomy: autonomy_from_proto(run.autonomy_level)?,
        timeout: match &run.timeout {
            Some(d) => duration("run.timeout", d, 1000, 365 * DAY)?,
            None => 0,
        },
        retry_policy: retry_policy_from_proto(run.retry_policy)?,
        strategy: strategy_from_proto(run.multitask_strategy)?,
        contexts: bindings_from_proto(p, &session, run.contexts)?,
        labels: convert::labels("run.labels", run.labels)?,
        approval_timeout: match &req.approval_timeout {
            Some(d) => duration("approval_timeout", d, 1000, 365 * DAY)?,
            None => DAY,
        },
        input,
        session,
    };
    Ok(run_to_proto(ctx.store.create_run(&m, new).await?))
}

pub async fn get_run(ctx: &Ctx, p: &Principal, req: pb::GetRunRequest) -> Result<pb::Run> {
    let name = RunName::parse("name", &req.name)?;
    p.check(&name.workspace, Action::Read)?;
    Ok(run_to_proto(ctx.store.get_run(&name).await?))
}

/// `status = RUNNING AND agent = "…" AND instance = "…" AND create_time > "RFC 3339"`.
fn run_filter(p: &Principal, project: &ProjectName, text: &str) -> Result<RunFilter> {
    const SUPPORTED: &str = "status = RUNNING, agent = \"workspaces/…/agents/…\", instance = \"…/instances/…\", create_time > \"RFC 3339\", create_time < \"…\"";
    let bad = |why: &str| filter_error(why, SUPPORTED);
    let mut filter = RunFilter::default();
    for (key, operator, value) in filter_terms(text, SUPPORTED)? {
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
            ("create_time", ">") => {
                filter.after_time =
                    Some(rfc3339_micros(value).ok_or_else(|| bad("not an RFC 3339 time"))?)
            }
            ("create_time", "<") => {
                filter.before_time =
                    Some(rfc3339_micros(value).ok_or_else(|| bad("not an RFC 3339 time"))?)
            }
            _ => return Err(bad("unsupported term")),
        }
    }
    Ok(filter)
}

pub async fn list_runs(
    ctx: &Ctx,
    p: &Principal,
    req: pb::ListRunsRequest,
) -> Result<pb::ListRunsResponse> {
    let (project, session) = match req.parent.strip_suffix("/sessions/-") {
        Some(project) => (ProjectName::parse("parent", project)?, None),
        None => {
            let session = SessionName::parse("parent", &req.parent)?;
            (session.project(), Some(session.session))
        }
    };
    p.check(&project.workspace, Action::Read)?;
    let filter = run_filter(p, &project, &req.filter)?;
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
    let scope = format!("ListRuns {} {}", req.parent, req.filter);
    let page = ctx.page(&scope, req.page_size, &req.page_token)?;
    let listed = ctx
        .store
        .list_runs(&project, session.as_deref(), &filter, &page)
        .await?;
    let (runs, next_page_token) = ctx.finish_page(&scope, listed, run_to_proto);
    Ok(pb::ListRunsResponse {
        runs,
        next_page_token,
    })
}

pub async fn cancel_run(ctx: &Ctx, p: &Principal, req: pb::CancelRunRequest) -> Result<pb::Run> {
    let name = RunName::parse("name", &req.name)?;
    p.check(&name.workspace, Action::Execute)?;
    let reason = convert::text("reason", req.reason.clone())?;
    let m = ctx.mutation(
        p,
        "CancelRun",
        &name.workspace,
        name.to_string(),
        &req.request_id,
        &req,
    )?;
    Ok(run_to_proto(
        ctx.store.cancel_run(&m, &name, &reason).await?,
    ))
}

pub async fn decide_approval(
    ctx: &Ctx,
    p: &Principal,
    req: pb::DecideApprovalRequest,
) -> Result<pb::Run> {
    let name = RunName::parse("name", &req.name)?;
    p.check(&name.workspace, Action::Execute)?;
    if req.approval_id.is_empty() {
        return Err(Error::invalid("approval_id", "required"));
    }
    let decision = decision_from_proto(req.decision)?;
    let comment = convert::text("comment", req.comment.clone())?;
    let m = ctx.mutation(
        p,
        "DecideApproval",
        &name.workspace,
        name.to_string(),
        &req.request_id,
        &req,
    )?;
    Ok(run_to_proto(
        ctx.store
            .decide_approval(&m, &name, &req.approval_id, decision, &comment)
            .await?,
    ))
}

/// The value at quantile `q` of sorted `values` (nearest rank).
fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn durations(mut values: Vec<i64>) -> pb::DurationStats {
    values.sort_unstable();
    pb::DurationStats {
        p50: Some(micros_to_duration(percentile(&values, 0.50))),
        p95: Some(micros_to_duration(percentile(&values, 0.95))),
        p99: Some(micros_to_duration(percentile(&values, 0.99))),
        count: values.len() as i64,
    }
}

fn stats(agent: String, rows: &[&StatRow]) -> pb::RunStats {
    let mut count_by_status = BTreeMap::new();
    let mut finished = 0;
    let mut succeeded = 0;
    let mut usage = pb::Usage::default();
    let mut queue_wait = Vec::new();
    let mut run_time = Vec::new();
    for row in rows {
        let status = RunStatus::parse(&row.status);
        let name = format!("RUN_STATUS_{}", row.status);
        *count_by_status.entry(name).or_insert(0) += 1;
        if status.is_some_and(RunStatus::is_terminal) {
            finished += 1;
            if status == Some(RunStatus::Succeeded) {
                succeeded += 1;
            }
        }
        if let Some(start) = row.start_time {
            queue_wait.push(start - row.create_time);
            if let Some(end) = row.end_time {
                run_time.push(end - start);
            }
        }
        usage.input_tokens += row.input_tokens;
        usage.output_tokens += row.output_tokens;
        usage.cost_usd += row.cost_usd;
    }
    pb::RunStats {
        agent,
        total: rows.len() as i64,
        count_by_status,
        success_rate: if finished == 0 {
            0.0
        } else {
            f64::from(succeeded) / f64::from(finished)
        },
        queue_wait: Some(durations(queue_wait)),
        run_time: Some(durations(run_time)),
        usage: Some(usage),
    }
}

pub async fn get_run_stats(
    ctx: &Ctx,
    p: &Principal,
    req: pb::GetRunStatsRequest,
) -> Result<pb::GetRunStatsResponse> {
    let project = ProjectName::parse("parent", &req.parent)?;
    p.check(&project.workspace, Action::Read)?;
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
    let rows = ctx.store.run_stat_rows(&project, start, end).await?;
    let all: Vec<&StatRow> = rows.iter().collect();
    let total = stats(String::new(), &all);
    let mut by_agent = Vec::new();
    if req.group_by_agent {
        let mut groups: BTreeMap<&str, Vec<&StatRow>> = BTreeMap::new();
        for row in &rows {
            groups.entry(row.agent_id.as_str()).or_default().push(row);
        }
        for (agent, rows) in groups {
            by_agent.push(stats(
                format!("workspaces/{}/agents/{agent}", project.workspace),
                &rows,
            ));
        }
    }
    Ok(pb::GetRunStatsResponse {
        total: Some(total),
        by_agent,
        start_time: timestamp(start),
        end_time: timestamp(end),
    })
}
