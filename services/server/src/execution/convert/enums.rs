//! The run and message enums between proto and domain.

use agentry_core::{
    Error, Result,
    model::ToolRisk,
    run::{AutonomyLevel, Decision, MessageRole, MultitaskStrategy, RunStatus, StopReason},
};
use agentry_proto::v1 as pb;

pub fn status_to_proto(s: RunStatus) -> i32 {
    pb::RunStatus::from_str_name(&format!("RUN_STATUS_{}", s.as_str())).map_or(0, |v| v as i32)
}

pub fn status_from_name(name: &str) -> Option<RunStatus> {
    RunStatus::parse(name.trim_start_matches("RUN_STATUS_"))
}

pub fn stop_to_proto(s: StopReason) -> i32 {
    pb::StopReason::from_str_name(&format!("STOP_REASON_{}", s.as_str())).map_or(0, |v| v as i32)
}

pub fn stop_from_proto(field: &str, value: i32) -> Result<StopReason> {
    let named =
        pb::StopReason::try_from(value).map_err(|_| Error::invalid(field, "not a StopReason"))?;
    Ok(match named {
        pb::StopReason::Unspecified => StopReason::Unspecified,
        other => StopReason::parse(other.as_str_name().trim_start_matches("STOP_REASON_"))
            .ok_or_else(|| Error::invalid(field, "not a StopReason"))?,
    })
}

pub fn role_to_proto(r: MessageRole) -> i32 {
    pb::MessageRole::from_str_name(&format!("MESSAGE_ROLE_{}", r.as_str())).map_or(0, |v| v as i32)
}

pub fn role_from_proto(field: &str, value: i32) -> Result<MessageRole> {
    pb::MessageRole::try_from(value)
        .ok()
        .and_then(|r| MessageRole::parse(r.as_str_name().trim_start_matches("MESSAGE_ROLE_")))
        .ok_or_else(|| Error::invalid(field, "USER, ASSISTANT, SYSTEM or TOOL"))
}

pub fn autonomy_from_proto(value: i32) -> Result<AutonomyLevel> {
    match pb::AutonomyLevel::try_from(value) {
        Ok(pb::AutonomyLevel::Unspecified) | Ok(pb::AutonomyLevel::L0) => Ok(AutonomyLevel(0)),
        Ok(pb::AutonomyLevel::L1) => Ok(AutonomyLevel(1)),
        Ok(pb::AutonomyLevel::L2) => Ok(AutonomyLevel(2)),
        Ok(pb::AutonomyLevel::L3) => Ok(AutonomyLevel(3)),
        Err(_) => Err(Error::invalid("run.autonomy_level", "L0, L1, L2 or L3")),
    }
}

pub fn autonomy_to_proto(a: AutonomyLevel) -> i32 {
    (match a.0 {
        0 => pb::AutonomyLevel::L0,
        1 => pb::AutonomyLevel::L1,
        2 => pb::AutonomyLevel::L2,
        _ => pb::AutonomyLevel::L3,
    }) as i32
}

pub fn strategy_from_proto(value: i32) -> Result<MultitaskStrategy> {
    match pb::MultitaskStrategy::try_from(value) {
        Ok(pb::MultitaskStrategy::Unspecified) | Ok(pb::MultitaskStrategy::Reject) => {
            Ok(MultitaskStrategy::Reject)
        }
        Ok(pb::MultitaskStrategy::Enqueue) => Ok(MultitaskStrategy::Enqueue),
        Ok(pb::MultitaskStrategy::Interrupt) => Ok(MultitaskStrategy::Interrupt),
        Ok(pb::MultitaskStrategy::Rollback) => Ok(MultitaskStrategy::Rollback),
        Err(_) => Err(Error::invalid(
            "run.multitask_strategy",
            "REJECT, ENQUEUE, INTERRUPT or ROLLBACK",
        )),
    }
}

pub fn strategy_to_proto(s: MultitaskStrategy) -> i32 {
    (match s {
        MultitaskStrategy::Reject => pb::MultitaskStrategy::Reject,
        MultitaskStrategy::Enqueue => pb::MultitaskStrategy::Enqueue,
        MultitaskStrategy::Interrupt => pb::MultitaskStrategy::Interrupt,
        MultitaskStrategy::Rollback => pb::MultitaskStrategy::Rollback,
    }) as i32
}

pub fn decision_from_proto(value: i32) -> Result<Decision> {
    match pb::ApprovalDecision::try_from(value) {
        Ok(pb::ApprovalDecision::Approve) => Ok(Decision::Approve),
        Ok(pb::ApprovalDecision::Reject) => Ok(Decision::Reject),
        _ => Err(Error::invalid("decision", "APPROVE or REJECT")),
    }
}

pub fn risk_to_proto(r: ToolRisk) -> i32 {
    (match r {
        ToolRisk::ReadOnly => pb::ToolRisk::ReadOnly,
        ToolRisk::Write => pb::ToolRisk::Write,
        ToolRisk::Destructive => pb::ToolRisk::Destructive,
    }) as i32
}
