//! What approving an elevation lends, shown before the approver clicks:
//! the operation at the scope and below, how many resources of the
//! snapshot lie under that scope, and what kind of change the operation
//! makes. Pure functions of the snapshot and the elevation.

use serde_json::{json, Value};

use crate::elevation::Elevation;
use crate::model::Scope;
use crate::snapshot::CompiledSnapshot;

/// What an operation does, from its last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Read,
    Write,
    Delete,
    /// `…/action` and anything else: it acts rather than stores.
    Action,
}

impl Effect {
    pub fn of(operation: &str) -> Effect {
        let last = operation.rsplit('/').next().unwrap_or_default();
        if last.eq_ignore_ascii_case("read") {
            Effect::Read
        } else if last.eq_ignore_ascii_case("write") {
            Effect::Write
        } else if last.eq_ignore_ascii_case("delete") {
            Effect::Delete
        } else {
            Effect::Action
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Read => "READ",
            Effect::Write => "WRITE",
            Effect::Delete => "DELETE",
            Effect::Action => "ACTION",
        }
    }
}

/// Resource types of `Microsoft.Authorization` whose changes decide who
/// holds what: writing (or deleting) them hands out or removes access.
const ACCESS_TYPES: [&str; 6] = [
    "roleassignments",
    "roledefinitions",
    "denyassignments",
    "roleassignmentschedulerequests",
    "roleeligibilityschedulerequests",
    "elevateaccess",
];

/// Whether the operation changes role assignments or definitions (e.g.
/// `Microsoft.Authorization/roleAssignments/write`): lending it lends the
/// power to grant further access.
pub fn assigns_roles(operation: &str) -> bool {
    let mut segments = operation.split('/');
    let provider = segments.next().unwrap_or_default();
    let kind = segments.next().unwrap_or_default();
    provider.eq_ignore_ascii_case("Microsoft.Authorization")
        && ACCESS_TYPES.iter().any(|t| kind.eq_ignore_ascii_case(t))
        && Effect::of(operation) != Effect::Read
}

/// Resources declared in the snapshot at or below `scope`, following the
/// management-group hierarchy as decisions do.
pub fn resources_under(snapshot: &CompiledSnapshot, scope: &Scope) -> usize {
    let anchor = snapshot.anchor(scope);
    snapshot
        .resource_at
        .iter()
        .filter(|&(&node, &index)| {
            let resource = &snapshot.tenant.resources[index].scope;
            resource.is_structurally_within(scope)
                || (anchor.exact && snapshot.chain(node).any(|n| n == anchor.node))
        })
        .count()
}

/// The preview of an approval, as the page shows it.
pub fn preview(snapshot: &CompiledSnapshot, e: &Elevation) -> Value {
    let effect = Effect::of(&e.action);
    let resources = Scope::parse(&e.scope)
        .map(|s| resources_under(snapshot, &s))
        .unwrap_or(0);
    json!({
        "lends": format!("{} at {} and every scope below it", e.action, e.scope),
        "plane": if e.data_action { "DATA" } else { "CONTROL" },
        "effect": effect.as_str(),
        "writes": matches!(effect, Effect::Write | Effect::Delete | Effect::Action),
        "deletes": effect == Effect::Delete,
        "assignsRoles": assigns_roles(&e.action),
        "resourcesUnderScope": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_segment_names_the_effect() {
        assert_eq!(
            Effect::of("Microsoft.Compute/virtualMachines/read"),
            Effect::Read
        );
        assert_eq!(
            Effect::of("Microsoft.Compute/virtualMachines/WRITE"),
            Effect::Write
        );
        assert_eq!(
            Effect::of("Microsoft.Compute/virtualMachines/delete"),
            Effect::Delete
        );
        assert_eq!(
            Effect::of("Microsoft.Compute/virtualMachines/restart/action"),
            Effect::Action
        );
        // A type named like an effect is not the effect.
        assert_eq!(Effect::of("Contoso.Read/things/action"), Effect::Action);
    }

    #[test]
    fn role_changes_are_flagged_and_role_reads_are_not() {
        for op in [
            "Microsoft.Authorization/roleAssignments/write",
            "microsoft.authorization/roleassignments/delete",
            "Microsoft.Authorization/roleDefinitions/write",
            "Microsoft.Authorization/elevateAccess/action",
        ] {
            assert!(assigns_roles(op), "{op}");
        }
        for op in [
            "Microsoft.Authorization/roleAssignments/read",
            "Microsoft.Authorization/locks/delete",
            "Microsoft.Compute/roleAssignments/write",
            "Microsoft.Authorization",
        ] {
            assert!(!assigns_roles(op), "{op}");
        }
    }

    const SNAPSHOT: &str = r#"
revision: preview-1
managementGroups:
  - { id: contoso }
subscriptions:
  - { id: 11111111-1111-1111-1111-111111111111, managementGroup: contoso }
  - { id: 22222222-2222-2222-2222-222222222222 }
principals:
  - { id: someone, type: User }
resources:
  - { scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1 }
  - { scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm2 }
  - { scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-db/providers/Microsoft.Sql/servers/db }
  - { scope: /subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/rg-x/providers/Microsoft.Compute/virtualMachines/vm3 }
"#;

    fn count(snapshot: &CompiledSnapshot, scope: &str) -> usize {
        resources_under(snapshot, &Scope::parse(scope).unwrap())
    }

    #[test]
    fn resources_are_counted_under_a_scope_through_the_hierarchy() {
        let s = crate::snapshot::load_str(SNAPSHOT, "preview").unwrap();
        let sub1 = "/subscriptions/11111111-1111-1111-1111-111111111111";
        assert_eq!(count(&s, "/"), 4);
        assert_eq!(
            count(
                &s,
                "/providers/Microsoft.Management/managementGroups/contoso"
            ),
            3
        );
        assert_eq!(count(&s, sub1), 3);
        // Case does not matter, and an undeclared resource group still counts.
        assert_eq!(count(&s, &format!("{sub1}/RESOURCEGROUPS/rg-app")), 2);
        assert_eq!(
            count(
                &s,
                &format!(
                    "{sub1}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1"
                )
            ),
            1
        );
        assert_eq!(count(&s, &format!("{sub1}/resourceGroups/rg-none")), 0);
    }
}
