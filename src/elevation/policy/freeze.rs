//! The freeze switch (docs/agents-and-elevation.md#freeze): who froze
//! rampart, why and since when, and what a freeze asks of its caller. While
//! frozen every agent decision is DENY with reason FROZEN (the engine's
//! check), pending elevations are cancelled, new ones are refused, nothing
//! is approved (by people or auto-approve), and grants stay, unused: they
//! count again at unfreeze if they have not expired meanwhile.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::elevation::ElevationError;

/// The longest `reason` a freeze or unfreeze keeps.
pub const MAX_REASON: usize = 1024;

/// The switch as last set, durable in the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeState {
    pub frozen: bool,
    /// Who set it (the admin token's principal).
    pub by: String,
    pub reason: String,
    /// When it was set, in ms since the Unix epoch.
    pub since_ms: i64,
}

impl FreezeState {
    /// Never frozen.
    pub fn thawed() -> FreezeState {
        FreezeState {
            frozen: false,
            by: String::new(),
            reason: String::new(),
            since_ms: 0,
        }
    }

    pub fn new(frozen: bool, by: &str, reason: &str, at: SystemTime) -> FreezeState {
        FreezeState {
            frozen,
            by: by.to_owned(),
            reason: reason.to_owned(),
            since_ms: at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }

    /// The comment on each elevation a freeze cancels.
    pub fn cancel_comment(&self) -> String {
        format!("rampart was frozen by {}: {}", self.by, self.reason)
    }
}

/// A freeze or unfreeze says why: a non-empty reason of at most
/// [`MAX_REASON`] characters, kept in the audit trail.
pub fn check_reason(reason: &str) -> Result<(), ElevationError> {
    let invalid = |message: String| ElevationError::InvalidRequest {
        field: "reason",
        message,
    };
    if reason.trim().is_empty() {
        return Err(invalid(
            "reason is required: say why (it is written to the audit trail)".to_owned(),
        ));
    }
    let length = reason.chars().count();
    if length > MAX_REASON {
        return Err(invalid(format!(
            "reason has {length} characters; at most {MAX_REASON}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_required_and_bounded() {
        assert!(check_reason("incident 42").is_ok());
        for bad in ["", "   "] {
            let e = check_reason(bad).unwrap_err().to_string();
            assert!(e.starts_with("reason: reason is required"), "{e}");
        }
        let e = check_reason(&"x".repeat(MAX_REASON + 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 1024"), "{e}");
        assert!(check_reason(&"é".repeat(MAX_REASON)).is_ok());
    }

    #[test]
    fn the_state_round_trips_and_names_who_and_why() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let s = FreezeState::new(true, "oncall", "incident 42", at);
        assert_eq!(s.since_ms, 1_700_000_000_123);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<FreezeState>(&json).unwrap(), s);
        assert_eq!(
            s.cancel_comment(),
            "rampart was frozen by oncall: incident 42"
        );
        assert!(!FreezeState::thawed().frozen);
    }
}
