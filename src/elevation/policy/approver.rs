//! The approver rules (docs/agents-and-elevation.md#approver-rules): to
//! approve, a caller (a) may interact with the agent, (b) holds the
//! operation at the elevation's scope, with the elevation's attributes,
//! and (c) is not the agent's own identity. Denying needs (a) only;
//! revoking needs (a) or an admin token.

use crate::elevation::Elevation;
use crate::engine::Loaded;
use crate::model::{principal_key, Agent};

use super::{agent_by_id, allows};

/// Why a caller may not act on an elevation or grant. The text is what the
/// caller reads, naming the rule it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Rule (c).
    #[error(
        "{caller} is the agent's own identity: an agent cannot approve its own elevation (rule c)"
    )]
    SelfApproval { caller: String, agent: String },
    /// Rule (a): the caller is not allowed the agent's interact action at
    /// its resource.
    #[error("{caller} is not allowed {action} at {resource}, so may not interact with agent {agent} (rule a)")]
    MayNotInteract {
        caller: String,
        agent: String,
        action: String,
        resource: String,
    },
    /// Rule (b).
    #[error("{caller} does not hold {operation} at {scope} and cannot lend what it does not hold (rule b)")]
    DoesNotHold {
        caller: String,
        operation: String,
        scope: String,
    },
    /// The agent's approval policy for this operation lists its approvers,
    /// and the caller is not one of them (nor in a listed group).
    #[error("{caller} is not among the approvers of agent {agent}'s approval policy for this operation ({approvers})")]
    NotAnApprover {
        caller: String,
        agent: String,
        approvers: String,
    },
    /// The approval policy requires a ticket and the elevation has none
    /// (the policy changed after it was filed).
    #[error("agent {agent}'s approval policy requires a ticket for this operation and the elevation has none; deny it and have the agent ask again with a ticket")]
    TicketRequired { agent: String },
    /// Rule (a), for a revocation: the agent may also have left the
    /// snapshot, in which case nobody but an admin may revoke.
    #[error("{caller} may not interact with agent {agent} (rule a), so may not revoke its grants")]
    MayNotRevoke { caller: String, agent: String },
}

/// Rule (a): may `caller` interact with `agent`? It must be allowed the
/// agent's interact action at the agent's resource.
pub fn may_interact(loaded: &Loaded, caller: &str, agent: &Agent) -> Result<(), Refusal> {
    let action = &agent.elevation.interact_action;
    if allows(
        loaded,
        caller,
        action,
        agent.resource.as_str(),
        false,
        &Default::default(),
    ) {
        return Ok(());
    }
    Err(Refusal::MayNotInteract {
        caller: caller.to_owned(),
        agent: agent.id.clone(),
        action: action.clone(),
        resource: agent.resource.as_str().to_owned(),
    })
}

/// Rule (a) by agent id. An agent no longer in the snapshot is nobody's to
/// interact with.
pub fn may_interact_with(loaded: &Loaded, caller: &str, agent_id: &str) -> bool {
    agent_by_id(&loaded.snapshot, agent_id)
        .is_some_and(|agent| may_interact(loaded, caller, agent).is_ok())
}

/// Rules (c), (a) and (b), in that order, for `caller` approving
/// `elevation` of `agent`.
pub fn may_approve(
    loaded: &Loaded,
    caller: &str,
    agent: &Agent,
    elevation: &Elevation,
) -> Result<(), Refusal> {
    let agent_principal = &loaded.snapshot.tenant.principals[agent.principal].id;
    if principal_key(caller) == principal_key(agent_principal) {
        return Err(Refusal::SelfApproval {
            caller: caller.to_owned(),
            agent: agent.id.clone(),
        });
    }
    may_interact(loaded, caller, agent)?;
    if !allows(
        loaded,
        caller,
        &elevation.action,
        &elevation.scope,
        elevation.data_action,
        &elevation.attributes,
    ) {
        return Err(Refusal::DoesNotHold {
            caller: caller.to_owned(),
            operation: elevation.action.clone(),
            scope: elevation.scope.clone(),
        });
    }
    Ok(())
}

/// Rule (a) for denying. The elevation of an agent no longer in the
/// snapshot may be denied by anyone: denying lends nothing.
pub fn may_deny(loaded: &Loaded, caller: &str, agent_id: &str) -> Result<(), Refusal> {
    match agent_by_id(&loaded.snapshot, agent_id) {
        Some(agent) => may_interact(loaded, caller, agent),
        None => Ok(()),
    }
}

/// Rule (a) for revoking a grant of `agent_id`, unless `admin`.
pub fn may_revoke(
    loaded: &Loaded,
    caller: &str,
    admin: bool,
    agent_id: &str,
) -> Result<(), Refusal> {
    if admin || may_interact_with(loaded, caller, agent_id) {
        return Ok(());
    }
    Err(Refusal::MayNotRevoke {
        caller: caller.to_owned(),
        agent: agent_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::fixture::*;
    use super::*;

    fn reviewer(loaded: &Loaded) -> &Agent {
        agent_by_id(&loaded.snapshot, "reviewer").unwrap_or_else(|| panic!("no reviewer"))
    }

    #[test]
    fn an_approver_holding_the_operation_who_may_interact_approves() {
        let loaded = loaded();
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        assert_eq!(
            may_approve(&loaded, "oncall", reviewer(&loaded), &e),
            Ok(())
        );
    }

    #[test]
    fn the_agents_own_identity_cannot_approve_in_any_case() {
        let loaded = loaded();
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        for caller in [AGENT_R.to_owned(), AGENT_R.to_ascii_uppercase()] {
            let refusal = may_approve(&loaded, &caller, reviewer(&loaded), &e);
            assert_eq!(
                refusal,
                Err(Refusal::SelfApproval {
                    caller: caller.clone(),
                    agent: "reviewer".into()
                })
            );
        }
        let text = may_approve(&loaded, AGENT_R, reviewer(&loaded), &e)
            .err()
            .map(|r| r.to_string());
        assert_eq!(
            text.as_deref(),
            Some("6f2d8c1e-3b4a-4c5d-8e6f-7a8b9c0d1e2f is the agent's own identity: an agent cannot approve its own elevation (rule c)")
        );
    }

    #[test]
    fn holding_the_operation_without_the_right_to_interact_is_refused_by_rule_a() {
        let loaded = loaded();
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let refusal = may_approve(&loaded, "outsider", reviewer(&loaded), &e);
        let Err(refusal) = refusal else {
            panic!("outsider approved")
        };
        assert_eq!(
            refusal.to_string(),
            "outsider is not allowed Microsoft.App/agents/write at /subscriptions/s1/resourceGroups/agents/providers/Microsoft.App/agents/reviewer, so may not interact with agent reviewer (rule a)"
        );
    }

    #[test]
    fn an_approver_cannot_lend_what_it_does_not_hold() {
        let loaded = loaded();
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let refusal = may_approve(&loaded, "viewer", reviewer(&loaded), &e);
        assert_eq!(
            refusal,
            Err(Refusal::DoesNotHold {
                caller: "viewer".into(),
                operation: RESTART.into(),
                scope: VM.into()
            })
        );
        assert_eq!(
            refusal.err().map(|r| r.to_string()).as_deref(),
            Some("viewer does not hold Microsoft.Compute/virtualMachines/restart/action at /subscriptions/s1/resourceGroups/app/providers/Microsoft.Compute/virtualMachines/vm1 and cannot lend what it does not hold (rule b)")
        );
    }

    #[test]
    fn a_deny_assignment_on_the_approver_below_its_role_refuses_rule_b() {
        let loaded = loaded();
        let e = elevation(AGENT_R, "reviewer", RESTART, CRITICAL);
        assert!(matches!(
            may_approve(&loaded, "oncall", reviewer(&loaded), &e),
            Err(Refusal::DoesNotHold { .. })
        ));
    }

    #[test]
    fn rule_b_is_checked_with_the_elevations_attributes() {
        let loaded = loaded();
        let mut e = elevation(AGENT_R, "reviewer", ASSIGN, APP);
        // Without the attribute the approver's condition does not hold.
        assert!(matches!(
            may_approve(&loaded, "strict", reviewer(&loaded), &e),
            Err(Refusal::DoesNotHold { .. })
        ));
        let key = "Microsoft.Authorization/roleAssignments:RoleDefinitionId";
        e.attributes = BTreeMap::from([(key.to_owned(), OWNER_ROLE.to_owned())]);
        assert!(may_approve(&loaded, "strict", reviewer(&loaded), &e).is_err());
        e.attributes = BTreeMap::from([(
            key.to_owned(),
            "acdd72a7-3385-48ef-bd42-f606fba81ae7".to_owned(),
        )]);
        assert_eq!(
            may_approve(&loaded, "strict", reviewer(&loaded), &e),
            Ok(())
        );
    }

    #[test]
    fn denying_needs_rule_a_unless_the_agent_is_gone() {
        let loaded = loaded();
        assert_eq!(may_deny(&loaded, "viewer", "reviewer"), Ok(()));
        assert!(matches!(
            may_deny(&loaded, "outsider", "reviewer"),
            Err(Refusal::MayNotInteract { .. })
        ));
        assert_eq!(may_deny(&loaded, "outsider", "gone"), Ok(()));
    }

    #[test]
    fn revoking_needs_rule_a_or_admin_and_a_gone_agent_needs_admin() {
        let loaded = loaded();
        assert_eq!(may_revoke(&loaded, "viewer", false, "reviewer"), Ok(()));
        assert_eq!(may_revoke(&loaded, "outsider", true, "reviewer"), Ok(()));
        let refusal = may_revoke(&loaded, "outsider", false, "reviewer");
        assert_eq!(
            refusal.err().map(|r| r.to_string()).as_deref(),
            Some("outsider may not interact with agent reviewer (rule a), so may not revoke its grants")
        );
        assert!(may_revoke(&loaded, "oncall", false, "gone").is_err());
        assert_eq!(may_revoke(&loaded, "oncall", true, "gone"), Ok(()));
        assert!(may_interact_with(&loaded, "oncall", "auto"));
        assert!(!may_interact_with(&loaded, "oncall", "gone"));
    }
}
