//! What went wrong with an elevation call, said in the broker's terms; the
//! gRPC edge (`server::convert`) picks the status code for each.

use super::policy::approver::Refusal;
use super::{ElevationState, StoreError};
use crate::engine::{Reason, RequestError};

#[derive(Debug, thiserror::Error)]
pub enum ElevationError {
    /// The request itself is malformed.
    #[error("{field}: {message}")]
    InvalidRequest {
        field: &'static str,
        message: String,
    },
    /// Authorize denies the request: a denial cannot be elevated.
    #[error("Authorize denies this ({reason}): a denial cannot be elevated")]
    CannotElevate { reason: Reason },
    /// rampart is frozen: no elevation is filed or approved.
    #[error(
        "rampart is frozen (FROZEN): no elevation is filed or approved until an admin unfreezes it"
    )]
    Frozen,
    /// The principal asking is no agent's identity.
    #[error("only agents request elevation")]
    NotAnAgent { principal: String },
    /// An approver rule refused the caller.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// No elevation or grant with this id.
    #[error("no {what} {id}")]
    NotFound { what: &'static str, id: String },
    /// The elevation was resolved before this resolution.
    #[error("elevation {id} is {state} already")]
    AlreadyResolved { id: String, state: ElevationState },
    /// The caller's approval of this elevation is recorded already: an
    /// approver counts once however often it approves.
    #[error("{by} has approved elevation {id} already; it needs {required} distinct approvers and has {counted}")]
    AlreadyApproved {
        id: String,
        by: String,
        counted: u32,
        required: u32,
    },
    /// The grant ended before this revocation.
    #[error("grant {id} has ended already")]
    AlreadyEnded { id: String },
    /// The principal has too many elevations waiting.
    #[error("{principal} has {pending} pending elevations; the limit is {limit}")]
    TooManyPending {
        principal: String,
        pending: usize,
        limit: usize,
    },
    /// rampart holds as many pending elevations as it keeps.
    #[error("{pending} elevations are pending, the most rampart keeps (--max-pending-elevations {limit}); retry once some are resolved")]
    PendingLimit { pending: usize, limit: usize },
    /// The agent files new elevations faster than its limit.
    #[error("agent {agent} may file {per_minute} new elevations a minute (elevation.maxRequestsPerMinute); retry in {retry_after_secs}s")]
    RateLimited {
        agent: String,
        per_minute: u32,
        retry_after_secs: u64,
    },
    /// The elevation's agent left the snapshot.
    #[error("agent {agent} is no longer in the snapshot")]
    AgentGone { agent: String },
    /// The broker's own records went out of step (a bug, or the elevation
    /// was dropped while a caller waited on it).
    #[error("{0}")]
    Lost(&'static str),
    /// The state store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The longest piece of a caller's input an error message repeats.
pub const MAX_ECHO: usize = 128;

/// `text` as an error message may repeat it: at most [`MAX_ECHO`]
/// characters (then `…`), control characters escaped, so a caller cannot
/// fill a status message or forge lines in a log.
pub fn echo(text: &str) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX_ECHO {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl From<RequestError> for ElevationError {
    fn from(e: RequestError) -> Self {
        ElevationError::InvalidRequest {
            field: e.field,
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_input_is_bounded_and_escaped() {
        assert_eq!(echo("e1"), "e1");
        assert_eq!(echo("a\nb\u{7}"), "a\\nb\\u{7}");
        let long = "x".repeat(60_000);
        let echoed = echo(&long);
        assert_eq!(echoed.chars().count(), MAX_ECHO + 1);
        assert!(echoed.ends_with('…'));
    }

    #[test]
    fn messages_name_what_happened() {
        let cases = [
            (
                ElevationError::CannotElevate {
                    reason: Reason::DenyAssignment,
                },
                "Authorize denies this (DENY_ASSIGNMENT): a denial cannot be elevated",
            ),
            (
                ElevationError::NotAnAgent {
                    principal: "oncall".into(),
                },
                "only agents request elevation",
            ),
            (
                ElevationError::NotFound {
                    what: "grant",
                    id: "g1".into(),
                },
                "no grant g1",
            ),
            (
                ElevationError::AlreadyResolved {
                    id: "e1".into(),
                    state: ElevationState::Approved,
                },
                "elevation e1 is APPROVED already",
            ),
            (
                ElevationError::AlreadyEnded { id: "g1".into() },
                "grant g1 has ended already",
            ),
            (
                ElevationError::TooManyPending {
                    principal: "agent-r".into(),
                    pending: 100,
                    limit: 100,
                },
                "agent-r has 100 pending elevations; the limit is 100",
            ),
            (
                ElevationError::AgentGone {
                    agent: "reviewer".into(),
                },
                "agent reviewer is no longer in the snapshot",
            ),
            (
                Refusal::MayNotRevoke {
                    caller: "x".into(),
                    agent: "a".into(),
                }
                .into(),
                "x may not interact with agent a (rule a), so may not revoke its grants",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
