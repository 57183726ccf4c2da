//! Mapping between the engine's types and the protobuf messages, in one
//! place, so neither side leaks into the other.

use tonic::Status;

use crate::engine::{self, Decision, MatchKind, Reason, RequestError, Verdict};
use crate::proto as pb;

/// Limits on the request's attribute map.
pub const MAX_ATTRIBUTES: usize = 64;
pub const MAX_ATTRIBUTE_BYTES: usize = 1024;

/// Checks the parts of an `AuthorizeRequest` the engine does not see.
pub fn check_attributes(req: &pb::AuthorizeRequest) -> Result<(), RequestError> {
    if req.attributes.len() > MAX_ATTRIBUTES {
        return Err(RequestError::new(
            "attributes",
            format!(
                "attributes has {} entries; the limit is {MAX_ATTRIBUTES}",
                req.attributes.len()
            ),
        ));
    }
    for (k, v) in &req.attributes {
        if k.is_empty() || k.len() > MAX_ATTRIBUTE_BYTES || v.len() > MAX_ATTRIBUTE_BYTES {
            return Err(RequestError::new(
                "attributes",
                format!("attributes keys must be non-empty and keys and values at most {MAX_ATTRIBUTE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// Borrows an engine request from a protobuf one.
pub fn request(req: &pb::AuthorizeRequest) -> engine::Request<'_> {
    engine::Request {
        principal_id: &req.principal_id,
        action: &req.action,
        scope: &req.scope,
        data_action: req.data_action,
        attributes: &req.attributes,
        explain: req.explain,
    }
}

pub fn invalid_argument(e: RequestError) -> Status {
    Status::invalid_argument(e.message)
}

pub fn response(d: Decision<'_>) -> pb::AuthorizeResponse {
    pb::AuthorizeResponse {
        decision: verdict(d.verdict) as i32,
        reason: reason(d.reason) as i32,
        message: d.reason.message().to_owned(),
        read_only: d.read_only,
        decision_id: d.decision_id.to_string(),
        snapshot_revision: d.snapshot_revision.to_owned(),
        matches: d.matches.into_iter().map(match_).collect(),
    }
}

fn verdict(v: Verdict) -> pb::Decision {
    match v {
        Verdict::Allow => pb::Decision::Allow,
        Verdict::Deny => pb::Decision::Deny,
        Verdict::ApprovalRequired => pb::Decision::ApprovalRequired,
    }
}

pub fn reason(r: Reason) -> pb::Reason {
    match r {
        Reason::RoleAssignment => pb::Reason::RoleAssignment,
        Reason::ElevationGrant => pb::Reason::ElevationGrant,
        Reason::KeyAccess => pb::Reason::KeyAccess,
        Reason::NoMatchingAssignment => pb::Reason::NoMatchingAssignment,
        Reason::DenyAssignment => pb::Reason::DenyAssignment,
        Reason::OutOfAgentScope => pb::Reason::OutOfAgentScope,
        Reason::ReviewModeWrite => pb::Reason::ReviewModeWrite,
        Reason::NeedsElevation => pb::Reason::NeedsElevation,
        Reason::UnknownPrincipal => pb::Reason::UnknownPrincipal,
        Reason::LocalAuthDisabled => pb::Reason::LocalAuthDisabled,
    }
}

fn match_(m: engine::Match) -> pb::Match {
    pb::Match {
        kind: match m.kind {
            MatchKind::RoleAssignment => pb::MatchKind::MatchRoleAssignment,
            MatchKind::DenyAssignment => pb::MatchKind::MatchDenyAssignment,
            MatchKind::AccessKey => pb::MatchKind::MatchAccessKey,
            MatchKind::AgentScope => pb::MatchKind::MatchAgentScope,
            MatchKind::ConditionNotMet => pb::MatchKind::MatchConditionNotMet,
        } as i32,
        id: m.id,
        role_id: m.role_id,
        role_name: m.role_name,
        scope: m.scope,
        via_group: m.via_group.unwrap_or_default(),
        derived_from_agent: m.derived_from_agent.unwrap_or_default(),
        pattern: m.pattern.unwrap_or_default(),
        condition: m.condition.unwrap_or_default(),
    }
}
