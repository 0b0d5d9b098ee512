//! Plans and approvals: the autonomy matrix decides whether a plan runs without a human;
//! otherwise the run waits in REQUIRES_ACTION for a decision, or for the approval to
//! expire (a rejection by `expired`).

use super::{Approval, Decision, EventBody, PlanStep, RunChange, RunStatus, StopReason};
use crate::{Error, Result, error::quote, names::RunName};

impl RunChange {
    /// ProposePlan with approval id `id`: auto-approved when the run's autonomy allows
    /// every step (the lease goes on), else the run waits for a human in REQUIRES_ACTION
    /// and the lease ends. Returns whether it was auto-approved, and the approval.
    pub fn propose(&mut self, id: String, steps: &[PlanStep]) -> Result<(bool, Approval)> {
        if self.run.status == RunStatus::Cancelling {
            return Err(Error::precondition(
                "CANCEL_REQUESTED",
                "a cancel was requested; finish the task with FailTask or CompleteTask",
            ));
        }
        let mut approval = Approval {
            id,
            steps: steps.to_vec(),
            expire_time: self.now.saturating_add(self.run.spec.approval_timeout),
            decision: None,
            comment: None,
            decided_by: None,
        };
        let auto = steps.iter().all(|s| self.run.spec.autonomy.allows(s.risk));
        self.event(EventBody::PlanProposed {
            approval: approval.clone(),
            auto_approved: auto,
        });
        if auto {
            approval.decision = Some(Decision::Approve);
            approval.decided_by = Some("auto".into());
            self.approval_decided(&approval);
            self.run.approval = Some(approval.clone());
        } else {
            self.run.approval = Some(approval.clone());
            let message = "waiting for a decision on the plan";
            self.status(RunStatus::RequiresAction, StopReason::Unspecified, message)?;
            self.run.lease_epoch += 1;
            self.wake_slot();
        }
        self.wake_run();
        Ok((auto, approval))
    }

    /// Whether the run waits for a decision on approval `id`.
    pub fn pending(&self, id: &str) -> bool {
        self.run.status == RunStatus::RequiresAction
            && self
                .run
                .approval
                .as_ref()
                .is_some_and(|a| a.id == id && a.decision.is_none())
    }

    /// DecideApproval by `by`: either way the run goes back to the queue, with the
    /// decision in its approval for the worker to act on.
    pub fn decide(
        &mut self,
        name: &RunName,
        id: &str,
        decision: Decision,
        comment: Option<&str>,
        by: &str,
    ) -> Result<()> {
        if !self.pending(id) {
            return Err(Error::precondition(
                "APPROVAL_NOT_PENDING",
                format!(
                    "{name} is not waiting for a decision on approval {}",
                    quote(id)
                ),
            ));
        }
        let message = match decision {
            Decision::Approve => "plan approved",
            Decision::Reject => "plan rejected",
        };
        self.decided(decision, comment, by, message)
    }

    /// Whether the pending approval expired before `now`.
    pub fn approval_expired(&self) -> bool {
        self.run.status == RunStatus::RequiresAction
            && self
                .run
                .approval
                .as_ref()
                .is_some_and(|a| a.decision.is_none() && a.expire_time < self.now)
    }

    /// An approval nobody decided in time is rejected by `expired`.
    pub fn expire_approval(&mut self) -> Result<()> {
        let message = "the plan expired without a decision";
        self.decided(Decision::Reject, None, "expired", message)
    }

    fn decided(
        &mut self,
        decision: Decision,
        comment: Option<&str>,
        by: &str,
        message: &str,
    ) -> Result<()> {
        let Some(mut approval) = self.run.approval.take() else {
            return Err(Error::internal("a decision without an approval"));
        };
        approval.decision = Some(decision);
        approval.comment = comment.map(str::to_owned);
        approval.decided_by = Some(by.to_owned());
        self.approval_decided(&approval);
        self.run.approval = Some(approval);
        self.status(RunStatus::Queued, StopReason::Unspecified, message)?;
        self.run.next_attempt_time = self.now;
        self.wake_queue();
        self.wake_run();
        Ok(())
    }
}
