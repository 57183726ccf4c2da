//! Elevation policy as pure functions of a loaded snapshot and the records
//! at hand: what a request becomes ([`request`]), who may approve
//! ([`approver`]), what the auto-approve policy picks ([`auto_approve`])
//! and when a grant ends ([`lifecycle`]). The broker wraps them with
//! locking, the state store and publishing.

pub mod approval;
pub mod approver;
pub mod auto_approve;
pub mod exact;
pub mod freeze;
pub mod lifecycle;
pub mod rate;
pub mod request;
pub mod shadow;

use std::collections::BTreeMap;

use crate::engine::{Loaded, Request, Verdict};
use crate::model::Agent;
use crate::snapshot::CompiledSnapshot;

/// The longest justification and comment kept.
pub const MAX_TEXT: usize = 1024;

/// `text` cut to [`MAX_TEXT`] characters.
pub fn bounded(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

/// Whether the snapshot's roles (no grants) allow `principal` the operation
/// with these request attributes.
pub fn allows(
    loaded: &Loaded,
    principal: &str,
    action: &str,
    scope: &str,
    data_action: bool,
    attributes: &BTreeMap<String, String>,
) -> bool {
    loaded
        .decide(&Request {
            principal_id: principal,
            action,
            scope,
            data_action,
            attributes,
            explain: false,
            dry_run: true,
        })
        .is_ok_and(|d| d.verdict == Verdict::Allow)
}

/// The agent whose identity is `principal_id`.
pub fn agent_of<'s>(snapshot: &'s CompiledSnapshot, principal_id: &str) -> Option<&'s Agent> {
    let p = snapshot.principal(principal_id)?;
    let a = snapshot.agent_of[p]?;
    Some(&snapshot.tenant.agents[a])
}

/// The agent with this id.
pub fn agent_by_id<'s>(snapshot: &'s CompiledSnapshot, agent_id: &str) -> Option<&'s Agent> {
    snapshot.tenant.agents.iter().find(|a| a.id == agent_id)
}

/// A small tenant for the policy tests: a Review-mode agent whose identity
/// is a GUID, an Auto-mode agent with auto-approve rules, and approvers
/// with and without each approver rule.
#[cfg(test)]
pub(crate) mod fixture {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use crate::elevation::{Elevation, ElevationState};
    use crate::engine::{Loaded, Reason};

    pub const AGENT_R: &str = "6f2d8c1e-3b4a-4c5d-8e6f-7a8b9c0d1e2f";
    pub const AGENT_A: &str = "agent-a";
    pub const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
    pub const ASSIGN: &str = "Microsoft.Authorization/roleAssignments/write";
    pub const APP: &str = "/subscriptions/s1/resourceGroups/app";
    pub const VM: &str =
        "/subscriptions/s1/resourceGroups/app/providers/Microsoft.Compute/virtualMachines/vm1";
    pub const CRITICAL: &str =
        "/subscriptions/s1/resourceGroups/app/providers/Microsoft.Compute/virtualMachines/critical";
    pub const OTHER: &str = "/subscriptions/s1/resourceGroups/other";
    pub const OWNER_ROLE: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";

    pub const SNAPSHOT: &str = r#"
revision: policy-1
principals:
  - { id: 6f2d8c1e-3b4a-4c5d-8e6f-7a8b9c0d1e2f, type: ManagedIdentity }
  - { id: agent-a, type: ManagedIdentity }
  # Contributor where the work happens and on the agents; denied restart
  # on one VM.
  - { id: oncall, type: User }
  # May interact with the agents, holds only Reader on the work.
  - { id: viewer, type: User }
  # Holds the work but may not interact with the agents.
  - { id: outsider, type: User }
  # May assign roles on the work only when the role named is not Owner.
  - { id: strict, type: User }
roleAssignments:
  - { id: ra-oncall-app, principal: oncall, role: Contributor, scope: /subscriptions/s1/resourceGroups/app }
  - { id: ra-oncall-agents, principal: oncall, role: Contributor, scope: /subscriptions/s1/resourceGroups/agents }
  - { id: ra-viewer-app, principal: viewer, role: Reader, scope: /subscriptions/s1/resourceGroups/app }
  - { id: ra-viewer-agents, principal: viewer, role: Contributor, scope: /subscriptions/s1/resourceGroups/agents }
  - { id: ra-outsider-app, principal: outsider, role: Contributor, scope: /subscriptions/s1/resourceGroups/app }
  - { id: ra-strict-agents, principal: strict, role: Contributor, scope: /subscriptions/s1/resourceGroups/agents }
  - id: ra-strict-uaa
    principal: strict
    role: User Access Administrator
    scope: /subscriptions/s1/resourceGroups/app
    conditionVersion: "2.0"
    condition: "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAllValues:GuidNotEquals {8e3af657-a8ff-443c-a75c-2fe8c4bcb635}))"
denyAssignments:
  - id: deny-oncall-critical
    principals: [oncall]
    scope: /subscriptions/s1/resourceGroups/app/providers/Microsoft.Compute/virtualMachines/critical
    actions: ["Microsoft.Compute/virtualMachines/restart/action"]
agents:
  - id: reviewer
    principal: 6f2d8c1e-3b4a-4c5d-8e6f-7a8b9c0d1e2f
    resource: /subscriptions/s1/resourceGroups/agents/providers/Microsoft.App/agents/reviewer
    managedScopes: [/subscriptions/s1/resourceGroups/app]
    permissionLevel: Reader
    executionMode: Review
  - id: auto
    principal: agent-a
    resource: /subscriptions/s1/resourceGroups/agents/providers/Microsoft.App/agents/auto
    managedScopes: [/subscriptions/s1/resourceGroups/app]
    permissionLevel: Reader
    executionMode: Auto
    elevation:
      maxDuration: 1h
      autoApprove:
        # viewer does not hold restart: skipped.
        - actions: ["Microsoft.Compute/virtualMachines/restart/action"]
          onBehalfOf: viewer
        - actions: ["Microsoft.Compute/virtualMachines/restart/action"]
          scopes: [/subscriptions/s1/resourceGroups/app]
          dataAction: false
          readOnly: false
          maxDuration: 30m
          onBehalfOf: oncall
          maxPerHour: 2
        - actions: ["Microsoft.Compute/virtualMachines/*"]
          onBehalfOf: outsider
"#;

    pub fn loaded() -> Loaded {
        loaded_from(SNAPSHOT)
    }

    pub fn loaded_from(yaml: &str) -> Loaded {
        Loaded::new(crate::snapshot::load_str(yaml, "test").unwrap_or_else(|e| panic!("{e}")))
    }

    /// A pending elevation of `principal` (agent `agent`).
    pub fn elevation(principal: &str, agent: &str, action: &str, scope: &str) -> Elevation {
        let now = SystemTime::now();
        Elevation {
            id: "e1".into(),
            principal_id: principal.into(),
            agent_id: agent.into(),
            action: action.into(),
            scope: scope.into(),
            data_action: false,
            read_only: false,
            justification: "disk pressure".into(),
            attributes: BTreeMap::new(),
            reason: Reason::NeedsElevation,
            requested_duration: Duration::from_secs(3600),
            state: ElevationState::Pending,
            created_at: now,
            wait_deadline: now + Duration::from_secs(300),
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
}

#[cfg(test)]
mod tests {
    use super::fixture::*;
    use super::*;

    #[test]
    fn allows_counts_roles_denies_and_attributes() {
        let loaded = loaded();
        let none = BTreeMap::new();
        assert!(allows(&loaded, "oncall", RESTART, VM, false, &none));
        assert!(!allows(&loaded, "oncall", RESTART, CRITICAL, false, &none));
        assert!(!allows(&loaded, "viewer", RESTART, VM, false, &none));
        assert!(!allows(&loaded, "strict", ASSIGN, APP, false, &none));
        let named = BTreeMap::from([(
            "Microsoft.Authorization/roleAssignments:RoleDefinitionId".to_owned(),
            "acdd72a7-3385-48ef-bd42-f606fba81ae7".to_owned(),
        )]);
        assert!(allows(&loaded, "strict", ASSIGN, APP, false, &named));
        assert!(!allows(&loaded, "nobody", RESTART, VM, false, &none));
    }

    #[test]
    fn agents_are_found_by_identity_and_by_id() {
        let loaded = loaded();
        let s = &loaded.snapshot;
        assert_eq!(
            agent_of(s, AGENT_R).map(|a| a.id.as_str()),
            Some("reviewer")
        );
        assert_eq!(
            agent_of(s, &AGENT_R.to_ascii_uppercase()).map(|a| a.id.as_str()),
            Some("reviewer")
        );
        assert!(agent_of(s, "oncall").is_none());
        assert_eq!(agent_by_id(s, "auto").map(|a| a.id.as_str()), Some("auto"));
        assert!(agent_by_id(s, "Auto").is_none());
    }

    #[test]
    fn bounded_cuts_at_characters_not_bytes() {
        let long = "é".repeat(MAX_TEXT + 5);
        assert_eq!(bounded(&long).chars().count(), MAX_TEXT);
        assert_eq!(bounded("short"), "short");
    }
}
