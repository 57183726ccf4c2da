//! Role and deny assignments: who, what and where, each reference resolved.

use sha2::{Digest, Sha256};

use std::borrow::Cow;
use std::collections::HashMap;

use foldhash::fast::RandomState;

use std::hash::BuildHasher;

use super::fields::{condition, duplicate_id, patterns, scope, Declared, Scopes};
use super::principals::PrincipalIndex;
use super::roles::{role_assignable_at, Roles};
use super::{Named, Problems};
use crate::model::{principal_key, DenyAssignment, Hierarchy, RoleAssignment, Scope};
use crate::snapshot::schema::{DenyAssignmentEntry, RoleAssignmentRef, RoleAssignments};

/// The declared role assignments; one written twice, by id or by the same
/// principal, role and scope, is reported.
///
/// A large tenant repeats a few thousand scopes and a few roles across a
/// million entries: each distinct scope is parsed once and shared, each
/// distinct role reference resolved once, and an entry's paths are only
/// written out when it has a problem.
pub(super) fn role_assignments(
    entries: &RoleAssignments,
    hierarchy: &Hierarchy,
    roles: &Roles,
    principals: &PrincipalIndex,
    problems: &mut Problems,
) -> Vec<RoleAssignment> {
    let mut out = Vec::with_capacity(entries.len());
    let mut ids = Vec::with_capacity(entries.len());
    let mut context = Context {
        hierarchy,
        roles,
        principals,
        scopes: Scopes::default(),
        role_refs: HashMap::default(),
    };
    for (i, entry) in entries.iter().enumerate() {
        if let Some(id) = entry.id {
            ids.push(IdKey {
                key: lowercase(id),
                entry: i,
                given: true,
            });
        }
        let Some(a) = role_assignment(entry, i, &mut context, problems) else {
            continue;
        };
        if entry.id.is_none() {
            ids.push(IdKey {
                key: Cow::Owned(a.id.to_ascii_lowercase()),
                entry: i,
                given: false,
            });
        }
        out.push(a);
    }
    for repeat in repeats(&ids) {
        let IdKey { key, entry, given } = &ids[repeat];
        let path = format!("roleAssignments[{entry}]");
        match entries.get(*entry).and_then(|e| e.id) {
            Some(id) if *given => {
                problems.push(path, Some(id), duplicate_id("role assignment", id))
            }
            _ => problems.push(
                path,
                Some(key),
                "the same principal, role and scope are assigned twice",
            ),
        }
    }
    out
}

/// An assignment's id as compared (lowercase), whose entry it is, and
/// whether it was written or generated from principal, role and scope.
struct IdKey<'a> {
    key: Cow<'a, str>,
    entry: usize,
    given: bool,
}

/// The positions in `ids` of each id already seen earlier in `ids`.
///
/// A million ids inserted one by one into a hash set cost a cache miss
/// each; sorting their hashes costs a fraction of that, and only ids whose
/// hashes collide are compared.
fn repeats(ids: &[IdKey<'_>]) -> Vec<usize> {
    let state = foldhash::fast::FixedState::default();
    let mut order: Vec<(u64, usize)> = ids
        .iter()
        .enumerate()
        .map(|(pos, id)| (state.hash_one(&*id.key), pos))
        .collect();
    order.sort_unstable();
    let mut out = Vec::new();
    for run in order
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
    {
        for (n, &(_, pos)) in run.iter().enumerate().skip(1) {
            if run[..n].iter().any(|&(_, p)| ids[p].key == ids[pos].key) {
                out.push(pos);
            }
        }
    }
    out.sort_unstable();
    out
}

/// `text` in lowercase, borrowed when it is already.
fn lowercase(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// What every role assignment is checked against, and the look-ups
/// already made.
struct Context<'a> {
    hierarchy: &'a Hierarchy,
    roles: &'a Roles,
    principals: &'a PrincipalIndex,
    scopes: Scopes<'a>,
    role_refs: HashMap<&'a str, Option<usize>, RandomState>,
}

fn role_assignment<'a>(
    entry: RoleAssignmentRef<'a>,
    i: usize,
    context: &mut Context<'a>,
    problems: &mut Problems,
) -> Option<RoleAssignment> {
    let at = |field: &str| format!("roleAssignments[{i}]{field}");
    let id = entry.id;
    let before = problems.len();
    if let Some(given) = id {
        if given.trim().is_empty() {
            problems.push(at(".id"), id, "id is empty");
        }
    }
    let principal = context.principals.resolve(entry.principal);
    if principal.is_none() {
        problems.push_unknown(
            Named::Principal,
            entry.principal,
            at(".principal"),
            id,
            format!("unknown principal '{}'", entry.principal),
        );
    }
    let roles = context.roles;
    let role = *context
        .role_refs
        .entry(entry.role)
        .or_insert_with(|| roles.index.resolve(entry.role));
    if role.is_none() {
        problems.push_unknown(
            Named::Role,
            entry.role,
            at(".role"),
            id,
            format!(
                "unknown role '{}'{} (give a role id, name or earlier name; `rampart role --search TEXT` finds one)",
                entry.role,
                crate::snapshot::suggest::role_hint(entry.role, roles.names()),
            ),
        );
    }
    let scope = context
        .scopes
        .parse(entry.scope, || at(".scope"), id, problems);
    if let (Some(r), Some(s)) = (role, &scope) {
        let role = &roles.definitions[r];
        if !role_assignable_at(role, s, context.hierarchy) {
            let allowed: Vec<&str> = role.assignable_scopes.iter().map(Scope::as_str).collect();
            problems.push(
                at(".scope"),
                id,
                format!(
                    "role '{}' is not assignable at '{s}'; its assignableScopes are {allowed:?}",
                    role.role_name
                ),
            );
        }
    }
    let condition = match (entry.condition, entry.condition_version) {
        (None, None) => None,
        (text, version) => condition(text, version, &at(""), id, problems),
    };
    if problems.len() != before {
        return None;
    }
    let (principal, role, scope) = (principal?, role?, scope?);
    Some(RoleAssignment {
        id: entry.id.map(str::to_owned).unwrap_or_else(|| {
            generated_assignment_id(entry.principal, &roles.definitions[role].id, &scope)
        }),
        principal,
        role,
        scope,
        condition,
        derived_from_agent: None,
    })
}

/// A deterministic id for an assignment written without one, so that
/// explanations stay the same across reloads of the same content.
fn generated_assignment_id(principal: &str, role: &str, scope: &Scope) -> String {
    let digest = Sha256::digest(format!(
        "{}\n{}\n{}",
        principal_key(principal),
        role,
        scope.key()
    ));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    crate::model::uuid_text(&bytes)
}

pub(super) fn deny_assignments(
    entries: &[DenyAssignmentEntry],
    principals: &PrincipalIndex,
    problems: &mut Problems,
) -> Vec<DenyAssignment> {
    let mut out = Vec::with_capacity(entries.len());
    let mut ids: Declared = Declared::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("denyAssignments[{i}]");
        ids.declare_id(
            entry.id.to_ascii_lowercase(),
            (),
            "deny assignment",
            &entry.id,
            format!("{path}.id"),
            problems,
        );
        if let Some(d) = deny_assignment(entry, &path, principals, problems) {
            out.push(d);
        }
    }
    out
}

fn deny_assignment(
    entry: &DenyAssignmentEntry,
    path: &str,
    principals: &PrincipalIndex,
    problems: &mut Problems,
) -> Option<DenyAssignment> {
    let id = Some(entry.id.as_str());
    let before = problems.len();
    if entry.id.trim().is_empty() {
        problems.push(format!("{path}.id"), id, "id is empty");
    }
    let mut resolve_all = |list: &[String], field: &str| -> Vec<usize> {
        list.iter()
            .enumerate()
            .filter_map(|(p, pid)| {
                let found = principals.resolve(pid);
                if found.is_none() {
                    problems.push_unknown(
                        Named::Principal,
                        pid,
                        format!("{path}.{field}[{p}]"),
                        id,
                        format!("unknown principal '{pid}'"),
                    );
                }
                found
            })
            .collect()
    };
    let targets = resolve_all(&entry.principals, "principals");
    let exclude_principals = resolve_all(&entry.exclude_principals, "excludePrincipals");
    if entry.everyone && !entry.principals.is_empty() {
        problems.push(
            format!("{path}.principals"),
            id,
            "give either everyone: true or principals, not both",
        );
    }
    if !entry.everyone && entry.principals.is_empty() {
        problems.push(
            format!("{path}.principals"),
            id,
            "a deny assignment needs principals or everyone: true",
        );
    }
    if entry.actions.is_empty() && entry.data_actions.is_empty() {
        problems.push(
            format!("{path}.actions"),
            id,
            "a deny assignment needs actions or dataActions",
        );
    }
    let scope = scope(&entry.scope, &format!("{path}.scope"), id, problems);
    let mut list =
        |field: &str, list: &[String]| patterns(list, &format!("{path}.{field}"), id, problems);
    let actions = list("actions", &entry.actions);
    let not_actions = list("notActions", &entry.not_actions);
    let data_actions = list("dataActions", &entry.data_actions);
    let not_data_actions = list("notDataActions", &entry.not_data_actions);
    if problems.len() != before {
        return None;
    }
    Some(DenyAssignment {
        id: entry.id.clone(),
        principals: targets,
        everyone: entry.everyone,
        exclude_principals,
        scope: scope?,
        do_not_apply_to_child_scopes: entry.do_not_apply_to_child_scopes,
        actions,
        not_actions,
        data_actions,
        not_data_actions,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        assert_problems, assert_same, check, custom_role, valid, with_alice, GUID,
    };

    #[test]
    fn assignment_id_must_not_be_empty() {
        assert_problems(
            &with_alice(
                "roleAssignments: [{ id: \" \", principal: alice, role: Reader, scope: / }]\n",
            ),
            &[("roleAssignments[0].id", Some(" "), "id is empty")],
        );
    }

    #[test]
    fn assignment_ids_are_unique() {
        assert_problems(
            &with_alice("roleAssignments:\n  - { id: ra, principal: alice, role: Reader, scope: / }\n  - { id: RA, principal: alice, role: Owner, scope: / }\n"),
            &[("roleAssignments[1]", Some("RA"), "duplicate role assignment id 'RA'")],
        );
    }

    #[test]
    fn the_same_assignment_may_not_be_written_twice() {
        let problems = check(&with_alice(
            "roleAssignments:\n  - { principal: alice, role: Reader, scope: / }\n  - { principal: ALICE, role: reader, scope: / }\n",
        ));
        // `alice` is not a GUID, so `ALICE` is another (unknown) principal.
        assert_same(
            &problems.err().unwrap_or_default(),
            &[(
                "roleAssignments[1].principal",
                None,
                "unknown principal 'ALICE'",
            )],
            "",
        );
        let yaml = with_alice(
            "roleAssignments:\n  - { principal: alice, role: Reader, scope: / }\n  - { principal: alice, role: acdd72a7-3385-48ef-bd42-f606fba81ae7, scope: / }\n",
        );
        let problems = check(&yaml).err().unwrap_or_default();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "roleAssignments[1]");
        assert_eq!(
            problems[0].message,
            "the same principal, role and scope are assigned twice"
        );
    }

    #[test]
    fn generated_assignment_ids_are_stable() {
        let yaml = with_alice(
            "roleAssignments: [{ principal: alice, role: Reader, scope: /subscriptions/S1 }]\n",
        );
        let (a, b) = (valid(&yaml), valid(&yaml));
        assert_eq!(a.role_assignments[0].id, b.role_assignments[0].id);
        assert_eq!(a.role_assignments[0].id.len(), 36);
    }

    #[test]
    fn assignment_principal_must_exist() {
        assert_problems(
            "roleAssignments: [{ id: ra, principal: nobody, role: Reader, scope: / }]\n",
            &[(
                "roleAssignments[0].principal",
                Some("ra"),
                "unknown principal 'nobody'",
            )],
        );
    }

    #[test]
    fn assignment_role_must_exist() {
        assert_problems(
            &with_alice("roleAssignments: [{ id: ra, principal: alice, role: Nope, scope: / }]\n"),
            &[(
                "roleAssignments[0].role",
                Some("ra"),
                "unknown role 'Nope' (give a role id, name or earlier name; `rampart role --search TEXT` finds one)",
            )],
        );
    }

    #[test]
    fn assignment_scope_must_parse() {
        assert_problems(
            &with_alice("roleAssignments: [{ id: ra, principal: alice, role: Reader, scope: /subscriptions/s1/resourceGroups }]\n"),
            &[("roleAssignments[0].scope", Some("ra"), "scope '/subscriptions/s1/resourceGroups' has 'resourceGroups' without a resource group name")],
        );
    }

    #[test]
    fn assignment_scope_must_be_assignable_for_the_role() {
        let yaml = with_alice(&format!(
            "{}roleAssignments: [{{ id: ra, principal: alice, role: Narrow, scope: /subscriptions/s2 }}]\n",
            custom_role(&format!(r#"id: {GUID}, roleName: Narrow, permissions: [{{ actions: ["*/read"] }}], assignableScopes: [/subscriptions/s1]"#))
        ));
        assert_problems(
            &yaml,
            &[("roleAssignments[0].scope", Some("ra"), "role 'Narrow' is not assignable at '/subscriptions/s2'; its assignableScopes are [\"/subscriptions/s1\"]")],
        );
    }

    #[test]
    fn assignment_condition_must_parse_at_version_2_0() {
        assert_problems(
            &with_alice("roleAssignments:\n  - { id: ra, principal: alice, role: Reader, scope: /, conditionVersion: \"1.0\" }\n  - { id: rb, principal: alice, role: Reader, scope: /subscriptions/s1, condition: \"@Request[x] StringEquals\" }\n"),
            &[
                ("roleAssignments[0].conditionVersion", Some("ra"), "conditionVersion '1.0' is not supported; only 2.0 is"),
                ("roleAssignments[1].condition", Some("rb"), "condition does not parse: at column 25: expected a value, found the end of the condition"),
            ],
        );
    }

    fn deny(fields: &str) -> String {
        with_alice(&format!("denyAssignments: [{{ {fields} }}]\n"))
    }

    #[test]
    fn deny_id_must_not_be_empty() {
        assert_problems(
            &deny(r#"id: " ", principals: [alice], scope: /, actions: ["*"]"#),
            &[("denyAssignments[0].id", Some(" "), "id is empty")],
        );
    }

    #[test]
    fn deny_ids_are_unique() {
        assert_problems(
            &with_alice("denyAssignments:\n  - { id: d, everyone: true, scope: /, actions: [\"*\"] }\n  - { id: D, everyone: true, scope: /, actions: [\"*\"] }\n"),
            &[("denyAssignments[1].id", Some("D"), "duplicate deny assignment id 'D'")],
        );
    }

    #[test]
    fn deny_principals_must_exist() {
        assert_problems(
            &deny(
                r#"id: d, principals: [alice, nobody], excludePrincipals: [ghost], scope: /, actions: ["*"]"#,
            ),
            &[
                (
                    "denyAssignments[0].principals[1]",
                    Some("d"),
                    "unknown principal 'nobody'",
                ),
                (
                    "denyAssignments[0].excludePrincipals[0]",
                    Some("d"),
                    "unknown principal 'ghost'",
                ),
            ],
        );
    }

    #[test]
    fn deny_targets_everyone_or_principals_not_both() {
        assert_problems(
            &deny(r#"id: d, everyone: true, principals: [alice], scope: /, actions: ["*"]"#),
            &[(
                "denyAssignments[0].principals",
                Some("d"),
                "give either everyone: true or principals, not both",
            )],
        );
    }

    #[test]
    fn deny_targets_someone() {
        assert_problems(
            &deny(r#"id: d, scope: /, actions: ["*"]"#),
            &[(
                "denyAssignments[0].principals",
                Some("d"),
                "a deny assignment needs principals or everyone: true",
            )],
        );
    }

    #[test]
    fn deny_denies_something() {
        assert_problems(
            &deny(r#"id: d, everyone: true, scope: /, notActions: ["*"]"#),
            &[(
                "denyAssignments[0].actions",
                Some("d"),
                "a deny assignment needs actions or dataActions",
            )],
        );
    }

    #[test]
    fn deny_scope_must_parse() {
        assert_problems(
            &deny(r#"id: d, everyone: true, scope: /subscriptions, actions: ["*"]"#),
            &[(
                "denyAssignments[0].scope",
                Some("d"),
                "scope '/subscriptions' has 'subscriptions' without a subscription id",
            )],
        );
    }

    #[test]
    fn deny_patterns_must_parse_in_every_list() {
        assert_problems(
            &deny(
                r#"id: d, everyone: true, scope: /, actions: ["a b"], notActions: ["a b"], dataActions: ["a b"], notDataActions: ["a b"]"#,
            ),
            &[
                (
                    "denyAssignments[0].actions[0]",
                    Some("d"),
                    "pattern 'a b' contains whitespace or a control character at byte 1",
                ),
                (
                    "denyAssignments[0].notActions[0]",
                    Some("d"),
                    "pattern 'a b' contains whitespace or a control character at byte 1",
                ),
                (
                    "denyAssignments[0].dataActions[0]",
                    Some("d"),
                    "pattern 'a b' contains whitespace or a control character at byte 1",
                ),
                (
                    "denyAssignments[0].notDataActions[0]",
                    Some("d"),
                    "pattern 'a b' contains whitespace or a control character at byte 1",
                ),
            ],
        );
    }
}
