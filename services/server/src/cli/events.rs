//! `runs follow`: a run's events as they happen. Text deltas are printed as they arrive,
//! on one line per message; tool calls, plans, approvals, errors and status changes get
//! lines of their own. JSON and YAML print each event's proto3 JSON. The stream is
//! resumed after the last sequence seen when the connection drops, and the command
//! exits with the run's outcome.

use agentry_proto::v1::{self as pb, run_event::Kind};
use serde_json::Value;

use super::{
    Failure, Format,
    conn::Client,
    follow::follow,
    output::{Printer, short_enum, to_json, write_out},
    status::{RUN_CANCELLED, RUN_FAILED, RUN_TIMED_OUT},
};

/// What the terminal shows between events.
struct Screen {
    out: Printer,
    /// A message's text deltas are being printed on the current line.
    open_line: bool,
    /// The last status a StatusChanged event reported.
    status: Option<pb::RunStatus>,
}

impl Screen {
    fn event(&mut self, event: &pb::RunEvent) -> Result<(), Failure> {
        if let Some(Kind::StatusChanged(change)) = &event.kind {
            self.status = pb::RunStatus::try_from(change.status).ok();
        }
        match self.out.format {
            Format::Json | Format::Yaml => {
                let value = to_json(event);
                self.out.stream_item(&value, String::new)
            }
            Format::Table => self.line(event),
        }
    }

    fn line(&mut self, event: &pb::RunEvent) -> Result<(), Failure> {
        let Some(kind) = &event.kind else {
            return Ok(());
        };
        if let Kind::MessageDelta(delta) = kind {
            self.open_line = true;
            return write_out(&delta.text);
        }
        let mut text = String::new();
        if std::mem::take(&mut self.open_line) {
            text.push('\n');
            if matches!(kind, Kind::MessageCompleted(_)) {
                // The deltas already showed this message.
                return write_out(&text);
            }
        }
        text.push_str(&self.describe(kind));
        text.push('\n');
        write_out(&text)
    }

    fn status_line(&self, change: &pb::StatusChanged, tag: &dyn Fn(&str) -> String) -> String {
        let status = enum_name(pb::RunStatus::try_from(change.status).map(|s| s.as_str_name()));
        let mut line = format!("{} {}", tag("status"), self.out.paint("1", status));
        if change.stop_reason != 0 {
            let reason = pb::StopReason::try_from(change.stop_reason).map(|s| s.as_str_name());
            line.push_str(&format!(" ({})", enum_name(reason)));
        }
        if !change.message.is_empty() {
            line.push_str(&format!(": {}", change.message));
        }
        line
    }

    fn describe(&self, kind: &Kind) -> String {
        let tag = |name: &str| self.out.paint("2", &format!("[{name}]"));
        match kind {
            Kind::StatusChanged(change) => self.status_line(change, &tag),
            Kind::MessageCompleted(done) => {
                let message = done.message.clone().unwrap_or_default();
                let role =
                    enum_name(pb::MessageRole::try_from(message.role).map(|r| r.as_str_name()));
                format!("{} {}", tag(&role.to_lowercase()), message.content)
            }
            Kind::ToolCallStarted(started) => {
                let call = started.tool_call.clone().unwrap_or_default();
                format!(
                    "{} {} {}",
                    tag("tool"),
                    call.tool,
                    json(call.arguments.as_ref())
                )
            }
            Kind::ToolCallCompleted(done) => {
                let call = done.tool_call.clone().unwrap_or_default();
                let outcome = if call.is_error { "failed" } else { "returned" };
                format!(
                    "{} {} {outcome} {}",
                    tag("tool"),
                    call.tool,
                    json(call.result.as_ref())
                )
            }
            Kind::PlanProposed(plan) => plan_line(plan, &tag),
            Kind::ApprovalDecided(decided) => {
                let approval = decided.approval.clone().unwrap_or_default();
                let decision =
                    pb::ApprovalDecision::try_from(approval.decision).map(|d| d.as_str_name());
                format!(
                    "{} {} by {}",
                    tag("approval"),
                    enum_name(decision),
                    approval.decided_by
                )
            }
            Kind::Usage(usage) => format!(
                "{} {} input, {} output tokens, ${:.4}",
                tag("usage"),
                usage.input_tokens,
                usage.output_tokens,
                usage.cost_usd
            ),
            Kind::Custom(custom) => format!("{} {}", tag(&custom.name), to_json_struct(custom)),
            Kind::Error(error) => {
                let error = error.error.clone().unwrap_or_default();
                self.out.paint(
                    "31",
                    &format!("[error] {}: {}", error.r#type, error.message),
                )
            }
            Kind::MessageDelta(delta) => delta.text.clone(),
        }
    }
}

fn plan_line(plan: &pb::PlanProposed, tag: &dyn Fn(&str) -> String) -> String {
    let approval = plan.approval.clone().unwrap_or_default();
    let tools: Vec<&str> = approval.steps.iter().map(|s| s.tool.as_str()).collect();
    let verdict = if plan.auto_approved {
        "auto-approved"
    } else {
        "waiting for approval (agentry runs approve|reject)"
    };
    format!(
        "{} {} step(s): {}; {verdict}",
        tag("plan"),
        tools.len(),
        tools.join(", ")
    )
}

fn enum_name(name: Result<&'static str, prost::UnknownEnumValue>) -> &'static str {
    name.map_or("UNKNOWN", short_enum)
}

fn json(value: Option<&prost_types::Value>) -> String {
    value
        .and_then(|v| crate::convert::value_to_json("value", v.clone(), 0).ok())
        .map(|v| v.to_string())
        .unwrap_or_default()
}

fn to_json_struct(custom: &pb::CustomEvent) -> Value {
    to_json(custom).get("data").cloned().unwrap_or(Value::Null)
}

/// Follows `run` from after `after`; the exit status says how it ended.
pub async fn follow_run(c: &Client, run: String, after: i64) -> Result<(), Failure> {
    let mut screen = Screen {
        out: c.out,
        open_line: false,
        status: None,
    };
    let open = |cursor: i64| {
        let mut execution = c.execution();
        let request = pb::StreamRunEventsRequest {
            name: run.clone(),
            after_sequence: cursor,
        };
        async move { execution.stream_run_events(request).await }
    };
    follow(after, open, |item: pb::StreamRunEventsResponse| {
        let event = item.event.unwrap_or_default();
        screen.event(&event)?;
        Ok(event.sequence)
    })
    .await?;
    if screen.open_line {
        write_out("\n")?;
    }
    let status = match screen.status {
        Some(status) => status,
        None => {
            let request = pb::GetRunRequest { name: run.clone() };
            let current = c.execution().get_run(request).await?.into_inner();
            pb::RunStatus::try_from(current.status).unwrap_or(pb::RunStatus::Unspecified)
        }
    };
    match status {
        pb::RunStatus::Succeeded => Ok(()),
        pb::RunStatus::Failed => Err(Failure::Exit(RUN_FAILED)),
        pb::RunStatus::Cancelled => Err(Failure::Exit(RUN_CANCELLED)),
        pb::RunStatus::TimedOut => Err(Failure::Exit(RUN_TIMED_OUT)),
        other => Err(super::status::fail!(
            "the event stream ended while the run was {}",
            short_enum(other.as_str_name())
        )),
    }
}
