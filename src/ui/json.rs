//! Elevations and grants as JSON, for the HTTP edges: the approvals page's
//! API and the webhook notifications (a CloudEvent's `data`). One shape
//! for both, with the enum spellings of the gRPC API (`PENDING`,
//! `NEEDS_ELEVATION`) and times in RFC 3339.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::elevation::{Elevation, Grant, GrantState};
use crate::proto as pb;
use crate::server::convert;

/// A time as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Whole seconds from `from` to `to`, 0 when `to` is earlier.
pub fn seconds_between(from: SystemTime, to: SystemTime) -> u64 {
    to.duration_since(from).unwrap_or_default().as_secs()
}

/// The state's one spelling, e.g. `PENDING`.
pub fn state_name(e: &Elevation) -> &'static str {
    convert::elevation_state(e.state).as_str_name()
}

fn duration_seconds(d: Duration) -> u64 {
    d.as_secs()
}

pub fn elevation(e: &Elevation) -> Value {
    json!({
        "id": e.id,
        "principalId": e.principal_id,
        "agentId": e.agent_id,
        "action": e.action,
        "scope": e.scope,
        "dataAction": e.data_action,
        "readOnly": e.read_only,
        "justification": e.justification,
        "attributes": e.attributes,
        "reason": e.reason.as_str(),
        "requestedDurationSeconds": duration_seconds(e.requested_duration),
        "state": state_name(e),
        "createdAt": rfc3339(e.created_at),
        "waitDeadline": rfc3339(e.wait_deadline),
        "resolvedAt": e.resolved_at.map(rfc3339),
        "resolvedBy": e.resolved_by,
        "comment": e.comment,
        "grant": e.grant.as_ref().map(grant),
        "waiters": e.waiters,
        "ticket": e.ticket,
        "requiredApprovals": e.required_approvals.max(1),
        "approvals": e.approvals.iter().map(|a| json!({
            "by": a.by,
            "at": rfc3339(a.at),
            "durationSeconds": a.duration.map(duration_seconds),
            "maxUses": a.max_uses,
            "comment": a.comment,
        })).collect::<Vec<_>>(),
        "request": e.request.as_ref().map(|r| json!({
            "method": r.method,
            "path": r.path,
            "digest": r.digest,
            "bodyPreview": r.body_preview,
        })),
        "shadow": e.shadow.iter().map(|v| json!({
            "rule": v.rule,
            "outcome": v.outcome.as_str(),
            "onBehalfOf": v.on_behalf_of,
        })).collect::<Vec<_>>(),
    })
}

pub fn grant(g: &Grant) -> Value {
    let state = match g.state {
        GrantState::Active => pb::GrantState::Active,
        GrantState::Ended => pb::GrantState::Ended,
    };
    json!({
        "id": g.id,
        "elevationId": g.elevation_id,
        "principalId": g.principal_id,
        "agentId": g.agent_id,
        "action": g.action,
        "scope": g.scope,
        "dataAction": g.data_action,
        "onBehalfOf": g.on_behalf_of,
        "coLenders": g.co_lenders,
        "requestDigest": g.request_digest,
        "attributes": g.attributes,
        "createdAt": rfc3339(g.created_at),
        "expiresAt": rfc3339(g.expires_at),
        "maxUses": g.max_uses,
        "uses": g.uses,
        "state": state.as_str_name(),
        "endedReason": g.ended_reason,
        "endedAt": g.ended_at.map(rfc3339),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elevation::ElevationState;
    use crate::engine::Reason;

    fn sample() -> Elevation {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        Elevation {
            id: "e1".into(),
            principal_id: "agent-r".into(),
            agent_id: "reviewer".into(),
            action: "Microsoft.Compute/virtualMachines/restart/action".into(),
            scope: "/subscriptions/1".into(),
            data_action: false,
            read_only: false,
            justification: "<b>why</b>".into(),
            attributes: Default::default(),
            reason: Reason::ReviewModeWrite,
            requested_duration: Duration::from_secs(900),
            state: ElevationState::Pending,
            created_at: t,
            wait_deadline: t + Duration::from_secs(300),
            resolved_at: None,
            resolved_by: None,
            comment: None,
            grant: None,
            ticket: None,
            required_approvals: 0,
            approvals: Vec::new(),
            shadow: Vec::new(),
            request: None,
            waiters: 1,
        }
    }

    #[test]
    fn enums_keep_their_one_spelling_and_times_are_rfc3339() {
        let v = elevation(&sample());
        assert_eq!(v["state"], "PENDING");
        assert_eq!(v["reason"], "REVIEW_MODE_WRITE");
        assert_eq!(v["createdAt"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["waitDeadline"], "2023-11-14T22:18:20.123Z");
        assert_eq!(v["requestedDurationSeconds"], 900);
        assert!(v["resolvedAt"].is_null());
        // Text is data: nothing is escaped or interpreted here.
        assert_eq!(v["justification"], "<b>why</b>");
    }

    #[test]
    fn seconds_between_never_goes_negative() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(seconds_between(t, t + Duration::from_secs(5)), 5);
        assert_eq!(seconds_between(t + Duration::from_secs(5), t), 0);
    }
}
