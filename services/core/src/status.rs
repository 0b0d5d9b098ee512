//! The instance state machine of design §4 (docs/design.md):
//! IDLE → INITIALIZING → ACTIVE ⇄ BUSY; any live → ERROR; ERROR → INITIALIZING (restart);
//! any live → OFFLINE (heartbeat lapsed, server only; a heartbeat restores the previous
//! status); any → TERMINATED (final, DeleteInstance only).

use serde::{Deserialize, Serialize};

use crate::{Error, Reason, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceStatus {
    Idle,
    Initializing,
    Active,
    Busy,
    Error,
    Offline,
    Terminated,
}

impl InstanceStatus {
    pub const ALL: [Self; 7] = [
        Self::Idle,
        Self::Initializing,
        Self::Active,
        Self::Busy,
        Self::Error,
        Self::Offline,
        Self::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Initializing => "INITIALIZING",
            Self::Active => "ACTIVE",
            Self::Busy => "BUSY",
            Self::Error => "ERROR",
            Self::Offline => "OFFLINE",
            Self::Terminated => "TERMINATED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Live instances are the ones the heartbeat reaper watches.
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Offline | Self::Terminated)
    }

    /// Statuses a client may ask for with SetInstanceStatus.
    pub fn is_settable(self) -> bool {
        !matches!(self, Self::Offline | Self::Terminated)
    }

    /// Whether SetInstanceStatus may move an instance from `self` to `to`. Asking for the
    /// current status is allowed and changes nothing.
    pub fn can_become(self, to: Self) -> bool {
        use InstanceStatus::*;
        if self == to {
            return self.is_settable();
        }
        matches!(
            (self, to),
            (Idle, Initializing)
                | (Initializing, Active)
                | (Active, Busy)
                | (Busy, Active)
                | (Error, Initializing)
                | (Idle | Initializing | Active | Busy, Error)
        )
    }

    pub fn check_transition(self, to: Self) -> Result<()> {
        if !to.is_settable() {
            return Err(Error::invalid(
                "status",
                format!(
                    "{} cannot be set: OFFLINE follows a lapsed heartbeat and TERMINATED follows DeleteInstance",
                    to.as_str()
                ),
            ));
        }
        if self.can_become(to) {
            Ok(())
        } else {
            let mut err = Error::precondition(
                Reason::InvalidTransition,
                format!(
                    "an instance cannot go from {} to {}",
                    self.as_str(),
                    to.as_str()
                ),
            );
            if let Error::FailedPrecondition { metadata, .. } = &mut err {
                metadata.insert("from".into(), self.as_str().into());
                metadata.insert("to".into(), to.as_str().into());
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InstanceStatus::*;

    #[test]
    fn the_documented_path_is_allowed() {
        for (from, to) in [
            (Idle, Initializing),
            (Initializing, Active),
            (Active, Busy),
            (Busy, Active),
            (Busy, Error),
            (Error, Initializing),
        ] {
            assert!(from.check_transition(to).is_ok(), "{from:?} → {to:?}");
        }
    }

    #[test]
    fn skipping_steps_and_leaving_final_states_is_refused() {
        for (from, to) in [
            (Idle, Active),
            (Idle, Busy),
            (Active, Idle),
            (Terminated, Active),
            (Offline, Active),
            (Error, Active),
        ] {
            let err = from.check_transition(to).unwrap_err();
            assert_eq!(err.reason(), "INVALID_TRANSITION", "{from:?} → {to:?}");
        }
    }

    #[test]
    fn server_owned_statuses_cannot_be_requested() {
        assert_eq!(
            Active.check_transition(Offline).unwrap_err().reason(),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            Active.check_transition(Terminated).unwrap_err().reason(),
            "INVALID_ARGUMENT"
        );
    }
}
