//! The elevation and grant events of the audit trail
//! (docs/operations.md#audit-log), as typed values: the same record goes to
//! the state store's `audit` table and to the `--audit-log` file.

use serde::Serialize;

use super::policy::lifecycle::EndReason;
use super::{Elevation, ElevationState, Grant};

/// What happened to an elevation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ElevationEventKind {
    #[serde(rename = "elevation.requested")]
    Requested,
    /// One approval of several needed; the elevation stays pending.
    #[serde(rename = "elevation.approval_recorded")]
    ApprovalRecorded,
    #[serde(rename = "elevation.approved")]
    Approved,
    #[serde(rename = "elevation.denied")]
    Denied,
    #[serde(rename = "elevation.expired")]
    Expired,
    #[serde(rename = "elevation.cancelled")]
    Cancelled,
}

impl ElevationEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ElevationEventKind::Requested => "elevation.requested",
            ElevationEventKind::ApprovalRecorded => "elevation.approval_recorded",
            ElevationEventKind::Approved => "elevation.approved",
            ElevationEventKind::Denied => "elevation.denied",
            ElevationEventKind::Expired => "elevation.expired",
            ElevationEventKind::Cancelled => "elevation.cancelled",
        }
    }

    /// The event of a resolution to `state` (`CANCELLED` for any state
    /// without an event of its own).
    pub fn resolved(state: ElevationState) -> Self {
        match state {
            ElevationState::Approved => ElevationEventKind::Approved,
            ElevationState::Denied => ElevationEventKind::Denied,
            ElevationState::Expired => ElevationEventKind::Expired,
            _ => ElevationEventKind::Cancelled,
        }
    }
}

/// `{"event":"elevation.…",…}`: an elevation as it stands after the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElevationEvent {
    pub event: ElevationEventKind,
    pub elevation_id: String,
    pub principal: String,
    pub agent: String,
    pub action: String,
    pub scope: String,
    pub data_action: bool,
    pub state: ElevationState,
    /// Who resolved it: an approver, `auto-approve:{agent}#{rule}` or
    /// `rampart`; none for a request.
    pub by: Option<String>,
    pub grant_id: Option<String>,
    /// The revision of the snapshot serving.
    pub revision: String,
}

impl ElevationEvent {
    pub fn new(event: ElevationEventKind, e: &Elevation, by: Option<&str>, revision: &str) -> Self {
        ElevationEvent {
            event,
            elevation_id: e.id.clone(),
            principal: e.principal_id.clone(),
            agent: e.agent_id.clone(),
            action: e.action.clone(),
            scope: e.scope.clone(),
            data_action: e.data_action,
            state: e.state,
            by: by.map(str::to_owned),
            grant_id: e.grant.as_ref().map(|g| g.id.clone()),
            revision: revision.to_owned(),
        }
    }
}

/// `{"event":"grant.ended",…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename = "grant.ended")]
pub struct GrantEnded {
    pub grant_id: String,
    pub principal: String,
    pub action: String,
    pub scope: String,
    pub on_behalf_of: String,
    pub reason: EndReason,
    pub revision: String,
}

impl GrantEnded {
    pub fn new(g: &Grant, reason: &EndReason, revision: &str) -> Self {
        GrantEnded {
            grant_id: g.id.clone(),
            principal: g.principal_id.clone(),
            action: g.action.clone(),
            scope: g.scope.clone(),
            on_behalf_of: g.on_behalf_of.clone(),
            reason: reason.clone(),
            revision: revision.to_owned(),
        }
    }
}

/// `{"event":"rampart.frozen",…}` or `rampart.unfrozen`: who set the
/// freeze switch and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FreezeEvent {
    pub event: &'static str,
    pub by: String,
    pub reason: String,
    pub revision: String,
}

impl FreezeEvent {
    pub fn new(frozen: bool, by: &str, reason: &str, revision: &str) -> Self {
        FreezeEvent {
            event: if frozen {
                "rampart.frozen"
            } else {
                "rampart.unfrozen"
            },
            by: by.to_owned(),
            reason: reason.to_owned(),
            revision: revision.to_owned(),
        }
    }
}

/// One entry of the audit trail, a JSON object with its `event` first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AuditEvent {
    Elevation(ElevationEvent),
    GrantEnded(GrantEnded),
    Freeze(FreezeEvent),
}

impl From<FreezeEvent> for AuditEvent {
    fn from(e: FreezeEvent) -> Self {
        AuditEvent::Freeze(e)
    }
}

impl From<ElevationEvent> for AuditEvent {
    fn from(e: ElevationEvent) -> Self {
        AuditEvent::Elevation(e)
    }
}

impl From<GrantEnded> for AuditEvent {
    fn from(e: GrantEnded) -> Self {
        AuditEvent::GrantEnded(e)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::policy::fixture::{elevation, AGENT_R, RESTART, VM};
    use super::super::policy::lifecycle::{new_grant, resolve};
    use super::*;

    #[test]
    fn an_elevation_event_is_one_flat_object_with_api_spellings() {
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let event = AuditEvent::from(ElevationEvent::new(
            ElevationEventKind::Requested,
            &e,
            None,
            "r1",
        ));
        let json = serde_json::to_string(&event).unwrap_or_default();
        assert_eq!(
            json,
            format!(
                r#"{{"event":"elevation.requested","elevation_id":"e1","principal":"{AGENT_R}","agent":"reviewer","action":"{RESTART}","scope":"{VM}","data_action":false,"state":"PENDING","by":null,"grant_id":null,"revision":"r1"}}"#
            )
        );
    }

    #[test]
    fn an_approval_names_its_approver_and_grant() {
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let now = SystemTime::now();
        let g = new_grant(&e, "oncall", Duration::from_secs(60), 0, now);
        resolve(
            &mut e,
            ElevationState::Approved,
            Some(g.clone()),
            "oncall",
            None,
            now,
        );
        let kind = ElevationEventKind::resolved(e.state);
        let value = serde_json::to_value(ElevationEvent::new(kind, &e, Some("oncall"), "r1"));
        let value = value.unwrap_or_default();
        assert_eq!(value["event"], "elevation.approved");
        assert_eq!(value["state"], "APPROVED");
        assert_eq!(value["by"], "oncall");
        assert_eq!(value["grant_id"], g.id.as_str());
    }

    #[test]
    fn each_resolution_has_its_event() {
        let kinds: Vec<&str> = ElevationState::ALL
            .into_iter()
            .map(|s| ElevationEventKind::resolved(s).as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "elevation.cancelled",
                "elevation.approved",
                "elevation.denied",
                "elevation.expired",
                "elevation.cancelled",
                "elevation.cancelled",
            ]
        );
        for kind in [
            ElevationEventKind::Requested,
            ElevationEventKind::Approved,
            ElevationEventKind::Denied,
            ElevationEventKind::Expired,
            ElevationEventKind::Cancelled,
        ] {
            let json = serde_json::to_string(&kind).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }

    #[test]
    fn a_grant_ending_says_why_in_words() {
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let g = new_grant(&e, "oncall", Duration::from_secs(60), 0, SystemTime::now());
        let event = AuditEvent::from(GrantEnded::new(&g, &EndReason::UsedUp, "r2"));
        let json = serde_json::to_string(&event).unwrap_or_default();
        assert_eq!(
            json,
            format!(
                r#"{{"event":"grant.ended","grant_id":"{}","principal":"{AGENT_R}","action":"{RESTART}","scope":"{VM}","on_behalf_of":"oncall","reason":"used up","revision":"r2"}}"#,
                g.id
            )
        );
    }
}
