//! Mapping between the engine's types and the protobuf messages, in one
//! place, so neither side leaks into the other.

use tonic::Status;

use crate::elevation::{
    ApprovalRecord, Elevation, ElevationError, ElevationState, Grant, GrantState, ShadowOutcome,
    ShadowVerdict,
};
use crate::engine::{self, Decision, MatchKind, Reason, RequestError, Verdict};
use crate::proto as pb;

/// Limits on the request's attribute map.
pub const MAX_ATTRIBUTES: usize = 64;
pub const MAX_ATTRIBUTE_BYTES: usize = 1024;

/// Checks a request's attribute map, the part of a request the engine does
/// not bound itself; the same limits for Authorize and RequestElevation.
pub fn check_attributes<S>(
    attributes: &std::collections::HashMap<String, String, S>,
) -> Result<(), RequestError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(RequestError::new(
            "attributes",
            format!(
                "attributes has {} entries; the limit is {MAX_ATTRIBUTES}",
                attributes.len()
            ),
        ));
    }
    for (k, v) in attributes {
        if k.is_empty() || k.len() > MAX_ATTRIBUTE_BYTES || v.len() > MAX_ATTRIBUTE_BYTES {
            return Err(RequestError::new(
                "attributes",
                format!("attributes keys must be non-empty and keys and values at most {MAX_ATTRIBUTE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// Puts a request body digest into a request's attributes, where grants
/// bound to one request look for it; a different digest already there is
/// refused.
pub fn put_digest(
    attributes: &mut std::collections::HashMap<String, String>,
    digest: &str,
) -> Result<(), RequestError> {
    let digest = crate::elevation::policy::exact::parse_digest(digest).map_err(|e| match e {
        ElevationError::InvalidRequest { field, message } => RequestError::new(field, message),
        other => RequestError::new("request_digest", other.to_string()),
    })?;
    let key = crate::elevation::policy::exact::DIGEST_ATTRIBUTE;
    if attributes
        .get(key)
        .is_some_and(|d| !d.eq_ignore_ascii_case(&digest))
    {
        return Err(RequestError::new(
            "request_digest",
            format!("request_digest differs from the attribute {key}; give one"),
        ));
    }
    attributes.insert(key.to_owned(), digest);
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
        dry_run: req.dry_run,
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
        Reason::ConditionNotMet => pb::Reason::ConditionNotMet,
        Reason::DenyAssignment => pb::Reason::DenyAssignment,
        Reason::OutOfAgentScope => pb::Reason::OutOfAgentScope,
        Reason::ReviewModeWrite => pb::Reason::ReviewModeWrite,
        Reason::NeedsElevation => pb::Reason::NeedsElevation,
        Reason::UnknownPrincipal => pb::Reason::UnknownPrincipal,
        Reason::LocalAuthDisabled => pb::Reason::LocalAuthDisabled,
        Reason::Frozen => pb::Reason::Frozen,
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
            MatchKind::Grant => pb::MatchKind::MatchGrant,
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

fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A protobuf duration as a std one; negative or absent is `None`.
pub fn std_duration(
    d: Option<&prost_types::Duration>,
    field: &'static str,
) -> Result<Option<std::time::Duration>, RequestError> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => Err(RequestError::new(
            field,
            format!("{field} must not be negative"),
        )),
        Some(d) => Ok(Some(std::time::Duration::new(
            d.seconds as u64,
            d.nanos as u32,
        ))),
    }
}

/// A state filter: `None` for every state; a number this server does not
/// know is refused, naming the field.
pub fn state_filter(value: i32) -> Result<Option<ElevationState>, Status> {
    let state = pb::ElevationState::try_from(value).map_err(|_| {
        let known: Vec<&str> = ElevationState::ALL.iter().map(|s| s.as_str()).collect();
        Status::invalid_argument(format!(
            "state: {value} is not an elevation state; use one of {} (or leave it unset for every state)",
            known.join(", ")
        ))
    })?;
    Ok(elevation_state_from(state))
}

/// The broker's state of an API state; `None` for UNSPECIFIED.
pub fn elevation_state_from(s: pb::ElevationState) -> Option<ElevationState> {
    match s {
        pb::ElevationState::Unspecified => None,
        pb::ElevationState::Pending => Some(ElevationState::Pending),
        pb::ElevationState::Approved => Some(ElevationState::Approved),
        pb::ElevationState::Denied => Some(ElevationState::Denied),
        pb::ElevationState::Expired => Some(ElevationState::Expired),
        pb::ElevationState::Cancelled => Some(ElevationState::Cancelled),
        pb::ElevationState::NotNeeded => Some(ElevationState::NotNeeded),
    }
}

pub fn elevation_state(s: ElevationState) -> pb::ElevationState {
    match s {
        ElevationState::Pending => pb::ElevationState::Pending,
        ElevationState::Approved => pb::ElevationState::Approved,
        ElevationState::Denied => pb::ElevationState::Denied,
        ElevationState::Expired => pb::ElevationState::Expired,
        ElevationState::Cancelled => pb::ElevationState::Cancelled,
        ElevationState::NotNeeded => pb::ElevationState::NotNeeded,
    }
}

pub fn elevation(e: &Elevation) -> pb::Elevation {
    pb::Elevation {
        id: e.id.clone(),
        principal_id: e.principal_id.clone(),
        agent_id: e.agent_id.clone(),
        action: e.action.clone(),
        scope: e.scope.clone(),
        data_action: e.data_action,
        read_only: e.read_only,
        justification: e.justification.clone(),
        reason: reason(e.reason) as i32,
        requested_duration: Some(duration(e.requested_duration)),
        state: elevation_state(e.state) as i32,
        created_at: Some(timestamp(e.created_at)),
        wait_deadline: Some(timestamp(e.wait_deadline)),
        resolved_at: e.resolved_at.map(timestamp),
        resolved_by: e.resolved_by.clone().unwrap_or_default(),
        comment: e.comment.clone().unwrap_or_default(),
        grant: e.grant.as_ref().map(grant),
        waiters: e.waiters,
        attributes: attributes(&e.attributes),
        ticket: e.ticket.clone().unwrap_or_default(),
        required_approvals: e.required_approvals.max(1),
        approvals: e.approvals.iter().map(approval_record).collect(),
        shadow: e.shadow.iter().map(shadow_verdict).collect(),
        request: e.request.as_ref().map(|r| pb::ExactRequest {
            method: r.method.clone(),
            path: r.path.clone(),
            digest: r.digest.clone(),
            body_preview: r.body_preview.clone().unwrap_or_default(),
        }),
    }
}

fn approval_record(a: &ApprovalRecord) -> pb::ApprovalRecord {
    pb::ApprovalRecord {
        by: a.by.clone(),
        at: Some(timestamp(a.at)),
        duration: a.duration.map(duration),
        max_uses: a.max_uses,
        comment: a.comment.clone().unwrap_or_default(),
    }
}

fn shadow_verdict(v: &ShadowVerdict) -> pb::ShadowVerdict {
    pb::ShadowVerdict {
        rule: v.rule as u32,
        outcome: match v.outcome {
            ShadowOutcome::WouldApprove => pb::ShadowOutcome::WouldApprove,
            ShadowOutcome::WouldSkip => pb::ShadowOutcome::WouldSkip,
        } as i32,
        on_behalf_of: v.on_behalf_of.clone(),
    }
}

pub fn grant(g: &Grant) -> pb::Grant {
    pb::Grant {
        id: g.id.clone(),
        elevation_id: g.elevation_id.clone(),
        principal_id: g.principal_id.clone(),
        agent_id: g.agent_id.clone(),
        action: g.action.clone(),
        scope: g.scope.clone(),
        data_action: g.data_action,
        on_behalf_of: g.on_behalf_of.clone(),
        created_at: Some(timestamp(g.created_at)),
        expires_at: Some(timestamp(g.expires_at)),
        max_uses: g.max_uses,
        uses: g.uses,
        state: match g.state {
            GrantState::Active => pb::GrantState::Active,
            GrantState::Ended => pb::GrantState::Ended,
        } as i32,
        ended_reason: g.ended_reason.clone().unwrap_or_default(),
        ended_at: g.ended_at.map(timestamp),
        attributes: attributes(&g.attributes),
        co_lenders: g.co_lenders.clone(),
        request_digest: g.request_digest.clone().unwrap_or_default(),
    }
}

fn attributes(
    map: &std::collections::BTreeMap<String, String>,
) -> std::collections::HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The gRPC status of each elevation error; the message is the error's
/// text (without the field name for a malformed request).
pub fn elevation_error(e: ElevationError) -> Status {
    match e {
        ElevationError::InvalidRequest { message, .. } => Status::invalid_argument(message),
        e @ (ElevationError::CannotElevate { .. }
        | ElevationError::Frozen
        | ElevationError::NotAnAgent { .. }
        | ElevationError::AlreadyResolved { .. }
        | ElevationError::AlreadyEnded { .. }
        | ElevationError::AlreadyApproved { .. }
        | ElevationError::AgentGone { .. }) => Status::failed_precondition(e.to_string()),
        ElevationError::Refused(refusal) => Status::permission_denied(refusal.to_string()),
        e @ ElevationError::NotFound { .. } => Status::not_found(e.to_string()),
        e @ (ElevationError::TooManyPending { .. }
        | ElevationError::PendingLimit { .. }
        | ElevationError::RateLimited { .. }) => Status::resource_exhausted(e.to_string()),
        e @ (ElevationError::Lost(_) | ElevationError::Store(_)) => {
            Status::unavailable(e.to_string())
        }
    }
}

/// A status code's one spelling, e.g. `PERMISSION_DENIED`, as gRPC names it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
