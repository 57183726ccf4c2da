//! How elevations resolve and grants live and end
//! (docs/agents-and-elevation.md#when-a-grant-ends): the records an
//! approval writes, and whether a grant is still supported by a snapshot,
//! expired or used up.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::elevation::types::new_id;
use crate::elevation::{Elevation, ElevationError, ElevationState, Grant, GrantState};
use crate::engine::Loaded;
use crate::model::{principal_key, Scope};

use super::{agent_by_id, allows, bounded};

/// Why a grant ended; its text is the grant's `ended_reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// Its `expires_at` passed.
    Expired,
    /// Its last use was taken.
    UsedUp,
    /// Revoked by a caller, with an optional comment (bounded).
    Revoked { by: String, comment: Option<String> },
    /// A snapshot no longer has the agent.
    AgentGone,
    /// A snapshot took the scope out of the agent's managed scopes, or gave
    /// the agent another identity.
    OutsideManagedScopes,
    /// A snapshot left the lender (`onBehalfOf`) without the operation.
    LenderLacks { lender: String },
}

impl EndReason {
    /// A revocation by `by`, keeping at most the first characters of the
    /// comment.
    pub fn revoked(by: &str, comment: Option<&str>) -> EndReason {
        EndReason::Revoked {
            by: by.to_owned(),
            comment: comment.map(bounded),
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Expired => f.write_str("expired"),
            EndReason::UsedUp => f.write_str("used up"),
            EndReason::Revoked { by, comment: None } => write!(f, "revoked by {by}"),
            EndReason::Revoked {
                by,
                comment: Some(c),
            } => write!(f, "revoked by {by}: {c}"),
            EndReason::AgentGone => f.write_str("the agent is no longer in the snapshot"),
            EndReason::OutsideManagedScopes => {
                f.write_str("the scope was removed from the agent's managed scopes")
            }
            EndReason::LenderLacks { lender } => {
                write!(f, "{lender} no longer holds the operation")
            }
        }
    }
}

/// As its text, the way `ended_reason` stores it.
impl serde::Serialize for EndReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Whether a snapshot still supports an active grant: its agent is still
/// there with the same identity, the scope is still inside the agent's
/// managed scopes, and the lender (`onBehalfOf`) still holds the operation
/// at the grant's scope with the elevation's attributes. Applied at every
/// snapshot swap and to grants restored at start. The engine also asks the
/// lender on every use, at the request's own scope and attributes, so a
/// grant never lends more than its lender holds even between swaps.
pub fn still_supported(loaded: &Loaded, g: &Grant) -> Result<(), EndReason> {
    let Some(agent) = agent_by_id(&loaded.snapshot, &g.agent_id) else {
        return Err(EndReason::AgentGone);
    };
    let inside = Scope::parse(&g.scope).is_ok_and(|s| {
        agent
            .managed_scopes
            .iter()
            .any(|m| s.is_structurally_within(m))
    });
    let same_identity = principal_key(&loaded.snapshot.tenant.principals[agent.principal].id)
        == principal_key(&g.principal_id);
    if !inside || !same_identity {
        return Err(EndReason::OutsideManagedScopes);
    }
    for lender in std::iter::once(&g.on_behalf_of).chain(&g.co_lenders) {
        if !allows(
            loaded,
            lender,
            &g.action,
            &g.scope,
            g.data_action,
            &g.attributes,
        ) {
            return Err(EndReason::LenderLacks {
                lender: lender.clone(),
            });
        }
    }
    Ok(())
}

/// Whether an active grant read back at start stays active: it has not
/// expired meanwhile and the snapshot serving now supports it.
pub fn restored(loaded: &Loaded, g: &Grant, now: SystemTime) -> Result<(), EndReason> {
    if g.expires_at <= now {
        return Err(EndReason::Expired);
    }
    still_supported(loaded, g)
}

/// Whether an active grant ends at `now` on its own: expiry first, then
/// its uses.
pub fn due(expires_at: SystemTime, used_up: bool, now: SystemTime) -> Option<EndReason> {
    if expires_at <= now {
        Some(EndReason::Expired)
    } else if used_up {
        Some(EndReason::UsedUp)
    } else {
        None
    }
}

/// The duration an approver grants: the requested one, or a shorter one
/// the approver asks for.
pub fn granted_duration(
    requested: Duration,
    asked: Option<Duration>,
) -> Result<Duration, ElevationError> {
    match asked {
        Some(d) if d > requested => Err(ElevationError::InvalidRequest {
            field: "duration",
            message: format!(
                "duration may only shorten the requested {}s",
                requested.as_secs()
            ),
        }),
        Some(d) => Ok(d),
        None => Ok(requested),
    }
}

/// The grant an approval of `elevation` lends: its exact operation, scope
/// and attributes, from `now` for `duration`.
pub fn new_grant(
    elevation: &Elevation,
    on_behalf_of: &str,
    duration: Duration,
    max_uses: u32,
    now: SystemTime,
) -> Grant {
    Grant {
        id: new_id(),
        elevation_id: elevation.id.clone(),
        principal_id: elevation.principal_id.clone(),
        agent_id: elevation.agent_id.clone(),
        action: elevation.action.clone(),
        scope: elevation.scope.clone(),
        data_action: elevation.data_action,
        on_behalf_of: on_behalf_of.to_owned(),
        co_lenders: Vec::new(),
        request_digest: None,
        attributes: elevation.attributes.clone(),
        created_at: now,
        expires_at: now + duration,
        max_uses,
        uses: 0,
        reserved_uses: next_reservation(max_uses, 0, 0).unwrap_or(0),
        state: GrantState::Active,
        ended_reason: None,
        ended_at: None,
    }
}

/// Moves `elevation` to a final `state` (with `grant` when approved),
/// resolved by `by` at `now`; nobody waits on it any longer.
pub fn resolve(
    elevation: &mut Elevation,
    state: ElevationState,
    grant: Option<Grant>,
    by: &str,
    comment: Option<&str>,
    now: SystemTime,
) {
    elevation.state = state;
    elevation.resolved_at = Some(now);
    elevation.resolved_by = Some(by.to_owned());
    elevation.comment = comment.map(bounded);
    if grant.is_some() {
        elevation.grant = grant;
    }
    elevation.waiters = 0;
}

/// The uses of a limited grant reserved in one durable write: a quarter of
/// `max_uses`, at least 8 (so a small grant is reserved whole, at once) and
/// at most 1,000 (what a crash can cost a large one).
pub fn reservation_block(max_uses: u32) -> u32 {
    (max_uses / 4).clamp(8, 1000).min(max_uses)
}

/// The reservation a limited grant should have after `uses` with
/// `reserved` reserved, when it needs a larger one: once half a block or
/// less is left, reserve a block ahead (never past `max_uses`). `None` for
/// an unlimited grant or one reserved enough.
pub fn next_reservation(max_uses: u32, uses: u32, reserved: u32) -> Option<u32> {
    if max_uses == 0 || reserved >= max_uses {
        return None;
    }
    let block = reservation_block(max_uses);
    let left = reserved.saturating_sub(uses);
    (left <= block / 2).then(|| uses.saturating_add(block).min(max_uses))
}

/// The uses a limited grant read back after a restart has taken, as far
/// as anyone can know: every reserved use counts, taken or not, so a crash
/// never lets a grant be used more than `max_uses` times.
pub fn uses_after_restart(g: &Grant) -> u32 {
    if g.max_uses == 0 {
        g.uses
    } else {
        g.uses.max(g.reserved_uses).min(g.max_uses)
    }
}

/// Ends `grant` at `now`.
pub fn end(grant: &mut Grant, reason: &EndReason, now: SystemTime) {
    grant.state = GrantState::Ended;
    grant.ended_reason = Some(reason.to_string());
    grant.ended_at = Some(now);
}

#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use super::*;

    fn grant(principal: &str, agent: &str, scope: &str, lender: &str) -> Grant {
        let e = elevation(principal, agent, RESTART, scope);
        new_grant(&e, lender, Duration::from_secs(60), 0, SystemTime::now())
    }

    #[test]
    fn reservations_run_a_block_ahead_and_never_past_max_uses() {
        assert_eq!(next_reservation(0, 5, 0), None, "unlimited needs none");
        // Small grants are reserved whole at once.
        assert_eq!(next_reservation(1, 0, 0), Some(1));
        assert_eq!(next_reservation(8, 0, 0), Some(8));
        assert_eq!(next_reservation(8, 7, 8), None);
        // 100 uses: blocks of 25, topped up once 12 or fewer are left.
        assert_eq!(next_reservation(100, 0, 0), Some(25));
        assert_eq!(next_reservation(100, 12, 25), None);
        assert_eq!(next_reservation(100, 13, 25), Some(38));
        assert_eq!(next_reservation(100, 90, 95), Some(100));
        assert_eq!(next_reservation(100, 99, 100), None);
        assert_eq!(reservation_block(1_000_000), 1000);
    }

    #[test]
    fn after_a_restart_every_reserved_use_counts_as_taken() {
        let mut g = grant(AGENT_R, "reviewer", VM, "oncall");
        g.max_uses = 100;
        g.uses = 10;
        g.reserved_uses = 25;
        assert_eq!(uses_after_restart(&g), 25);
        g.max_uses = 0;
        assert_eq!(uses_after_restart(&g), 10);
        let fresh = new_grant(
            &elevation(AGENT_R, "reviewer", RESTART, VM),
            "oncall",
            Duration::from_secs(60),
            3,
            SystemTime::now(),
        );
        assert_eq!(fresh.reserved_uses, 3, "an approval reserves ahead");
    }

    #[test]
    fn end_reasons_read_as_documented() {
        let texts: Vec<String> = [
            EndReason::Expired,
            EndReason::UsedUp,
            EndReason::revoked("oncall", None),
            EndReason::revoked("oncall", Some("done")),
            EndReason::AgentGone,
            EndReason::OutsideManagedScopes,
            EndReason::LenderLacks {
                lender: "oncall".into(),
            },
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            texts,
            [
                "expired",
                "used up",
                "revoked by oncall",
                "revoked by oncall: done",
                "the agent is no longer in the snapshot",
                "the scope was removed from the agent's managed scopes",
                "oncall no longer holds the operation",
            ]
        );
        let json = serde_json::to_string(&EndReason::UsedUp).unwrap_or_default();
        assert_eq!(json, "\"used up\"");
    }

    #[test]
    fn a_revocation_comment_is_bounded() {
        let long = "x".repeat(5000);
        let EndReason::Revoked { comment, .. } = EndReason::revoked("oncall", Some(&long)) else {
            panic!("not a revocation")
        };
        assert_eq!(comment.map(|c| c.len()), Some(super::super::MAX_TEXT));
    }

    #[test]
    fn a_grant_whose_lender_still_holds_the_operation_is_supported() {
        let loaded = loaded();
        assert_eq!(
            still_supported(&loaded, &grant(AGENT_R, "reviewer", VM, "oncall")),
            Ok(())
        );
    }

    #[test]
    fn a_snapshot_ends_the_grants_it_no_longer_supports() {
        let loaded = loaded();
        assert_eq!(
            still_supported(&loaded, &grant(AGENT_R, "gone", VM, "oncall")),
            Err(EndReason::AgentGone)
        );
        assert_eq!(
            still_supported(&loaded, &grant(AGENT_R, "reviewer", OTHER, "oncall")),
            Err(EndReason::OutsideManagedScopes)
        );
        // The agent id now names another identity.
        assert_eq!(
            still_supported(&loaded, &grant("agent-a", "reviewer", VM, "oncall")),
            Err(EndReason::OutsideManagedScopes)
        );
        assert_eq!(
            still_supported(&loaded, &grant(AGENT_R, "reviewer", VM, "viewer")),
            Err(EndReason::LenderLacks {
                lender: "viewer".into()
            })
        );
        // A deny assignment on the lender at the grant's scope.
        assert_eq!(
            still_supported(&loaded, &grant(AGENT_R, "reviewer", CRITICAL, "oncall")),
            Err(EndReason::LenderLacks {
                lender: "oncall".into()
            })
        );
    }

    #[test]
    fn the_agent_identity_compares_like_principal_ids() {
        let loaded = loaded();
        let g = grant(&AGENT_R.to_ascii_uppercase(), "reviewer", VM, "oncall");
        assert_eq!(still_supported(&loaded, &g), Ok(()));
    }

    #[test]
    fn the_lender_is_checked_with_the_elevations_attributes() {
        let loaded = loaded();
        let mut e = elevation(AGENT_R, "reviewer", ASSIGN, APP);
        let g = new_grant(&e, "strict", Duration::from_secs(60), 0, SystemTime::now());
        assert!(matches!(
            still_supported(&loaded, &g),
            Err(EndReason::LenderLacks { .. })
        ));
        e.attributes.insert(
            "Microsoft.Authorization/roleAssignments:RoleDefinitionId".into(),
            "acdd72a7-3385-48ef-bd42-f606fba81ae7".into(),
        );
        let g = new_grant(&e, "strict", Duration::from_secs(60), 0, SystemTime::now());
        assert_eq!(still_supported(&loaded, &g), Ok(()));
    }

    #[test]
    fn a_restored_grant_ends_when_it_expired_while_down() {
        let loaded = loaded();
        let g = grant(AGENT_R, "reviewer", VM, "oncall");
        assert_eq!(restored(&loaded, &g, g.created_at), Ok(()));
        assert_eq!(restored(&loaded, &g, g.expires_at), Err(EndReason::Expired));
        // Expiry is reported before what the snapshot says.
        let gone = grant(AGENT_R, "gone", VM, "oncall");
        assert_eq!(
            restored(&loaded, &gone, gone.expires_at),
            Err(EndReason::Expired)
        );
        assert_eq!(
            restored(&loaded, &gone, gone.created_at),
            Err(EndReason::AgentGone)
        );
    }

    #[test]
    fn a_grant_ends_at_its_expiry_or_its_last_use_expiry_first() {
        let now = SystemTime::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(due(later, false, now), None);
        assert_eq!(due(later, true, now), Some(EndReason::UsedUp));
        assert_eq!(due(now, false, now), Some(EndReason::Expired));
        assert_eq!(due(now, true, now), Some(EndReason::Expired));
    }

    #[test]
    fn an_approver_may_only_shorten_the_requested_duration() {
        let hour = Duration::from_secs(3600);
        assert_eq!(granted_duration(hour, None).ok(), Some(hour));
        let minute = Duration::from_secs(60);
        assert_eq!(granted_duration(hour, Some(minute)).ok(), Some(minute));
        let refused = granted_duration(minute, Some(hour));
        assert_eq!(
            refused.err().map(|e| e.to_string()).as_deref(),
            Some("duration: duration may only shorten the requested 60s")
        );
    }

    #[test]
    fn a_grant_lends_exactly_the_elevations_operation() {
        let mut e = elevation(AGENT_R, "reviewer", ASSIGN, APP);
        e.data_action = true;
        e.attributes.insert("k".into(), "v".into());
        let now = SystemTime::now();
        let g = new_grant(&e, "oncall", Duration::from_secs(90), 3, now);
        assert_eq!(
            (
                g.elevation_id.as_str(),
                g.principal_id.as_str(),
                g.agent_id.as_str(),
                g.action.as_str(),
                g.scope.as_str(),
                g.data_action,
                g.on_behalf_of.as_str(),
            ),
            ("e1", AGENT_R, "reviewer", ASSIGN, APP, true, "oncall")
        );
        assert_eq!(g.attributes, e.attributes);
        assert_eq!(g.expires_at, now + Duration::from_secs(90));
        assert_eq!((g.max_uses, g.uses, g.state), (3, 0, GrantState::Active));
        assert_ne!(g.id, new_grant(&e, "oncall", Duration::ZERO, 0, now).id);
    }

    #[test]
    fn resolving_and_ending_stamp_who_when_and_why() {
        let now = SystemTime::now();
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let g = new_grant(&e, "oncall", Duration::from_secs(60), 0, now);
        let long = "c".repeat(2000);
        resolve(
            &mut e,
            ElevationState::Approved,
            Some(g.clone()),
            "oncall",
            Some(&long),
            now,
        );
        assert_eq!(e.state, ElevationState::Approved);
        assert_eq!(
            (e.resolved_at, e.resolved_by.as_deref()),
            (Some(now), Some("oncall"))
        );
        assert_eq!(e.comment.map(|c| c.len()), Some(super::super::MAX_TEXT));
        assert_eq!(e.grant.map(|x| x.id), Some(g.id.clone()));
        assert_eq!(e.waiters, 0);

        let mut g = g;
        end(&mut g, &EndReason::revoked("oncall", Some("done")), now);
        assert_eq!(g.state, GrantState::Ended);
        assert_eq!(g.ended_reason.as_deref(), Some("revoked by oncall: done"));
        assert_eq!(g.ended_at, Some(now));
    }
}
