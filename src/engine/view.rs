//! What a principal holds at a scope, spelled out for operators: the
//! admin API's effective-permissions view, read from the same resolution
//! decisions use, with every index turned back into the snapshot's names.

use super::effective;
use crate::model::{DenyAssignment, PermissionBlock, Principal, Scope};
use crate::snapshot::{CompiledSnapshot, Position, PrincipalIx};

/// Everything one principal holds at one scope.
#[derive(Debug)]
pub struct EffectiveView<'a> {
    pub principal: &'a Principal,
    /// Every group the principal belongs to, directly or transitively.
    pub groups: Vec<&'a str>,
    /// Set when the principal is an agent's managed identity.
    pub agent: Option<AgentView<'a>>,
    /// Every role assignment that applies at the scope.
    pub assignments: Vec<AssignmentView<'a>>,
    /// Every deny assignment that applies to the principal at the scope.
    pub denies: Vec<DenyView<'a>>,
    pub snapshot_revision: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentView<'a> {
    pub id: &'a str,
    /// Whether the scope lies inside one of the agent's managed scopes.
    pub in_scope: bool,
}

#[derive(Debug)]
pub struct AssignmentView<'a> {
    pub id: &'a str,
    pub role_id: &'a str,
    pub role_name: &'a str,
    /// The role's permission blocks, as defined.
    pub permissions: &'a [PermissionBlock],
    pub scope: &'a Scope,
    /// The group the assignment names, when it is not the principal itself.
    pub via_group: Option<&'a str>,
    /// The agent whose permission level derives the assignment.
    pub derived_from_agent: Option<&'a str>,
    /// The assignment's ABAC condition, evaluated per request.
    pub condition: Option<&'a str>,
}

#[derive(Debug)]
pub struct DenyView<'a> {
    pub deny: &'a DenyAssignment,
    /// The group through which the deny targets the principal; `None` when
    /// it names the principal itself or applies to everyone.
    pub via_group: Option<&'a str>,
}

/// The effective permissions of `principal_id` at `scope`; `None` when the
/// snapshot has no such principal.
pub fn effective_view<'a>(
    snapshot: &'a CompiledSnapshot,
    principal_id: &str,
    scope: &Scope,
) -> Option<EffectiveView<'a>> {
    let t = &snapshot.tenant;
    let principal = snapshot.principal(principal_id)?;
    let groups = &snapshot.groups[principal];
    let principal_name = |p: PrincipalIx| t.principals[p].id.as_str();
    let effective = effective::resolve(snapshot, principal, snapshot.anchor(scope));

    let assignments = effective
        .sources
        .iter()
        .map(|g| {
            let a = &t.role_assignments[g.assignment];
            let role = &t.role_definitions[a.role];
            AssignmentView {
                id: &a.id,
                role_id: &role.id,
                role_name: &role.role_name,
                permissions: &role.permissions,
                scope: &a.scope,
                via_group: g.via.map(principal_name),
                derived_from_agent: a.derived_from_agent.map(|i| t.agents[i].id.as_str()),
                condition: a.condition.as_ref().map(|c| c.as_str()),
            }
        })
        .collect();
    let denies = effective
        .denies
        .iter()
        .map(|&d| {
            let deny = &t.deny_assignments[d];
            let via_group = deny
                .principals
                .iter()
                .map(|&x| PrincipalIx::at(x))
                .find(|x| groups.binary_search(x).is_ok())
                .map(principal_name);
            DenyView { deny, via_group }
        })
        .collect();
    Some(EffectiveView {
        principal: &t.principals[principal],
        groups: groups.iter().map(|&g| principal_name(g)).collect(),
        agent: effective.agent.map(|a| AgentView {
            id: &t.agents[a.agent].id,
            in_scope: a.in_scope,
        }),
        assignments,
        denies,
        snapshot_revision: &snapshot.info.revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = r#"
revision: r1
principals:
  - { id: alice, type: User, memberOf: [devs] }
  - { id: devs, type: Group, memberOf: [staff] }
  - { id: staff, type: Group }
  - { id: bob, type: User }
  - { id: mi, type: ManagedIdentity }
roleAssignments:
  - { id: ra-direct, principal: alice, role: Reader, scope: /subscriptions/s1 }
  - { id: ra-group, principal: staff, role: Contributor, scope: /subscriptions/s1/resourceGroups/rg }
  - id: ra-cond
    principal: alice
    role: Storage Blob Data Reader
    scope: /subscriptions/s1
    condition: "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals 'logs'"
  - { id: ra-elsewhere, principal: alice, role: Owner, scope: /subscriptions/s2 }
  - { id: ra-bob, principal: bob, role: Owner, scope: /subscriptions/s1 }
denyAssignments:
  - { id: deny-devs, principals: [devs], scope: /subscriptions/s1, actions: ["*/delete"] }
  - { id: deny-all, everyone: true, scope: /, actions: ["Microsoft.Authorization/*/write"] }
  - { id: deny-bob, principals: [bob], scope: /, actions: ["*"] }
agents:
  - id: ag
    principal: mi
    resource: /subscriptions/s1/resourceGroups/rg/providers/Microsoft.App/agents/ag
    managedScopes: [/subscriptions/s1/resourceGroups/rg]
    permissionLevel: Reader
    executionMode: Review
"#;

    fn snapshot() -> CompiledSnapshot {
        crate::snapshot::load_str(SNAPSHOT, "test").unwrap_or_else(|e| panic!("{e}"))
    }

    fn scope(text: &str) -> Scope {
        Scope::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn assignments_name_their_role_scope_group_and_condition() {
        let s = snapshot();
        let rg = scope("/subscriptions/s1/resourceGroups/rg");
        let view = effective_view(&s, "alice", &rg).unwrap_or_else(|| panic!("no view"));
        assert_eq!(view.principal.id, "alice");
        assert_eq!(view.groups, ["devs", "staff"]);
        assert_eq!(view.agent, None);
        assert_eq!(view.snapshot_revision, "r1");
        let mut ids: Vec<&str> = view.assignments.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["ra-cond", "ra-direct", "ra-group"]);
        let group = view.assignments.iter().find(|a| a.id == "ra-group");
        let group = group.unwrap_or_else(|| panic!("ra-group"));
        assert_eq!(group.role_name, "Contributor");
        assert_eq!(group.role_id, "b24988ac-6180-42a0-ab88-20f7382dd24c");
        assert_eq!(group.via_group, Some("staff"));
        assert_eq!(group.scope.as_str(), "/subscriptions/s1/resourceGroups/rg");
        assert!(!group.permissions.is_empty());
        let cond = view.assignments.iter().find(|a| a.id == "ra-cond");
        let cond = cond.unwrap_or_else(|| panic!("ra-cond"));
        assert!(cond
            .condition
            .is_some_and(|c| c.contains("StringEquals 'logs'")));
        assert_eq!(cond.via_group, None);
    }

    #[test]
    fn denies_name_the_group_they_come_through() {
        let s = snapshot();
        let view = effective_view(&s, "alice", &scope("/subscriptions/s1"));
        let view = view.unwrap_or_else(|| panic!("no view"));
        let mut denies: Vec<(&str, Option<&str>)> = view
            .denies
            .iter()
            .map(|d| (d.deny.id.as_str(), d.via_group))
            .collect();
        denies.sort_unstable();
        // Bob's own deny is not alice's; everyone's has no group.
        assert_eq!(denies, [("deny-all", None), ("deny-devs", Some("devs"))]);
    }

    #[test]
    fn an_agent_identity_is_placed_against_its_managed_scopes() {
        let s = snapshot();
        let inside = effective_view(&s, "mi", &scope("/subscriptions/s1/resourceGroups/rg"));
        let inside = inside.unwrap_or_else(|| panic!("no view"));
        assert_eq!(
            inside.agent,
            Some(AgentView {
                id: "ag",
                in_scope: true
            })
        );
        let derived = &inside.assignments[0];
        assert_eq!(derived.derived_from_agent, Some("ag"));
        assert_eq!(derived.role_name, "Reader");
        let outside = effective_view(&s, "mi", &scope("/subscriptions/s1/resourceGroups/other"));
        let outside = outside.unwrap_or_else(|| panic!("no view"));
        assert_eq!(
            outside.agent,
            Some(AgentView {
                id: "ag",
                in_scope: false
            })
        );
        assert!(outside.assignments.is_empty());
    }

    #[test]
    fn an_unknown_principal_has_no_view() {
        let s = snapshot();
        assert!(effective_view(&s, "nobody", &scope("/")).is_none());
    }
}
