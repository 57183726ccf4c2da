//! Elevations and grants as the broker keeps them (docs/agents-and-elevation.md).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::policy::exact::ExactRequest;
use crate::engine::Reason;

/// Where an elevation stands. Serialised with the API's spelling
/// (`PENDING`…); the aliases read records written before that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ElevationState {
    #[serde(alias = "Pending")]
    Pending,
    #[serde(alias = "Approved")]
    Approved,
    #[serde(alias = "Denied")]
    Denied,
    #[serde(alias = "Expired")]
    Expired,
    #[serde(alias = "Cancelled")]
    Cancelled,
    #[serde(alias = "NotNeeded")]
    NotNeeded,
}

impl ElevationState {
    pub const ALL: [ElevationState; 6] = [
        ElevationState::Pending,
        ElevationState::Approved,
        ElevationState::Denied,
        ElevationState::Expired,
        ElevationState::Cancelled,
        ElevationState::NotNeeded,
    ];

    pub fn is_pending(self) -> bool {
        self == ElevationState::Pending
    }

    /// The API's spelling, used in logs, audit and messages too.
    pub fn as_str(self) -> &'static str {
        match self {
            ElevationState::Pending => "PENDING",
            ElevationState::Approved => "APPROVED",
            ElevationState::Denied => "DENIED",
            ElevationState::Expired => "EXPIRED",
            ElevationState::Cancelled => "CANCELLED",
            ElevationState::NotNeeded => "NOT_NEEDED",
        }
    }
}

impl fmt::Display for ElevationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request for approval and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Elevation {
    pub id: String,
    pub principal_id: String,
    pub agent_id: String,
    pub action: String,
    pub scope: String,
    pub data_action: bool,
    pub read_only: bool,
    pub justification: String,
    /// The request attributes the agent asked with (for ABAC conditions);
    /// approvers are checked with them.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Why approval was required (REVIEW_MODE_WRITE or NEEDS_ELEVATION).
    pub reason: Reason,
    pub requested_duration: Duration,
    pub state: ElevationState,
    pub created_at: SystemTime,
    pub wait_deadline: SystemTime,
    pub resolved_at: Option<SystemTime>,
    pub resolved_by: Option<String>,
    pub comment: Option<String>,
    pub grant: Option<Grant>,
    /// A ticket reference the agent gave with its justification; required
    /// when the matching approval policy says `requireTicket`.
    #[serde(default)]
    pub ticket: Option<String>,
    /// Distinct approvers the approval policy required when the elevation
    /// was filed (0 in records written before policies: one).
    #[serde(default)]
    pub required_approvals: u32,
    /// The approvals given so far, in order; once enough count, the
    /// elevation is approved and they stay as its record.
    #[serde(default)]
    pub approvals: Vec<ApprovalRecord>,
    /// What each shadow auto-approve rule would have done, decided when
    /// the elevation was filed.
    #[serde(default)]
    pub shadow: Vec<ShadowVerdict>,
    /// The HTTP request the elevation is for, when known (its body's
    /// digest is also the attribute `rampart:requestBodySha256`).
    #[serde(default)]
    pub request: Option<ExactRequest>,
    /// Callers waiting right now (not stored).
    #[serde(skip)]
    pub waiters: u32,
}

/// One approver's approval of an elevation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// The approver, as authenticated.
    pub by: String,
    pub at: SystemTime,
    /// A shorter duration the approver asked for.
    #[serde(default)]
    pub duration: Option<Duration>,
    /// 0 = unlimited.
    #[serde(default)]
    pub max_uses: u32,
    #[serde(default)]
    pub comment: Option<String>,
    /// Whether the approver asked to bind the grant to the request's body
    /// (`None`: the default).
    #[serde(default)]
    pub bind: Option<bool>,
}

/// What a shadow auto-approve rule would have done with an elevation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShadowOutcome {
    /// The rule would have approved it.
    WouldApprove,
    /// The rule matched but would not have approved it (its lender lacks
    /// the operation, or its `maxPerHour` was spent).
    WouldSkip,
}

impl ShadowOutcome {
    /// The API's spelling, used in metrics and reports too.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowOutcome::WouldApprove => "WOULD_APPROVE",
            ShadowOutcome::WouldSkip => "WOULD_SKIP",
        }
    }
}

/// One shadow rule's verdict on an elevation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowVerdict {
    /// The rule's index in the agent's `autoApprove` list.
    pub rule: usize,
    pub outcome: ShadowOutcome,
    /// Whose permission it would have lent.
    pub on_behalf_of: String,
}

/// Whether a grant still lends. Serialised as `ACTIVE`/`ENDED`; the
/// aliases read records written before that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GrantState {
    #[serde(alias = "Active")]
    Active,
    #[serde(alias = "Ended")]
    Ended,
}

impl GrantState {
    pub fn is_active(self) -> bool {
        self == GrantState::Active
    }

    /// The API's spelling, used in logs, audit and messages too.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Active => "ACTIVE",
            GrantState::Ended => "ENDED",
        }
    }
}

impl fmt::Display for GrantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an approval lends: the exact operation at a scope and below, for a
/// bounded time and, optionally, a bounded number of uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub elevation_id: String,
    pub principal_id: String,
    pub agent_id: String,
    pub action: String,
    pub scope: String,
    pub data_action: bool,
    pub on_behalf_of: String,
    /// The other approvers of an elevation that needed several: each must
    /// hold the operation too, on every use, as `on_behalf_of` must.
    #[serde(default)]
    pub co_lenders: Vec<String>,
    /// The attributes of the elevation it came from: the lender is checked
    /// with them when a snapshot swap or a restart re-checks the grant.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    /// 0 = unlimited.
    pub max_uses: u32,
    pub uses: u32,
    /// Bound to one request: only a request with this body digest (and the
    /// grant's exact operation and scope) may use the grant.
    #[serde(default)]
    pub request_digest: Option<String>,
    /// Of a limited grant, the uses durably reserved ahead of being taken;
    /// after a crash they all count as taken.
    #[serde(default)]
    pub reserved_uses: u32,
    pub state: GrantState,
    pub ended_reason: Option<String>,
    pub ended_at: Option<SystemTime>,
}

/// What an approver decides.
pub struct Approval<'a> {
    /// Shorter than requested, or the requested duration when `None`.
    pub duration: Option<Duration>,
    /// 0 = unlimited.
    pub max_uses: u32,
    pub comment: Option<&'a str>,
    /// Bind the grant to the elevation's request body (`None`: the
    /// default, bound for a write whose request is known).
    pub bind_to_request: Option<bool>,
}

/// A new id: 128 random bits, UUID-shaped.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: fall back to the clock and a counter, still
        // unique within this process.
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b[..8].copy_from_slice(&nanos.to_le_bytes());
        b[8..].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    crate::model::uuid_text(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialise_with_the_api_spelling_and_read_the_old_one() {
        for state in ElevationState::ALL {
            let json = serde_json::to_string(&state).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            let old = format!("\"{state:?}\"");
            let back: Option<ElevationState> = serde_json::from_str(&old).ok();
            assert_eq!(back, Some(state), "{old}");
        }
        for state in [GrantState::Active, GrantState::Ended] {
            let json = serde_json::to_string(&state).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            let back: Option<GrantState> = serde_json::from_str(&format!("\"{state:?}\"")).ok();
            assert_eq!(back, Some(state));
        }
    }

    #[test]
    fn an_unknown_state_does_not_decode() {
        assert!(serde_json::from_str::<ElevationState>("\"pending\"").is_err());
        assert!(serde_json::from_str::<GrantState>("\"LIVE\"").is_err());
    }
}
