//! Proto ↔ domain conversions of sessions, messages, runs and events, with the
//! validation of everything a client or worker sends.

use agentry_core::run::EventInput;
use agentry_core::{
    Error, Result,
    absent::or_empty,
    names::{ContextName, SessionName},
    run::{
        Approval, ContextBinding, Decision, EventBody, Message, MessageBody, MessageRole, PlanStep,
        RetryPolicy, Run, RunError, RunEvent, RunStatus, Session, ToolCall, Usage,
    },
    time::DurationMicros,
};
use agentry_proto::v1 as pb;
use prost_types::Duration;

use crate::convert::{
    json_to_struct, json_to_value, struct_to_json, text, timestamp, value_to_json,
};

/// Longest id a worker may choose (tool call ids, message ids, names of custom events).
const MAX_ID: usize = 256;

pub fn micros_to_duration(micros: DurationMicros) -> Duration {
    Duration {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A duration within `[min, max]` microseconds.
pub fn duration(
    field: &str,
    d: &Duration,
    min: DurationMicros,
    max: DurationMicros,
) -> Result<DurationMicros> {
    let valid = (d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos))
        || (d.seconds <= 0 && (-999_999_999..=0).contains(&d.nanos));
    if !valid || d.seconds.unsigned_abs() > 10 * 365 * 86_400 {
        return Err(Error::invalid(field, "not a valid duration"));
    }
    let micros = d.seconds * 1_000_000 + i64::from(d.nanos) / 1000;
    if micros < min || micros > max {
        return Err(Error::invalid(
            field,
            format!("must be between {} and {}", human(min), human(max)),
        ));
    }
    Ok(micros)
}

fn human(micros: DurationMicros) -> String {
    if micros % 1_000_000 == 0 {
        format!("{}s", micros / 1_000_000)
    } else {
        format!("{}ms", micros / 1000)
    }
}

fn id(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Error::invalid(field, "required"));
    }
    if value.len() > MAX_ID || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_ID} bytes, no control characters"),
        ));
    }
    Ok(value.to_owned())
}

mod enums;

pub use enums::*;

// ---------------------------------------------------------------------------------------
// Resources

pub fn session_to_proto(s: Session) -> pb::Session {
    let prefix = format!("workspaces/{}/projects/{}", s.workspace, s.project);
    let name = format!("{prefix}/sessions/{}", s.id);
    pb::Session {
        instance: format!("{prefix}/instances/{}", s.instance),
        active_run: crate::convert::child_name(&name, "runs", s.active_run.as_deref()),
        name,
        description: s.description,
        labels: s.labels,
        message_count: s.message_count,
        create_time: timestamp(s.create_time),
        update_time: timestamp(s.update_time),
    }
}

fn tool_call_to_proto(c: &ToolCall) -> pb::ToolCall {
    pb::ToolCall {
        id: c.id.clone(),
        tool: c.tool.clone(),
        arguments: c.arguments.as_ref().map(json_to_value),
        result: c.result.as_ref().map(json_to_value),
        is_error: c.is_error,
    }
}

fn tool_call_from_proto(
    field: &str,
    c: Option<pb::ToolCall>,
    needs_tool: bool,
) -> Result<ToolCall> {
    let c = c.ok_or_else(|| Error::invalid(field, "required"))?;
    Ok(ToolCall {
        id: id(&format!("{field}.id"), &c.id)?,
        tool: if needs_tool || !c.tool.is_empty() {
            id(&format!("{field}.tool"), &c.tool)?
        } else {
            String::new()
        },
        arguments: c
            .arguments
            .map(|v| value_to_json(&format!("{field}.arguments"), v, 0))
            .transpose()?,
        result: c
            .result
            .map(|v| value_to_json(&format!("{field}.result"), v, 0))
            .transpose()?,
        is_error: c.is_error,
    })
}

fn body_to_proto(b: &MessageBody) -> pb::Message {
    pb::Message {
        role: role_to_proto(b.role),
        content: b.content.clone(),
        tool_call: b.tool_call.as_ref().map(tool_call_to_proto),
        ..Default::default()
    }
}

pub fn message_to_proto(session: &str, m: Message) -> pb::Message {
    pb::Message {
        name: format!("{session}/messages/{}", m.sequence),
        sequence: m.sequence,
        run: format!("{session}/runs/{}", m.run),
        superseded: m.superseded,
        create_time: timestamp(m.create_time),
        ..body_to_proto(&m.body)
    }
}

/// The messages of the repeated request field `field`, each as [`message_from_proto`].
pub fn messages_from_proto(field: &str, messages: Vec<pb::Message>) -> Result<Vec<MessageBody>> {
    let each = |(i, m): (usize, pb::Message)| message_from_proto(&format!("{field}[{i}]"), m);
    messages.into_iter().enumerate().map(each).collect()
}

/// A message a client (run input) or worker (output, message_completed) sends: roles
/// USER, ASSISTANT or SYSTEM with text; tool calls travel as their own events.
pub fn message_from_proto(field: &str, m: pb::Message) -> Result<MessageBody> {
    let role = role_from_proto(&format!("{field}.role"), m.role)?;
    if role == MessageRole::Tool || m.tool_call.is_some() {
        return Err(Error::invalid(
            format!("{field}.role"),
            "tool calls and results are appended as tool_call_started / tool_call_completed events",
        ));
    }
    Ok(MessageBody {
        role,
        content: m.content,
        tool_call: None,
    })
}

fn usage_to_proto(u: &Usage) -> pb::Usage {
    pb::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cost_usd: u.cost_usd,
    }
}

pub fn usage_from_proto(field: &str, u: Option<pb::Usage>) -> Result<Usage> {
    let u = u.unwrap_or_default();
    if u.input_tokens < 0 || u.output_tokens < 0 || !u.cost_usd.is_finite() || u.cost_usd < 0.0 {
        return Err(Error::invalid(
            field,
            "token counts and cost must be finite and not negative",
        ));
    }
    Ok(Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cost_usd: u.cost_usd,
    })
}

fn error_to_proto(e: &RunError) -> pb::RunError {
    pb::RunError {
        r#type: e.error_type.clone(),
        message: e.message.clone(),
        details: e.details.as_ref().map(json_to_struct),
    }
}

pub fn error_from_proto(field: &str, e: Option<pb::RunError>) -> Result<RunError> {
    let e = e.unwrap_or_default();
    if e.r#type.len() > MAX_ID || e.r#type.chars().any(char::is_control) {
        return Err(Error::invalid(
            format!("{field}.type"),
            format!("at most {MAX_ID} bytes, no control characters"),
        ));
    }
    Ok(RunError {
        error_type: e.r#type,
        message: e.message,
        details: e
            .details
            .map(|d| struct_to_json(&format!("{field}.details"), d))
            .transpose()?,
    })
}

fn step_to_proto(s: &PlanStep) -> pb::PlanStep {
    pb::PlanStep {
        tool: s.tool.clone(),
        arguments: s.arguments.as_ref().map(json_to_value),
        description: s.description.clone(),
        risk: risk_to_proto(s.risk),
    }
}

pub fn approval_to_proto(a: &Approval) -> pb::Approval {
    pb::Approval {
        approval_id: a.id.clone(),
        steps: a.steps.iter().map(step_to_proto).collect(),
        expire_time: timestamp(a.expire_time),
        decision: match a.decision {
            None => pb::ApprovalDecision::Unspecified,
            Some(Decision::Approve) => pb::ApprovalDecision::Approve,
            Some(Decision::Reject) => pb::ApprovalDecision::Reject,
        } as i32,
        comment: or_empty(&a.comment).to_owned(),
        decided_by: or_empty(&a.decided_by).to_owned(),
    }
}

pub fn retry_policy_from_proto(p: Option<pb::RetryPolicy>) -> Result<RetryPolicy> {
    let p = p.unwrap_or_default();
    const DAY: DurationMicros = 86_400_000_000;
    let initial = match &p.initial_interval {
        Some(d) => duration("run.retry_policy.initial_interval", d, 1000, DAY)?,
        None => RetryPolicy::DEFAULT_INITIAL,
    };
    let coefficient = if p.backoff_coefficient == 0.0 {
        RetryPolicy::DEFAULT_COEFFICIENT
    } else if p.backoff_coefficient.is_finite() && (1.0..=100.0).contains(&p.backoff_coefficient) {
        p.backoff_coefficient
    } else {
        return Err(Error::invalid(
            "run.retry_policy.backoff_coefficient",
            "between 1 and 100",
        ));
    };
    let max_interval = match &p.max_interval {
        Some(d) => duration("run.retry_policy.max_interval", d, initial, 7 * DAY)?,
        None => initial.saturating_mul(100),
    };
    let max_attempts = match p.max_attempts {
        0 => RetryPolicy::DEFAULT_MAX_ATTEMPTS,
        n if (1..=100).contains(&n) => n,
        _ => {
            return Err(Error::invalid(
                "run.retry_policy.max_attempts",
                "between 1 and 100 (0: the default, 3)",
            ));
        }
    };
    if p.non_retryable_error_types.len() > 100 {
        return Err(Error::invalid(
            "run.retry_policy.non_retryable_error_types",
            "at most 100",
        ));
    }
    Ok(RetryPolicy {
        initial_interval: initial,
        backoff_coefficient: coefficient,
        max_interval,
        max_attempts,
        non_retryable_error_types: p.non_retryable_error_types,
    })
}

fn retry_policy_to_proto(p: &RetryPolicy) -> pb::RetryPolicy {
    pb::RetryPolicy {
        initial_interval: Some(micros_to_duration(p.initial_interval)),
        backoff_coefficient: p.backoff_coefficient,
        max_interval: Some(micros_to_duration(p.max_interval)),
        max_attempts: p.max_attempts,
        non_retryable_error_types: p.non_retryable_error_types.clone(),
    }
}

pub fn bindings_from_proto(
    p: &crate::auth::Principal,
    session: &SessionName,
    bindings: Vec<pb::ContextBinding>,
) -> Result<Vec<ContextBinding>> {
    if bindings.len() > 100 {
        return Err(Error::invalid("run.contexts", "at most 100"));
    }
    bindings
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let field = format!("run.contexts[{i}].context");
            let name = ContextName::parse(&field, &b.context)?;
            p.check_reference(&session.workspace, &name.workspace)?;
            if name.project() != session.project() {
                return Err(Error::invalid(field, "a context of the session's project"));
            }
            Ok(ContextBinding {
                alias: if b.alias.is_empty() {
                    name.context.clone()
                } else {
                    text(&format!("run.contexts[{i}].alias"), b.alias)?
                },
                context: name.context,
            })
        })
        .collect()
}

pub fn run_name(r: &Run) -> String {
    format!(
        "workspaces/{}/projects/{}/sessions/{}/runs/{}",
        r.workspace, r.project, r.session, r.id
    )
}

pub fn run_to_proto(r: Run) -> pb::Run {
    let prefix = format!("workspaces/{}/projects/{}", r.workspace, r.project);
    pb::Run {
        name: run_name(&r),
        instance: format!("{prefix}/instances/{}", r.instance),
        agent: format!("workspaces/{}/agents/{}", r.workspace, r.agent),
        agent_revision: r.agent_revision,
        status: status_to_proto(r.status),
        stop_reason: stop_to_proto(r.stop_reason),
        autonomy_level: autonomy_to_proto(r.spec.autonomy),
        timeout: (r.spec.timeout > 0).then(|| micros_to_duration(r.spec.timeout)),
        retry_policy: Some(retry_policy_to_proto(&r.spec.retry_policy)),
        multitask_strategy: strategy_to_proto(r.spec.strategy),
        input: r.spec.input.iter().map(body_to_proto).collect(),
        contexts: r
            .spec
            .contexts
            .iter()
            .map(|b| pb::ContextBinding {
                context: format!("{prefix}/contexts/{}", b.context),
                alias: b.alias.clone(),
            })
            .collect(),
        attempt: r.attempt,
        error: r.error.as_ref().map(error_to_proto),
        usage: Some(usage_to_proto(&r.usage)),
        last_sequence: r.last_sequence,
        cancel_requested: r.cancel_requested,
        approval: r.approval.as_ref().map(approval_to_proto),
        next_attempt_time: (r.status == RunStatus::Queued)
            .then(|| timestamp(r.next_attempt_time))
            .flatten(),
        labels: r.spec.labels,
        create_time: timestamp(r.create_time),
        start_time: r.start_time.and_then(timestamp),
        end_time: r.end_time.and_then(timestamp),
        update_time: timestamp(r.update_time),
        output: r.output.iter().map(body_to_proto).collect(),
    }
}

pub fn event_to_proto(run: &str, e: RunEvent) -> pb::RunEvent {
    use pb::run_event::Kind;
    let kind = match e.body {
        EventBody::StatusChanged {
            previous,
            status,
            stop_reason,
            message,
        } => Kind::StatusChanged(pb::StatusChanged {
            previous_status: previous.map_or(0, status_to_proto),
            status: status_to_proto(status),
            stop_reason: stop_to_proto(stop_reason),
            message,
        }),
        EventBody::MessageDelta { message_id, text } => {
            Kind::MessageDelta(pb::MessageDelta { message_id, text })
        }
        EventBody::MessageCompleted { message, sequence } => {
            let session = run.split("/runs/").next().unwrap_or_default();
            Kind::MessageCompleted(pb::MessageCompleted {
                message: Some(pb::Message {
                    name: format!("{session}/messages/{sequence}"),
                    sequence,
                    run: run.to_owned(),
                    create_time: timestamp(e.create_time),
                    ..body_to_proto(&message)
                }),
            })
        }
        EventBody::ToolCallStarted { call } => Kind::ToolCallStarted(pb::ToolCallStarted {
            tool_call: Some(tool_call_to_proto(&call)),
        }),
        EventBody::ToolCallCompleted { call, synthetic } => {
            Kind::ToolCallCompleted(pb::ToolCallCompleted {
                tool_call: Some(tool_call_to_proto(&call)),
                synthetic,
            })
        }
        EventBody::PlanProposed {
            approval,
            auto_approved,
        } => Kind::PlanProposed(pb::PlanProposed {
            approval: Some(approval_to_proto(&approval)),
            auto_approved,
        }),
        EventBody::ApprovalDecided { approval } => Kind::ApprovalDecided(pb::ApprovalDecided {
            approval: Some(approval_to_proto(&approval)),
        }),
        EventBody::Usage { usage } => Kind::Usage(usage_to_proto(&usage)),
        EventBody::Custom { name, data } => Kind::Custom(pb::CustomEvent {
            name,
            data: Some(json_to_struct(&data)),
        }),
        EventBody::Error { error } => Kind::Error(pb::ErrorEvent {
            error: Some(error_to_proto(&error)),
        }),
    };
    pb::RunEvent {
        name: format!("{run}/events/{}", e.sequence),
        sequence: e.sequence,
        attempt: e.attempt,
        create_time: timestamp(e.create_time),
        kind: Some(kind),
    }
}

pub fn event_input_from_proto(index: usize, e: pb::RunEventInput) -> Result<EventInput> {
    use pb::run_event_input::Kind;
    let field = |what: &str| format!("events[{index}].{what}");
    Ok(match e.kind {
        None => {
            return Err(Error::invalid(
                format!("events[{index}]"),
                "one kind of event must be set",
            ));
        }
        Some(Kind::MessageDelta(d)) => EventInput::Delta {
            message_id: if d.message_id.is_empty() {
                String::new()
            } else {
                id(&field("message_delta.message_id"), &d.message_id)?
            },
            text: d.text,
        },
        Some(Kind::MessageCompleted(m)) => EventInput::Message(message_from_proto(
            &field("message_completed.message"),
            m.message
                .ok_or_else(|| Error::invalid(field("message_completed.message"), "required"))?,
        )?),
        Some(Kind::ToolCallStarted(t)) => EventInput::ToolStarted(tool_call_from_proto(
            &field("tool_call_started.tool_call"),
            t.tool_call,
            true,
        )?),
        Some(Kind::ToolCallCompleted(t)) => EventInput::ToolCompleted(tool_call_from_proto(
            &field("tool_call_completed.tool_call"),
            t.tool_call,
            false,
        )?),
        Some(Kind::Usage(u)) => EventInput::Usage(usage_from_proto(&field("usage"), Some(u))?),
        Some(Kind::Custom(c)) => EventInput::Custom {
            name: id(&field("custom.name"), &c.name)?,
            data: match c.data {
                Some(d) => struct_to_json(&field("custom.data"), d)?,
                None => serde_json::Value::Object(Default::default()),
            },
        },
        Some(Kind::Error(e)) => {
            EventInput::Error(error_from_proto(&field("error.error"), e.error)?)
        }
    })
}
