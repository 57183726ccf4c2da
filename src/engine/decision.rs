//! What the engine answers: a decision with its reason, an id to correlate
//! it, and on request the list of what matched.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::model::RequestAttributes;

/// One authorization question. Borrowed: deciding allocates nothing.
pub struct Request<'a> {
    pub principal_id: &'a str,
    pub action: &'a str,
    pub scope: &'a str,
    pub data_action: bool,
    pub attributes: &'a dyn RequestAttributes,
    pub explain: bool,
    /// Answer without taking a use of an elevation grant: the caller only
    /// asks (explanations, operators' checks), it does not act.
    pub dry_run: bool,
}

impl Request<'_> {
    /// Whether this decision may take a use of an elevation grant.
    pub fn consumes_grants(&self) -> bool {
        !self.explain && !self.dry_run
    }
}

/// Serialised with the API's spelling (`ALLOW`…), as in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Allow,
    Deny,
    ApprovalRequired,
}

impl Verdict {
    /// Every verdict, in the order the API numbers them.
    pub const ALL: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::ApprovalRequired];

    /// The API's spelling, used in logs, metrics and audit too.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "ALLOW",
            Verdict::Deny => "DENY",
            Verdict::ApprovalRequired => "APPROVAL_REQUIRED",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step of docs/model.md#decision-order that decided. Serialised with
/// the API's spelling (`NEEDS_ELEVATION`…); the aliases read elevations
/// stored before that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    #[serde(alias = "RoleAssignment")]
    RoleAssignment,
    #[serde(alias = "ElevationGrant")]
    ElevationGrant,
    #[serde(alias = "KeyAccess")]
    KeyAccess,
    #[serde(alias = "NoMatchingAssignment")]
    NoMatchingAssignment,
    #[serde(alias = "DenyAssignment")]
    DenyAssignment,
    #[serde(alias = "OutOfAgentScope")]
    OutOfAgentScope,
    #[serde(alias = "ReviewModeWrite")]
    ReviewModeWrite,
    #[serde(alias = "NeedsElevation")]
    NeedsElevation,
    #[serde(alias = "UnknownPrincipal")]
    UnknownPrincipal,
    #[serde(alias = "LocalAuthDisabled")]
    LocalAuthDisabled,
    /// A role assignment's role covers the operation, but its condition
    /// (or its role's) does not hold for this request.
    #[serde(alias = "ConditionNotMet")]
    ConditionNotMet,
    /// rampart is frozen: every agent is denied until an admin unfreezes.
    #[serde(alias = "Frozen")]
    Frozen,
}

impl Reason {
    /// Every reason, in the order of the reasons table.
    pub const ALL: [Reason; 12] = [
        Reason::RoleAssignment,
        Reason::ElevationGrant,
        Reason::KeyAccess,
        Reason::NoMatchingAssignment,
        Reason::DenyAssignment,
        Reason::OutOfAgentScope,
        Reason::ReviewModeWrite,
        Reason::NeedsElevation,
        Reason::UnknownPrincipal,
        Reason::LocalAuthDisabled,
        Reason::ConditionNotMet,
        Reason::Frozen,
    ];

    /// The API's spelling, used in logs, metrics and audit too.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RoleAssignment => "ROLE_ASSIGNMENT",
            Reason::ElevationGrant => "ELEVATION_GRANT",
            Reason::KeyAccess => "KEY_ACCESS",
            Reason::NoMatchingAssignment => "NO_MATCHING_ASSIGNMENT",
            Reason::DenyAssignment => "DENY_ASSIGNMENT",
            Reason::OutOfAgentScope => "OUT_OF_AGENT_SCOPE",
            Reason::ReviewModeWrite => "REVIEW_MODE_WRITE",
            Reason::NeedsElevation => "NEEDS_ELEVATION",
            Reason::UnknownPrincipal => "UNKNOWN_PRINCIPAL",
            Reason::LocalAuthDisabled => "LOCAL_AUTH_DISABLED",
            Reason::ConditionNotMet => "CONDITION_NOT_MET",
            Reason::Frozen => "FROZEN",
        }
    }

    /// A sentence for people; static so the hot path does not format.
    pub fn message(self) -> &'static str {
        match self {
            Reason::RoleAssignment => "allowed by a role assignment",
            Reason::ElevationGrant => "allowed by an active elevation grant",
            Reason::KeyAccess => "allowed by an access key for this resource",
            Reason::NoMatchingAssignment => {
                "no role assignment grants this operation at this scope"
            }
            Reason::DenyAssignment => "a deny assignment blocks this operation",
            Reason::OutOfAgentScope => "the scope is outside the agent's managed scopes",
            Reason::ReviewModeWrite => {
                "the agent holds this write, but in Review mode a human must approve it"
            }
            Reason::NeedsElevation => "the agent lacks this permission; request elevation",
            Reason::UnknownPrincipal => "the principal is not in the snapshot",
            Reason::LocalAuthDisabled => "the resource has local (key) authentication disabled",
            Reason::ConditionNotMet => {
                "a role assignment covers this operation, but its condition does not hold for this request"
            }
            Reason::Frozen => {
                "rampart is frozen: every agent is denied until an admin unfreezes it"
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    RoleAssignment,
    DenyAssignment,
    AccessKey,
    AgentScope,
    /// An assignment whose role covers the operation but whose condition
    /// (on the assignment or on the role's block) does not hold.
    ConditionNotMet,
    /// An active elevation grant.
    Grant,
}

impl MatchKind {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::RoleAssignment => "MATCH_ROLE_ASSIGNMENT",
            MatchKind::DenyAssignment => "MATCH_DENY_ASSIGNMENT",
            MatchKind::AccessKey => "MATCH_ACCESS_KEY",
            MatchKind::AgentScope => "MATCH_AGENT_SCOPE",
            MatchKind::ConditionNotMet => "MATCH_CONDITION_NOT_MET",
            MatchKind::Grant => "MATCH_GRANT",
        }
    }
}

/// One thing that took part in a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub kind: MatchKind,
    /// Role assignment, deny assignment or access key id (or the agent id).
    pub id: String,
    pub role_id: String,
    pub role_name: String,
    pub scope: String,
    pub via_group: Option<String>,
    pub derived_from_agent: Option<String>,
    pub pattern: Option<String>,
    /// For `ConditionNotMet`: the condition that did not hold.
    pub condition: Option<String>,
}

impl Match {
    pub(crate) fn new(kind: MatchKind, id: &str, scope: &str) -> Match {
        Match {
            kind,
            id: id.to_owned(),
            role_id: String::new(),
            role_name: String::new(),
            scope: scope.to_owned(),
            via_group: None,
            derived_from_agent: None,
            pattern: None,
            condition: None,
        }
    }
}

/// A decision, borrowed from the snapshot it was taken on.
#[derive(Debug, Clone)]
pub struct Decision<'s> {
    pub verdict: Verdict,
    pub reason: Reason,
    pub read_only: bool,
    pub decision_id: DecisionId,
    pub snapshot_revision: &'s str,
    /// Filled only when the request asked to explain.
    pub matches: Vec<Match>,
}

/// A malformed request: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub field: &'static str,
    pub message: String,
}

impl RequestError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        RequestError {
            field,
            message: message.into(),
        }
    }
}

/// A 128-bit id unique per decision: a random per-thread prefix and a
/// per-thread counter, so minting one touches no shared cache line.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecisionId(pub u128);

impl DecisionId {
    pub fn next() -> DecisionId {
        thread_local! {
            static NEXT: Cell<u128> = Cell::new(thread_prefix());
        }
        NEXT.with(|next| {
            let id = next.get();
            next.set(id.wrapping_add(1));
            DecisionId(id)
        })
    }
}

/// High 64 bits: random per process, mixed with a thread sequence number,
/// so no two threads share them; the low 64 bits count decisions within the
/// thread.
fn thread_prefix() -> u128 {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static THREADS: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // Without an entropy source, fall back to the clock: ids stay
        // unique within the process through the thread sequence.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            bytes = nanos.to_le_bytes();
        }
        u64::from_le_bytes(bytes)
    });
    let thread = THREADS.fetch_add(1, Ordering::Relaxed);
    let high = process ^ thread.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // The counter starts at a scrambled point so ids do not read as a
    // sequence; it has 2^64 steps before it could reach another thread's.
    let low = high.rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (u128::from(high) << 64) | u128::from(low)
}

impl DecisionId {
    /// The id as text, on the stack (it goes on every answer).
    pub fn text(self) -> DecisionText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut bits = self.0;
        // Right to left, skipping the dashes of the 8-4-4-4-12 groups.
        for at in (0..36).rev() {
            if matches!(at, 8 | 13 | 18 | 23) {
                continue;
            }
            out[at] = HEX[(bits & 0xf) as usize];
            bits >>= 4;
        }
        DecisionText(out)
    }
}

/// A decision id's text: UUID-shaped, so log tooling recognises it.
#[derive(Clone, Copy)]
pub struct DecisionText([u8; 36]);

impl DecisionText {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl serde::Serialize for DecisionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Debug for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn decision_ids_are_unique_across_threads() {
        let ids: Vec<DecisionId> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1000).map(|_| DecisionId::next()).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let unique: HashSet<_> = ids.iter().map(|d| d.to_string()).collect();
        assert_eq!(unique.len(), 4000);
        assert_eq!(ids[0].to_string().len(), 36);
    }

    #[test]
    fn verdicts_and_reasons_serialise_as_the_api_spells_them() {
        for v in Verdict::ALL {
            let json = serde_json::to_string(&v).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(v.to_string(), v.as_str());
        }
        for r in Reason::ALL {
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            // Elevations stored before the API spelling still load.
            let old: Option<Reason> = serde_json::from_str(&format!("\"{r:?}\"")).ok();
            assert_eq!(old, Some(r));
            let new: Option<Reason> = serde_json::from_str(&json).ok();
            assert_eq!(new, Some(r));
        }
    }

    #[test]
    fn a_decision_id_serialises_as_its_text() {
        let id = DecisionId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(
            serde_json::to_string(&id).unwrap_or_default(),
            format!("\"{id}\"")
        );
        assert_eq!(id.to_string(), "01234567-89ab-cdef-0123-456789abcdef");
    }

    proptest::proptest! {
        /// The text is what formatting the groups in hex gives.
        #[test]
        fn the_text_is_the_bits_in_hex(bits in proptest::prelude::any::<u128>()) {
            let v = bits;
            let want = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                (v >> 96) as u32,
                (v >> 80) as u16,
                (v >> 64) as u16,
                (v >> 48) as u16,
                v & 0xffff_ffff_ffff
            );
            let text = DecisionId(bits).text();
            proptest::prop_assert_eq!(text.as_str(), want.as_str());
        }
    }
}
