//! `agentry runs …`: start runs, watch them, steer them, count them.

use agentry_proto::v1 as pb;
use clap::{Subcommand, ValueEnum};

use super::{
    Failure, Format,
    conn::Client,
    events,
    listing::{Paging, print_all},
    output::{cell, print_table, to_json},
    registry::label,
    status::fail,
    time::{now_micros, parse_duration, parse_time, proto_duration, rfc3339, timestamp},
};

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Autonomy {
    L0,
    L1,
    L2,
    L3,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Strategy {
    Reject,
    Enqueue,
    Interrupt,
    Rollback,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RunStatus {
    Queued,
    Running,
    RequiresAction,
    Cancelling,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// Starts a run in a session with a user message.
    Create {
        /// The session (its id in --project, or its full name)
        session: String,
        /// The user message
        #[arg(long)]
        input: String,
        /// How much the agent may do without approval
        #[arg(long, value_enum)]
        autonomy: Option<Autonomy>,
        /// What to do when the session already has a run
        #[arg(long, value_enum)]
        strategy: Option<Strategy>,
        /// Overall time limit (e.g. 10m)
        #[arg(long)]
        timeout: Option<String>,
        /// A context the run may use: NAME or NAME=ALIAS (repeatable)
        #[arg(long = "context")]
        contexts: Vec<String>,
        /// A label KEY=VALUE (repeatable)
        #[arg(long = "label", value_parser = label)]
        labels: Vec<(String, String)>,
        /// Then follow it, like `runs follow`
        #[arg(long)]
        follow: bool,
    },
    /// Gets a run (a full name, or SESSION/RUN in --project).
    Get { run: String },
    /// Lists runs of a session, or of all of --project, newest first.
    List {
        /// Only this session's runs
        session: Option<String>,
        #[arg(long, value_enum)]
        status: Option<RunStatus>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        instance: Option<String>,
        /// Created since: an RFC 3339 time or a duration before now (e.g. 2h)
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Prints the run's events as they happen and exits with its outcome (0 succeeded,
    /// 10 failed, 11 cancelled, 12 timed out); resumes after a dropped connection.
    Follow {
        run: String,
        /// Start after this event sequence [default: from the start]
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Asks a run to stop.
    Cancel {
        run: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Approves the plan a run is waiting on.
    Approve {
        run: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Rejects the plan a run is waiting on.
    Reject {
        run: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Counts, success rate, latencies and usage of a project's runs.
    Stats {
        /// The project [default: --project]
        project: Option<String>,
        /// Since: an RFC 3339 time or a duration before now [default: 24h]
        #[arg(long)]
        since: Option<String>,
        /// One row per agent as well
        #[arg(long)]
        by_agent: bool,
    },
}

pub async fn run(c: Client, command: RunsCmd) -> Result<(), Failure> {
    let mut execution = c.execution();
    match command {
        RunsCmd::Create {
            session,
            input,
            autonomy,
            strategy,
            timeout,
            contexts,
            labels,
            follow,
        } => {
            let run = new_run(&c, input, autonomy, strategy, timeout, contexts, labels)?;
            let request = pb::CreateRunRequest {
                parent: c.names.in_project("sessions", &session)?,
                run: Some(run),
                ..Default::default()
            };
            let created = execution.create_run(request).await?.into_inner();
            if follow {
                if c.out.format == Format::Table {
                    eprintln!("run {}", created.name);
                }
                events::follow_run(&c, created.name, 0).await
            } else {
                c.out.print(&created)
            }
        }
        RunsCmd::Get { run } => {
            let name = c.names.run_name(&run)?;
            c.send(pb::GetRunRequest { name }).await
        }
        RunsCmd::List {
            session,
            status,
            agent,
            instance,
            since,
            paging,
        } => {
            let filter = list_filter(&c, status, agent, instance, since)?;
            list(&c, session, filter, &paging).await
        }
        RunsCmd::Follow { run, after } => {
            events::follow_run(&c, c.names.run_name(&run)?, after).await
        }
        RunsCmd::Cancel { run, reason } => {
            let request = pb::CancelRunRequest {
                name: c.names.run_name(&run)?,
                reason,
                ..Default::default()
            };
            c.show(execution.cancel_run(request)).await
        }
        RunsCmd::Approve { run, comment } => {
            decide(&c, &run, pb::ApprovalDecision::Approve, comment).await
        }
        RunsCmd::Reject { run, comment } => {
            decide(&c, &run, pb::ApprovalDecision::Reject, comment).await
        }
        RunsCmd::Stats {
            project,
            since,
            by_agent,
        } => stats(&c, project, since, by_agent).await,
    }
}

/// Lists the runs of `session`, or of the whole project, that `filter` selects.
async fn list(
    c: &Client,
    session: Option<String>,
    filter: String,
    paging: &Paging,
) -> Result<(), Failure> {
    let parent = match session {
        Some(s) => c.names.in_project("sessions", &s)?,
        None => format!("{}/sessions/-", c.names.project()?),
    };
    let request = pb::ListRunsRequest {
        parent,
        filter,
        ..Default::default()
    };
    print_all(c, paging, request).await
}

/// The run `runs create` asks for.
fn new_run(
    c: &Client,
    input: String,
    autonomy: Option<Autonomy>,
    strategy: Option<Strategy>,
    timeout: Option<String>,
    contexts: Vec<String>,
    labels: Vec<(String, String)>,
) -> Result<pb::Run, Failure> {
    Ok(pb::Run {
        input: vec![pb::Message {
            role: pb::MessageRole::User as i32,
            content: input,
            ..Default::default()
        }],
        autonomy_level: autonomy.map_or(0, autonomy_level),
        multitask_strategy: strategy.map_or(0, multitask_strategy),
        timeout: timeout
            .map(|t| parse_duration(&t).map(proto_duration))
            .transpose()?,
        contexts: bindings(c, &contexts)?,
        labels: labels.into_iter().collect(),
        ..Default::default()
    })
}

fn autonomy_level(a: Autonomy) -> i32 {
    (match a {
        Autonomy::L0 => pb::AutonomyLevel::L0,
        Autonomy::L1 => pb::AutonomyLevel::L1,
        Autonomy::L2 => pb::AutonomyLevel::L2,
        Autonomy::L3 => pb::AutonomyLevel::L3,
    }) as i32
}

fn multitask_strategy(s: Strategy) -> i32 {
    (match s {
        Strategy::Reject => pb::MultitaskStrategy::Reject,
        Strategy::Enqueue => pb::MultitaskStrategy::Enqueue,
        Strategy::Interrupt => pb::MultitaskStrategy::Interrupt,
        Strategy::Rollback => pb::MultitaskStrategy::Rollback,
    }) as i32
}

/// Context bindings given as `context` or `context=alias`.
fn bindings(c: &Client, contexts: &[String]) -> Result<Vec<pb::ContextBinding>, Failure> {
    contexts
        .iter()
        .map(|binding| {
            let (name, alias) = binding.split_once('=').unwrap_or((binding, ""));
            Ok(pb::ContextBinding {
                context: c.names.in_project("contexts", name)?,
                alias: alias.to_owned(),
            })
        })
        .collect()
}

/// The ListRuns filter of the `runs list` options.
fn list_filter(
    c: &Client,
    status: Option<RunStatus>,
    agent: Option<String>,
    instance: Option<String>,
    since: Option<String>,
) -> Result<String, Failure> {
    let mut terms = Vec::new();
    if let Some(status) = status {
        let name = status
            .to_possible_value()
            .expect("no skipped values")
            .get_name()
            .replace('-', "_")
            .to_uppercase();
        terms.push(format!("status = {name}"));
    }
    if let Some(agent) = agent {
        terms.push(format!(
            "agent = \"{}\"",
            c.names.in_workspace("agents", &agent)?
        ));
    }
    if let Some(instance) = instance {
        let instance = c.names.in_project("instances", &instance)?;
        terms.push(format!("instance = \"{instance}\""));
    }
    if let Some(since) = since {
        terms.push(format!(
            "create_time > \"{}\"",
            rfc3339(parse_time(&since)?)
        ));
    }
    Ok(terms.join(" AND "))
}

/// Decides the approval the run is waiting on (its id read from the run).
async fn decide(
    c: &Client,
    run: &str,
    decision: pb::ApprovalDecision,
    comment: String,
) -> Result<(), Failure> {
    let name = c.names.run_name(run)?;
    let mut execution = c.execution();
    let current = execution
        .get_run(pb::GetRunRequest { name: name.clone() })
        .await?
        .into_inner();
    let Some(approval) = current.approval.filter(|a| a.decision == 0) else {
        return Err(fail!("{name} is not waiting for an approval"));
    };
    let request = pb::DecideApprovalRequest {
        name,
        approval_id: approval.approval_id,
        decision: decision as i32,
        comment,
        ..Default::default()
    };
    c.show(execution.decide_approval(request)).await
}

async fn stats(
    c: &Client,
    project: Option<String>,
    since: Option<String>,
    by_agent: bool,
) -> Result<(), Failure> {
    let start = match since {
        Some(since) => parse_time(&since)?,
        None => now_micros() - 86_400_000_000,
    };
    let request = pb::GetRunStatsRequest {
        parent: c.names.project_arg(project.as_deref())?,
        start_time: Some(timestamp(start)),
        end_time: None,
        group_by_agent: by_agent,
    };
    let answer = c.execution().get_run_stats(request).await?.into_inner();
    if c.out.format != Format::Table {
        return c.out.print(&answer);
    }
    let value = to_json(&answer);
    let mut groups = vec![("(all)".to_owned(), value["total"].clone())];
    for group in value["byAgent"].as_array().into_iter().flatten() {
        groups.push((cell(group, "agent"), group.clone()));
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|(agent, g)| {
            let count = |status: &str| cell(g, &format!("countByStatus.RUN_STATUS_{status}"));
            vec![
                agent.clone(),
                cell(g, "total"),
                count("SUCCEEDED"),
                count("FAILED"),
                count("CANCELLED"),
                g["successRate"]
                    .as_f64()
                    .map_or(String::new(), |r| format!("{:.1}%", r * 100.0)),
                cell(g, "runTime.p50"),
                cell(g, "runTime.p95"),
                cell(g, "queueWait.p95"),
            ]
        })
        .collect();
    print_table(
        &[
            "AGENT",
            "TOTAL",
            "SUCCEEDED",
            "FAILED",
            "CANCELLED",
            "SUCCESS",
            "RUN P50",
            "RUN P95",
            "WAIT P95",
        ],
        &rows,
    );
    Ok(())
}
