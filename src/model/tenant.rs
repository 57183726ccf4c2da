//! A validated tenant: everything a snapshot declares, with references
//! resolved to indices, plus the management-group hierarchy that completes
//! a scope's ancestry (docs/model.md#scopes).

use std::collections::HashMap;

use super::agent::Agent;
use super::principal::Principal;
use super::resource::{AccessKey, Resource};
use super::role::{DenyAssignment, RoleAssignment, RoleDefinition};
use super::scope::{Scope, ScopeKind};

#[derive(Debug, Clone)]
pub struct ManagementGroup {
    pub id: String,
    pub parent: Option<usize>,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub management_group: Option<usize>,
    pub display_name: Option<String>,
}

/// The management-group tree and the subscriptions hung on it.
#[derive(Debug, Clone, Default)]
pub struct Hierarchy {
    pub management_groups: Vec<ManagementGroup>,
    pub subscriptions: Vec<Subscription>,
    mg_by_key: HashMap<String, usize>,
    sub_by_key: HashMap<String, usize>,
}

/// The scope key of a management group.
pub fn management_group_scope_key(id: &str) -> String {
    format!(
        "/providers/microsoft.management/managementgroups/{}",
        id.to_ascii_lowercase()
    )
}

/// The scope key of a subscription.
pub fn subscription_scope_key(id: &str) -> String {
    format!("/subscriptions/{}", id.to_ascii_lowercase())
}

impl Hierarchy {
    pub fn new(management_groups: Vec<ManagementGroup>, subscriptions: Vec<Subscription>) -> Self {
        let mg_by_key = management_groups
            .iter()
            .enumerate()
            .map(|(i, mg)| (mg.id.to_ascii_lowercase(), i))
            .collect();
        let sub_by_key = subscriptions
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.to_ascii_lowercase(), i))
            .collect();
        Hierarchy {
            management_groups,
            subscriptions,
            mg_by_key,
            sub_by_key,
        }
    }

    pub fn management_group(&self, id: &str) -> Option<usize> {
        self.mg_by_key.get(&id.to_ascii_lowercase()).copied()
    }

    pub fn subscription(&self, id: &str) -> Option<usize> {
        self.sub_by_key.get(&id.to_ascii_lowercase()).copied()
    }

    /// The management groups above a subscription or management group,
    /// nearest first. Bounded, so a cycle (rejected by validation anyway)
    /// cannot loop.
    fn management_group_chain(&self, mut next: Option<usize>) -> impl Iterator<Item = usize> + '_ {
        let mut left = self.management_groups.len();
        std::iter::from_fn(move || {
            let current = next?;
            if left == 0 {
                return None;
            }
            left -= 1;
            next = self.management_groups[current].parent;
            Some(current)
        })
    }

    /// The lowercase keys of `scope` and all its ancestors: itself, its
    /// structural prefixes, the management-group chain, then `/`.
    pub fn ancestor_keys(&self, scope: &Scope) -> Vec<String> {
        let mut keys = Vec::with_capacity(8);
        if scope.kind() == ScopeKind::Root {
            keys.push("/".to_owned());
            return keys;
        }
        keys.push(scope.key().to_owned());
        keys.extend(scope.structural_ancestor_keys().map(str::to_owned));
        keys.extend(
            self.hierarchy_parents(scope)
                .map(|mg| management_group_scope_key(&self.management_groups[mg].id)),
        );
        keys.push("/".to_owned());
        keys
    }

    /// The management groups above a scope's subscription or management
    /// group (for a management group scope, above the group itself).
    pub fn hierarchy_parents(&self, scope: &Scope) -> impl Iterator<Item = usize> + '_ {
        let start = if let Some(sub) = scope.subscription_id() {
            self.subscription(sub)
                .and_then(|s| self.subscriptions[s].management_group)
        } else if let Some(mg) = scope.management_group_id() {
            self.management_group(mg)
                .and_then(|m| self.management_groups[m].parent)
        } else {
            None
        };
        self.management_group_chain(start)
    }

    /// Whether `scope` is `container` or lies below it, hierarchy included.
    pub fn contains(&self, container: &Scope, scope: &Scope) -> bool {
        container.kind() == ScopeKind::Root
            || self
                .ancestor_keys(scope)
                .iter()
                .any(|k| k == container.key())
    }
}

/// Everything a snapshot declares, validated. Role definitions hold the
/// built-in catalog first, then the snapshot's custom roles; role
/// assignments hold the declared ones, then those derived from agents.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub revision: String,
    pub hierarchy: Hierarchy,
    pub principals: Vec<Principal>,
    pub role_definitions: Vec<RoleDefinition>,
    pub builtin_role_count: usize,
    pub role_assignments: Vec<RoleAssignment>,
    pub deny_assignments: Vec<DenyAssignment>,
    pub resources: Vec<Resource>,
    pub access_keys: Vec<AccessKey>,
    pub agents: Vec<Agent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hierarchy() -> Hierarchy {
        Hierarchy::new(
            vec![
                ManagementGroup {
                    id: "root".into(),
                    parent: None,
                    display_name: None,
                },
                ManagementGroup {
                    id: "Platform".into(),
                    parent: Some(0),
                    display_name: None,
                },
            ],
            vec![Subscription {
                id: "S1".into(),
                management_group: Some(1),
                display_name: None,
            }],
        )
    }

    #[test]
    fn ancestry_runs_through_management_groups_to_root() {
        let h = hierarchy();
        let vm = Scope::parse(
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
        )
        .unwrap();
        assert_eq!(
            h.ancestor_keys(&vm),
            vec![
                "/subscriptions/s1/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm",
                "/subscriptions/s1/resourcegroups/rg",
                "/subscriptions/s1",
                "/providers/microsoft.management/managementgroups/platform",
                "/providers/microsoft.management/managementgroups/root",
                "/",
            ]
        );
        let mg = Scope::parse("/providers/Microsoft.Management/managementGroups/platform").unwrap();
        assert_eq!(h.ancestor_keys(&mg).len(), 3);
    }

    #[test]
    fn unknown_subscription_sits_under_root() {
        let h = hierarchy();
        let s = Scope::parse("/subscriptions/other").unwrap();
        assert_eq!(h.ancestor_keys(&s), vec!["/subscriptions/other", "/"]);
        let root_mg =
            Scope::parse("/providers/Microsoft.Management/managementGroups/root").unwrap();
        assert!(h.contains(
            &root_mg,
            &Scope::parse("/subscriptions/S1/resourceGroups/x").unwrap()
        ));
        assert!(!h.contains(&root_mg, &s));
    }
}
