//! Approval policies (docs/agents-and-elevation.md#approval-policies): for
//! the elevations a policy matches, how many distinct approvers must
//! approve, which principals may count, whether a ticket is required and
//! how long the grant may last. No matching policy means today's rule: one
//! approver passing the approver rules.
//!
//! Every approval is checked against the approver rules (a)–(c) when it is
//! given, and all of them again when the last one arrives (a snapshot may
//! have changed in between); the grant then names every counted approver,
//! and each must hold the operation on every use.

use std::time::Duration;

use crate::elevation::{ApprovalRecord, Elevation, ElevationError};
use crate::engine::Loaded;
use crate::model::{principal_key, Agent, ApprovalPolicy, Scope};
use crate::snapshot::{CompiledSnapshot, Position, PrincipalIx};

use super::approver::{may_approve, Refusal};
use super::exact;
use super::lifecycle::granted_duration;

/// The longest ticket reference kept.
pub const MAX_TICKET: usize = 256;

/// What the approval policy asks of one elevation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement<'a> {
    /// The matching policy's index in `approvalPolicies`; `None`: the
    /// default.
    pub policy: Option<usize>,
    /// Distinct approvers needed.
    pub required: u32,
    /// Who may count (principal indices, groups included); empty: anyone
    /// passing the approver rules.
    pub approvers: &'a [usize],
    pub require_ticket: bool,
    pub max_duration: Option<Duration>,
}

impl Requirement<'_> {
    /// One approver, anyone, no ticket: an agent without policies.
    pub const DEFAULT: Requirement<'static> = Requirement {
        policy: None,
        required: 1,
        approvers: &[],
        require_ticket: false,
        max_duration: None,
    };
}

/// Whether `policy` covers the operation at `scope` on this plane. A scope
/// that does not parse is covered only by policies naming no scopes.
pub fn matches(policy: &ApprovalPolicy, action: &str, scope: &str, data_action: bool) -> bool {
    let in_scope = policy.scopes.is_empty()
        || Scope::parse(scope)
            .is_ok_and(|s| policy.scopes.iter().any(|p| s.is_structurally_within(p)));
    policy.actions.iter().any(|p| p.matches(action))
        && in_scope
        && policy.data_action.is_none_or(|d| d == data_action)
}

/// The requirement of the first of `agent`'s policies that matches.
pub fn requirement<'a>(
    agent: &'a Agent,
    action: &str,
    scope: &str,
    data_action: bool,
) -> Requirement<'a> {
    agent
        .elevation
        .approval_policies
        .iter()
        .enumerate()
        .find(|(_, p)| matches(p, action, scope, data_action))
        .map_or(Requirement::DEFAULT, |(i, p)| Requirement {
            policy: Some(i),
            required: p.required.max(1),
            approvers: &p.approvers,
            require_ticket: p.require_ticket,
            max_duration: p.max_duration,
        })
}

/// The requirement for `elevation` now: the matching policy of the
/// snapshot serving, never fewer approvers than were required when it was
/// filed (a reload cannot lower the bar of a pending elevation).
pub fn requirement_of<'a>(agent: &'a Agent, elevation: &Elevation) -> Requirement<'a> {
    let mut r = requirement(
        agent,
        &elevation.action,
        &elevation.scope,
        elevation.data_action,
    );
    r.required = r.required.max(elevation.required_approvals);
    r
}

/// A ticket reference as given: `None` when blank; at most [`MAX_TICKET`]
/// characters and no control characters; required when `required`.
pub fn check_ticket(ticket: &str, required: bool) -> Result<Option<String>, ElevationError> {
    let ticket = ticket.trim();
    if ticket.is_empty() {
        if required {
            return Err(ElevationError::InvalidRequest {
                field: "ticket",
                message: "the agent's approval policy requires a ticket reference (e.g. CHG-1234) alongside the justification".into(),
            });
        }
        return Ok(None);
    }
    if ticket.chars().count() > MAX_TICKET {
        return Err(ElevationError::InvalidRequest {
            field: "ticket",
            message: format!("ticket is longer than {MAX_TICKET} characters"),
        });
    }
    if ticket.chars().any(char::is_control) {
        return Err(ElevationError::InvalidRequest {
            field: "ticket",
            message: "ticket contains a control character".into(),
        });
    }
    Ok(Some(ticket.to_owned()))
}

/// Whether `caller` is one of `approvers`, itself or through a group.
/// Anyone is, when the list is empty.
pub fn is_listed(snapshot: &CompiledSnapshot, approvers: &[usize], caller: &str) -> bool {
    if approvers.is_empty() {
        return true;
    }
    let Some(p) = snapshot.principal(caller) else {
        return false;
    };
    approvers.iter().any(|&a| {
        let a = PrincipalIx::at(a);
        a == p || snapshot.groups[p].binary_search(&a).is_ok()
    })
}

/// Rules (c), (a), (b), then the policy's approvers list and ticket, for
/// `caller` approving `elevation` of `agent` now.
pub fn may_count(
    loaded: &Loaded,
    agent: &Agent,
    elevation: &Elevation,
    requirement: &Requirement<'_>,
    caller: &str,
) -> Result<(), Refusal> {
    may_approve(loaded, caller, agent, elevation)?;
    if !is_listed(&loaded.snapshot, requirement.approvers, caller) {
        let tenant = &loaded.snapshot.tenant;
        return Err(Refusal::NotAnApprover {
            caller: caller.to_owned(),
            agent: agent.id.clone(),
            approvers: requirement
                .approvers
                .iter()
                .map(|&i| tenant.principals[i].id.clone())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if requirement.require_ticket && elevation.ticket.is_none() {
        return Err(Refusal::TicketRequired {
            agent: agent.id.clone(),
        });
    }
    Ok(())
}

/// Whether `caller` has approved `elevation` already (principal ids
/// compared as Authorize compares them).
pub fn has_approved(elevation: &Elevation, caller: &str) -> bool {
    let key = principal_key(caller);
    elevation
        .approvals
        .iter()
        .any(|a| principal_key(&a.by) == key)
}

/// The approvals that count now: the first of each distinct approver,
/// each still passing [`may_count`] against the snapshot serving.
pub fn counted<'e>(
    loaded: &Loaded,
    agent: &Agent,
    elevation: &'e Elevation,
    requirement: &Requirement<'_>,
) -> Vec<&'e ApprovalRecord> {
    let mut out: Vec<&ApprovalRecord> = Vec::with_capacity(elevation.approvals.len());
    for a in &elevation.approvals {
        let key = principal_key(&a.by);
        if out.iter().any(|c| principal_key(&c.by) == key) {
            continue;
        }
        if may_count(loaded, agent, elevation, requirement, &a.by).is_ok() {
            out.push(a);
        }
    }
    out
}

/// What the grant of a fully approved elevation lends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// Whose permission the grant lends: the first approver...
    pub on_behalf_of: String,
    /// ...and every other one, each checked on every use.
    pub co_lenders: Vec<String>,
    /// The shortest any approver asked for, within the policy's maximum.
    pub duration: Duration,
    /// The fewest uses any approver allowed (0 = unlimited); once, for a
    /// grant bound to the request that no approver gave a number.
    pub max_uses: u32,
    /// The body digest the grant is bound to: the elevation's request,
    /// when any approver bound it (by default, for a write).
    pub request_digest: Option<String>,
}

/// What an approval leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not enough approvals count yet: the elevation stays pending.
    Wait { counted: u32, required: u32 },
    /// Enough do: approve with these terms.
    Grant(Terms),
}

/// The duration `asked` of an elevation, within the requested one and the
/// policy's maximum.
pub fn approved_duration(
    elevation: &Elevation,
    requirement: &Requirement<'_>,
    asked: Option<Duration>,
) -> Result<Duration, ElevationError> {
    let granted = granted_duration(elevation.requested_duration, asked)?;
    Ok(requirement.max_duration.map_or(granted, |m| m.min(granted)))
}

/// The next step for `elevation` with the approvals it has (the new one
/// included).
pub fn next_step(
    loaded: &Loaded,
    agent: &Agent,
    elevation: &Elevation,
    requirement: &Requirement<'_>,
) -> Step {
    let counted = counted(loaded, agent, elevation, requirement);
    let required = requirement.required.max(1);
    let (Some(first), true) = (counted.first(), counted.len() as u32 >= required) else {
        return Step::Wait {
            counted: counted.len() as u32,
            required,
        };
    };
    let mut duration = Duration::MAX;
    for a in &counted {
        // Each asked duration was checked when given; a failure here means
        // the record was edited, and the shortest bound wins.
        let d = approved_duration(elevation, requirement, a.duration).unwrap_or(Duration::ZERO);
        duration = duration.min(d);
    }
    let known = elevation.request.is_some();
    let bound = counted.iter().any(|a| {
        // Each choice was checked when given; an edited one binds.
        exact::binds(a.bind, known, elevation.read_only).unwrap_or(true)
    });
    let request_digest = elevation
        .request
        .as_ref()
        .filter(|_| bound)
        .map(|r| r.digest.clone());
    let max_uses = counted
        .iter()
        .map(|a| a.max_uses)
        .filter(|&n| n != 0)
        .min()
        .unwrap_or(if request_digest.is_some() { 1 } else { 0 });
    Step::Grant(Terms {
        on_behalf_of: first.by.clone(),
        co_lenders: counted[1..].iter().map(|a| a.by.clone()).collect(),
        duration,
        max_uses,
        request_digest,
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::super::agent_by_id;
    use super::super::fixture::*;
    use super::*;

    /// The policy fixture with two approval policies on the reviewer:
    /// role assignments need two approvers of the `admins` group and a
    /// ticket, for at most 10 minutes; restarts on `app` need two of
    /// `oncall`, `oncall2`, `viewer`.
    fn policies() -> Loaded {
        let yaml = SNAPSHOT
            .replace(
                "  - { id: strict, type: User }\n",
                "  - { id: strict, type: User }\n  - { id: oncall2, type: User, memberOf: [admins] }\n  - { id: admins, type: Group }\n",
            )
            .replace(
                "roleAssignments:\n",
                "roleAssignments:\n  - { id: ra-oncall2-app, principal: oncall2, role: Owner, scope: /subscriptions/s1/resourceGroups/app }\n  - { id: ra-oncall2-agents, principal: oncall2, role: Contributor, scope: /subscriptions/s1/resourceGroups/agents }\n",
            )
            .replace(
                "    executionMode: Review\n",
                "    executionMode: Review\n    elevation:\n      approvalPolicies:\n        - actions: [\"Microsoft.Authorization/*\"]\n          required: 2\n          approvers: [admins, oncall]\n          requireTicket: true\n          maxDuration: 10m\n        - actions: [\"Microsoft.Compute/virtualMachines/restart/action\"]\n          scopes: [/subscriptions/s1/resourceGroups/app]\n          dataAction: false\n          required: 2\n          approvers: [oncall, oncall2, viewer]\n",
            );
        loaded_from(&yaml)
    }

    fn reviewer(loaded: &Loaded) -> &Agent {
        agent_by_id(&loaded.snapshot, "reviewer").unwrap_or_else(|| panic!("no reviewer"))
    }

    fn approval(by: &str) -> ApprovalRecord {
        ApprovalRecord {
            by: by.into(),
            at: SystemTime::now(),
            duration: None,
            max_uses: 0,
            comment: None,
            bind: None,
        }
    }

    #[test]
    fn without_a_matching_policy_one_approver_suffices() {
        let loaded = loaded();
        let agent = reviewer(&loaded);
        assert_eq!(requirement(agent, RESTART, VM, false), Requirement::DEFAULT);
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        e.approvals.push(approval("oncall"));
        let step = next_step(&loaded, agent, &e, &Requirement::DEFAULT);
        assert_eq!(
            step,
            Step::Grant(Terms {
                on_behalf_of: "oncall".into(),
                co_lenders: vec![],
                duration: e.requested_duration,
                max_uses: 0,
                request_digest: None,
            })
        );
    }

    #[test]
    fn the_first_policy_matching_operation_scope_and_plane_applies() {
        let loaded = policies();
        let agent = reviewer(&loaded);
        let assign = requirement(agent, ASSIGN, APP, false);
        assert_eq!(assign.policy, Some(0));
        assert!(assign.require_ticket);
        assert_eq!(assign.max_duration, Some(Duration::from_secs(600)));
        assert_eq!(requirement(agent, RESTART, VM, false).policy, Some(1));
        // Outside the policy's scopes, or on the data plane: the default.
        assert_eq!(requirement(agent, RESTART, OTHER, false).policy, None);
        assert_eq!(requirement(agent, RESTART, VM, true).policy, None);
        assert_eq!(
            requirement(agent, RESTART, "not a scope", false).policy,
            None
        );
    }

    #[test]
    fn a_pending_elevation_keeps_the_bar_it_was_filed_with() {
        let loaded = loaded();
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        e.required_approvals = 3;
        assert_eq!(requirement_of(reviewer(&loaded), &e).required, 3);
    }

    #[test]
    fn two_distinct_approvers_are_needed_and_the_same_one_twice_counts_once() {
        let loaded = policies();
        let agent = reviewer(&loaded);
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let r = requirement_of(agent, &e);
        e.approvals.push(approval("oncall"));
        assert_eq!(
            next_step(&loaded, agent, &e, &r),
            Step::Wait {
                counted: 1,
                required: 2
            }
        );
        assert!(has_approved(&e, "oncall"));
        e.approvals.push(approval("oncall"));
        assert_eq!(
            next_step(&loaded, agent, &e, &r),
            Step::Wait {
                counted: 1,
                required: 2
            }
        );
        e.approvals.push(approval("oncall2"));
        let Step::Grant(terms) = next_step(&loaded, agent, &e, &r) else {
            panic!("not granted")
        };
        assert_eq!(terms.on_behalf_of, "oncall");
        assert_eq!(terms.co_lenders, ["oncall2"]);
    }

    #[test]
    fn the_agents_own_identity_never_counts() {
        let loaded = policies();
        let agent = reviewer(&loaded);
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let r = requirement_of(agent, &e);
        assert!(matches!(
            may_count(&loaded, agent, &e, &r, AGENT_R),
            Err(Refusal::SelfApproval { .. })
        ));
        e.approvals.push(approval("oncall"));
        e.approvals.push(approval(&AGENT_R.to_ascii_uppercase()));
        assert_eq!(
            next_step(&loaded, agent, &e, &r),
            Step::Wait {
                counted: 1,
                required: 2
            }
        );
    }

    #[test]
    fn an_approver_outside_the_list_is_refused_even_holding_the_operation() {
        let loaded = policies();
        let agent = reviewer(&loaded);
        let e = elevation(AGENT_R, "reviewer", ASSIGN, APP);
        let mut e = Elevation {
            ticket: Some("CHG-1".into()),
            ..e
        };
        let r = requirement_of(agent, &e);
        // `strict` may interact and (with the right attribute) holds the
        // operation, but is not an approver of this policy.
        e.attributes.insert(
            "Microsoft.Authorization/roleAssignments:RoleDefinitionId".into(),
            "acdd72a7-3385-48ef-bd42-f606fba81ae7".into(),
        );
        let refusal = may_count(&loaded, agent, &e, &r, "strict");
        assert_eq!(
            refusal.err().map(|r| r.to_string()).as_deref(),
            Some("strict is not among the approvers of agent reviewer's approval policy for this operation (admins, oncall)")
        );
        // A member of a listed group counts.
        assert_eq!(may_count(&loaded, agent, &e, &r, "oncall2"), Ok(()));
    }

    #[test]
    fn approvers_must_still_pass_the_approver_rules() {
        let loaded = policies();
        let agent = reviewer(&loaded);
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let r = requirement_of(agent, &e);
        // Listed, but holds only Reader: rule (b).
        assert!(matches!(
            may_count(&loaded, agent, &e, &r, "viewer"),
            Err(Refusal::DoesNotHold { .. })
        ));
        // Listed, but denied the restart on this VM.
        let critical = elevation(AGENT_R, "reviewer", RESTART, CRITICAL);
        assert!(may_count(&loaded, agent, &critical, &r, "oncall").is_err());
    }

    #[test]
    fn an_approval_given_before_a_reload_that_revoked_it_no_longer_counts() {
        let loaded = policies();
        let agent = reviewer(&loaded);
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let r = requirement_of(agent, &e);
        // Recorded earlier; viewer does not hold the restart now.
        e.approvals.push(approval("viewer"));
        e.approvals.push(approval("oncall"));
        assert_eq!(
            next_step(&loaded, agent, &e, &r),
            Step::Wait {
                counted: 1,
                required: 2
            }
        );
    }

    #[test]
    fn a_ticket_is_required_where_the_policy_says_so() {
        let loaded = policies();
        let agent = reviewer(&loaded);
        let e = elevation(AGENT_R, "reviewer", ASSIGN, APP);
        let r = requirement_of(agent, &e);
        assert_eq!(
            may_count(&loaded, agent, &e, &r, "oncall2"),
            Err(Refusal::TicketRequired {
                agent: "reviewer".into()
            })
        );
        assert_eq!(
            check_ticket(" ", true).err().map(|e| e.to_string()).as_deref(),
            Some("ticket: the agent's approval policy requires a ticket reference (e.g. CHG-1234) alongside the justification")
        );
        assert_eq!(check_ticket(" ", false).ok(), Some(None));
        assert_eq!(
            check_ticket(" CHG-1 ", true).ok(),
            Some(Some("CHG-1".to_owned()))
        );
        assert!(check_ticket("a\nb", false).is_err());
        assert!(check_ticket(&"x".repeat(MAX_TICKET + 1), false).is_err());
    }

    #[test]
    fn the_grant_takes_the_strictest_terms_within_the_policys_duration() {
        let loaded = policies();
        let agent = reviewer(&loaded);
        let mut e = elevation(AGENT_R, "reviewer", ASSIGN, APP);
        e.ticket = Some("CHG-1".into());
        let r = requirement_of(agent, &e);
        let mut first = approval("oncall2");
        first.max_uses = 5;
        let mut second = approval("oncall");
        second.duration = Some(Duration::from_secs(300));
        second.max_uses = 2;
        // oncall does not hold role assignment writes: it cannot count.
        e.approvals = vec![first.clone(), second.clone()];
        assert!(matches!(
            next_step(&loaded, agent, &e, &r),
            Step::Wait { counted: 1, .. }
        ));
        // Restarts, two who hold them.
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let r = requirement_of(agent, &e);
        first.by = "oncall".into();
        second.by = "oncall2".into();
        e.approvals = vec![first, second];
        assert_eq!(
            next_step(&loaded, agent, &e, &r),
            Step::Grant(Terms {
                on_behalf_of: "oncall".into(),
                co_lenders: vec!["oncall2".into()],
                duration: Duration::from_secs(300),
                max_uses: 2,
                request_digest: None,
            })
        );
        // The policy's maxDuration caps what an approver grants.
        let mut e = elevation(AGENT_R, "reviewer", ASSIGN, APP);
        let r = requirement_of(agent, &e);
        assert_eq!(
            approved_duration(&e, &r, None).ok(),
            Some(Duration::from_secs(600))
        );
        e.requested_duration = Duration::from_secs(60);
        assert_eq!(
            approved_duration(&e, &r, None).ok(),
            Some(Duration::from_secs(60))
        );
        assert!(approved_duration(&e, &r, Some(Duration::from_secs(61))).is_err());
    }

    #[test]
    fn a_write_with_a_known_request_is_bound_to_its_body_once_by_default() {
        let loaded = loaded();
        let agent = reviewer(&loaded);
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        e.request = Some(exact::ExactRequest {
            method: "POST".into(),
            path: "/x".into(),
            digest: "ab".repeat(32),
            body_preview: None,
        });
        e.approvals.push(approval("oncall"));
        let r = Requirement::DEFAULT;
        let Step::Grant(terms) = next_step(&loaded, agent, &e, &r) else {
            panic!("not granted")
        };
        assert_eq!(terms.request_digest, Some("ab".repeat(32)));
        assert_eq!(terms.max_uses, 1);
        // The approver may say how many uses, or not bind at all.
        e.approvals[0].max_uses = 3;
        let Step::Grant(terms) = next_step(&loaded, agent, &e, &r) else {
            panic!("not granted")
        };
        assert_eq!((terms.request_digest.is_some(), terms.max_uses), (true, 3));
        e.approvals[0] = approval("oncall");
        e.approvals[0].bind = Some(false);
        let Step::Grant(terms) = next_step(&loaded, agent, &e, &r) else {
            panic!("not granted")
        };
        assert_eq!((terms.request_digest, terms.max_uses), (None, 0));
        // A read is not bound unless the approver asks.
        e.read_only = true;
        e.approvals[0].bind = None;
        let Step::Grant(terms) = next_step(&loaded, agent, &e, &r) else {
            panic!("not granted")
        };
        assert_eq!(terms.request_digest, None);
    }
}
