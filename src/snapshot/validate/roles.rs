//! Role definitions: the catalog's and a snapshot's custom ones, and the
//! look-up by id, name or earlier name that assignments and agents use.

use std::collections::HashMap;

use super::fields::{condition, duplicate_id, patterns, scope};
use super::Problems;
use crate::model::{is_guid, Hierarchy, PermissionBlock, RoleDefinition, RoleType, Scope};
use crate::snapshot::schema::{PermissionEntry, RoleDefinitionEntry};

/// Validates role definitions (the catalog's or a snapshot's custom ones);
/// a role with any problem is left out.
pub fn role_definitions(
    entries: &[RoleDefinitionEntry],
    role_type: RoleType,
    section: &str,
    problems: &mut Problems<'_>,
) -> Vec<RoleDefinition> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("{section}[{i}]");
        let before = problems.len();
        let role = role_definition(entry, role_type, &path, problems);
        if problems.len() == before {
            out.push(role);
        }
    }
    out
}

fn role_definition(
    entry: &RoleDefinitionEntry,
    role_type: RoleType,
    path: &str,
    problems: &mut Problems<'_>,
) -> RoleDefinition {
    let id = Some(entry.id.as_str());
    if !is_guid(&entry.id) {
        problems.push(
            format!("{path}.id"),
            id,
            "a role definition id must be a GUID",
        );
    }
    if entry.role_name.trim().is_empty() {
        problems.push(format!("{path}.roleName"), id, "roleName is empty");
    }
    if let Some(declared) = &entry.role_type {
        if declared != role_type.as_str() {
            problems.push(
                format!("{path}.roleType"),
                id,
                format!(
                    "roleType is '{declared}' but roles here are {}",
                    role_type.as_str()
                ),
            );
        }
    }
    if entry.permissions.is_empty() {
        problems.push(
            format!("{path}.permissions"),
            id,
            "a role needs at least one permission block",
        );
    }
    let permissions = entry
        .permissions
        .iter()
        .enumerate()
        .map(|(b, block)| {
            permission_block(block, &format!("{path}.permissions[{b}]"), id, problems)
        })
        .collect();
    if entry.assignable_scopes.is_empty() {
        problems.push(
            format!("{path}.assignableScopes"),
            id,
            "a role needs at least one assignable scope",
        );
    }
    let assignable_scopes = entry
        .assignable_scopes
        .iter()
        .enumerate()
        .filter_map(|(s, text)| scope(text, &format!("{path}.assignableScopes[{s}]"), id, problems))
        .collect();
    RoleDefinition {
        id: entry.id.to_ascii_lowercase(),
        role_name: entry.role_name.clone(),
        aliases: entry.aliases.clone(),
        description: entry.description.clone().unwrap_or_default(),
        role_type,
        permissions,
        assignable_scopes,
    }
}

fn permission_block(
    block: &PermissionEntry,
    path: &str,
    id: Option<&str>,
    problems: &mut Problems<'_>,
) -> PermissionBlock {
    let condition = condition(
        block.condition.as_deref(),
        block.condition_version.as_deref(),
        path,
        id,
        problems,
    );
    let list = |field: &str, list: &[String], problems: &mut Problems<'_>| {
        patterns(list, &format!("{path}.{field}"), id, problems)
    };
    PermissionBlock {
        actions: list("actions", &block.actions, problems),
        not_actions: list("notActions", &block.not_actions, problems),
        data_actions: list("dataActions", &block.data_actions, problems),
        not_data_actions: list("notDataActions", &block.not_data_actions, problems),
        condition,
    }
}

/// The tenant's roles: the built-in catalog first, then the valid custom
/// roles, with the look-up over both.
pub(super) struct Roles {
    pub definitions: Vec<RoleDefinition>,
    pub builtin_count: usize,
    pub index: RoleIndex,
}

impl Roles {
    /// Every role's name and earlier names, for suggestions.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.definitions.iter().flat_map(|r| {
            std::iter::once(r.role_name.as_str()).chain(r.aliases.iter().map(String::as_str))
        })
    }
}

/// Role look-up by id, name or alias, case-insensitively, as Azure resolves
/// a role named in an assignment.
pub(super) struct RoleIndex {
    by_key: HashMap<String, usize>,
}

impl RoleIndex {
    pub fn resolve(&self, reference: &str) -> Option<usize> {
        let key = reference.trim().to_ascii_lowercase();
        // Azure's CLI prints roleDefinitionId as a full resource id.
        let key = key
            .rsplit_once("/roledefinitions/")
            .map_or(key.as_str(), |(_, id)| id);
        self.by_key.get(key).copied()
    }
}

impl Roles {
    /// Validates the snapshot's custom roles and adds them after the
    /// built-in ones, reporting redefinitions and ambiguous names.
    pub fn new(
        builtin: &[RoleDefinition],
        entries: &[RoleDefinitionEntry],
        problems: &mut Problems<'_>,
    ) -> Roles {
        let custom = role_definitions(entries, RoleType::CustomRole, "roleDefinitions", problems);
        let mut roles = builtin.to_vec();
        let builtin_count = roles.len();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for (i, role) in roles.iter().enumerate() {
            by_key.insert(role.id.clone(), i);
            by_key.insert(role.role_name.to_ascii_lowercase(), i);
            for alias in &role.aliases {
                by_key.entry(alias.to_ascii_lowercase()).or_insert(i);
            }
        }
        for role in custom {
            // The first entry with this id (a duplicate's own entry is
            // never found here: it is reported at the first one).
            let at = entries
                .iter()
                .position(|e| e.id.eq_ignore_ascii_case(&role.id))
                .unwrap_or(0);
            let path = format!("roleDefinitions[{at}]");
            let id = Some(role.id.as_str());
            match by_key.get(&role.id) {
                Some(&other) if other < builtin_count => {
                    problems.push(
                        format!("{path}.id"),
                        id,
                        format!(
                            "id {} is the built-in role '{}' and may not be redefined",
                            role.id, roles[other].role_name
                        ),
                    );
                    continue;
                }
                Some(_) => {
                    problems.push(
                        format!("{path}.id"),
                        id,
                        duplicate_id("role definition", &role.id),
                    );
                    continue;
                }
                None => {}
            }
            let index = roles.len();
            for name in std::iter::once(&role.role_name).chain(&role.aliases) {
                if let Some(&other) = by_key.get(&name.to_ascii_lowercase()) {
                    problems.push(
                        format!("{path}.roleName"),
                        id,
                        format!(
                            "name '{name}' already names role {} ('{}')",
                            roles[other].id, roles[other].role_name
                        ),
                    );
                }
            }
            by_key.insert(role.id.clone(), index);
            for name in std::iter::once(&role.role_name).chain(&role.aliases) {
                by_key.entry(name.to_ascii_lowercase()).or_insert(index);
            }
            roles.push(role);
        }
        Roles {
            definitions: roles,
            builtin_count,
            index: RoleIndex { by_key },
        }
    }
}

/// Whether `role` may be assigned at `scope`.
pub(super) fn role_assignable_at(
    role: &RoleDefinition,
    scope: &Scope,
    hierarchy: &Hierarchy,
) -> bool {
    role.assignable_scopes
        .iter()
        .any(|a| hierarchy.contains(a, scope))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_problems, custom_role, valid, GUID};

    #[test]
    fn role_id_must_be_a_guid() {
        assert_problems(
            &custom_role(
                r#"id: not-a-guid, roleName: R, permissions: [{ actions: ["*/read"] }], assignableScopes: [/]"#,
            ),
            &[(
                "roleDefinitions[0].id",
                Some("not-a-guid"),
                "a role definition id must be a GUID",
            )],
        );
    }

    #[test]
    fn role_name_must_not_be_empty() {
        assert_problems(
            &custom_role(&format!(
                r#"id: {GUID}, roleName: " ", permissions: [{{ actions: ["*/read"] }}], assignableScopes: [/]"#
            )),
            &[(
                "roleDefinitions[0].roleName",
                Some(GUID),
                "roleName is empty",
            )],
        );
    }

    #[test]
    fn role_type_must_match_its_section() {
        assert_problems(
            &custom_role(&format!(
                r#"id: {GUID}, roleName: R, roleType: BuiltInRole, permissions: [{{ actions: ["*/read"] }}], assignableScopes: [/]"#
            )),
            &[(
                "roleDefinitions[0].roleType",
                Some(GUID),
                "roleType is 'BuiltInRole' but roles here are CustomRole",
            )],
        );
    }

    #[test]
    fn role_needs_a_permission_block() {
        assert_problems(
            &custom_role(&format!(
                r#"id: {GUID}, roleName: R, permissions: [], assignableScopes: [/]"#
            )),
            &[(
                "roleDefinitions[0].permissions",
                Some(GUID),
                "a role needs at least one permission block",
            )],
        );
    }

    #[test]
    fn role_needs_an_assignable_scope() {
        assert_problems(
            &custom_role(&format!(
                r#"id: {GUID}, roleName: R, permissions: [{{ actions: ["*/read"] }}], assignableScopes: []"#
            )),
            &[(
                "roleDefinitions[0].assignableScopes",
                Some(GUID),
                "a role needs at least one assignable scope",
            )],
        );
    }

    #[test]
    fn role_patterns_must_parse_in_every_list() {
        assert_problems(
            &custom_role(&format!(
                r#"id: {GUID}, roleName: R, permissions: [{{ actions: ["a b"], notActions: ["a b"], dataActions: ["a b"], notDataActions: ["a b"] }}], assignableScopes: [/]"#
            )),
            &[
                (
                    "roleDefinitions[0].permissions[0].actions[0]",
                    Some(GUID),
                    "pattern 'a b' contains whitespace or a control character at byte 1",
                ),
                (
                    "roleDefinitions[0].permissions[0].notActions[0]",
                    Some(GUID),
                    "pattern 'a b' contains whitespace or a control character at byte 1",
                ),
                (
                    "roleDefinitions[0].permissions[0].dataActions[0]",
                    Some(GUID),
                    "pattern 'a b' contains whitespace or a control character at byte 1",
                ),
                (
                    "roleDefinitions[0].permissions[0].notDataActions[0]",
                    Some(GUID),
                    "pattern 'a b' contains whitespace or a control character at byte 1",
                ),
            ],
        );
    }

    #[test]
    fn role_condition_version_must_be_2_0() {
        assert_problems(
            &custom_role(&format!(
                r#"id: {GUID}, roleName: R, permissions: [{{ actions: ["*/read"], conditionVersion: "1.0" }}], assignableScopes: [/]"#
            )),
            &[(
                "roleDefinitions[0].permissions[0].conditionVersion",
                Some(GUID),
                "conditionVersion '1.0' is not supported; only 2.0 is",
            )],
        );
    }

    #[test]
    fn role_condition_must_parse() {
        assert_problems(
            &custom_role(&format!(r#"id: {GUID}, roleName: R, permissions: [{{ actions: ["*/read"], condition: "@Request[x] StringEquals" }}], assignableScopes: [/]"#)),
            &[("roleDefinitions[0].permissions[0].condition", Some(GUID), "condition does not parse: at column 25: expected a value, found the end of the condition")],
        );
    }

    #[test]
    fn role_assignable_scopes_must_parse() {
        assert_problems(
            &custom_role(&format!(
                r#"id: {GUID}, roleName: R, permissions: [{{ actions: ["*/read"] }}], assignableScopes: [/subscriptions]"#
            )),
            &[(
                "roleDefinitions[0].assignableScopes[0]",
                Some(GUID),
                "scope '/subscriptions' has 'subscriptions' without a subscription id",
            )],
        );
    }

    #[test]
    fn custom_role_may_not_redefine_a_builtin_id() {
        assert_problems(
            &custom_role(r#"id: ACDD72A7-3385-48ef-bd42-f606fba81ae7, roleName: My Reader, permissions: [{ actions: ["*/read"] }], assignableScopes: [/]"#),
            &[("roleDefinitions[0].id", Some("acdd72a7-3385-48ef-bd42-f606fba81ae7"), "id acdd72a7-3385-48ef-bd42-f606fba81ae7 is the built-in role 'Reader' and may not be redefined")],
        );
    }

    #[test]
    fn custom_role_ids_are_unique() {
        let yaml = format!(
            "roleDefinitions:\n  - {{ id: {GUID}, roleName: A, permissions: [{{ actions: [\"*/read\"] }}], assignableScopes: [/] }}\n  - {{ id: {}, roleName: B, permissions: [{{ actions: [\"*/read\"] }}], assignableScopes: [/] }}\n",
            GUID.to_uppercase()
        );
        // Reported at the first entry with that id, as today.
        assert_problems(
            &yaml,
            &[(
                "roleDefinitions[0].id",
                Some(GUID),
                "duplicate role definition id '11111111-0000-4000-8000-000000000001'",
            )],
        );
    }

    #[test]
    fn custom_role_names_and_aliases_are_unique() {
        assert_problems(
            &custom_role(&format!(r#"id: {GUID}, roleName: reader, aliases: [Contributor], permissions: [{{ actions: ["*/read"] }}], assignableScopes: [/]"#)),
            &[
                ("roleDefinitions[0].roleName", Some(GUID), "name 'reader' already names role acdd72a7-3385-48ef-bd42-f606fba81ae7 ('Reader')"),
                ("roleDefinitions[0].roleName", Some(GUID), "name 'Contributor' already names role b24988ac-6180-42a0-ab88-20f7382dd24c ('Contributor')"),
            ],
        );
    }

    #[test]
    fn a_custom_role_resolves_by_name_alias_and_resource_id() {
        let t = valid(&format!(
            "principals: [{{ id: alice, type: User }}]\n{}roleAssignments:\n  - {{ principal: alice, role: my role, scope: / }}\n  - {{ principal: alice, role: OLD NAME, scope: /subscriptions/s1 }}\n  - {{ principal: alice, role: /subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/{GUID}, scope: /subscriptions/s2 }}\n",
            custom_role(&format!(r#"id: {GUID}, roleName: My Role, aliases: [Old Name], permissions: [{{ actions: ["*/read"] }}], assignableScopes: [/]"#))
        ));
        let custom = t.builtin_role_count;
        assert_eq!(t.role_definitions[custom].id, GUID);
        assert!(t.role_assignments.iter().all(|a| a.role == custom));
        assert_eq!(t.role_assignments.len(), 3);
    }
}
