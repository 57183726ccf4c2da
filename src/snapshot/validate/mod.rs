//! Validation: the snapshot file as written becomes a [`Tenant`], or every
//! problem in it is reported at once, each at the path of the
//! field to fix. One module per concern; this one drives them in the order
//! references need (hierarchy and principals, then roles, assignments,
//! resources and agents), and the ext_authz routes beside them.

mod agents;
mod assignments;
mod fields;
mod hierarchy;
mod principals;
mod resources;
mod roles;
mod routes;
#[cfg(test)]
mod testing;

use super::error::Problem;
use std::collections::HashSet;

use super::locate::SourceMap;
use super::schema::SnapshotFile;
use crate::extauthz::RouteTable;
use crate::model::{RoleDefinition, Tenant};

pub use roles::role_definitions;

/// Collects problems; where they are in the file is found only once
/// validation has failed, so a valid snapshot never pays for a source map.
#[derive(Default)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    pub fn new() -> Self {
        Problems::default()
    }

    pub fn push(&mut self, path: impl Into<String>, id: Option<&str>, message: impl Into<String>) {
        self.list.push(Problem {
            path: path.into(),
            id: id.map(str::to_owned),
            message: message.into(),
            location: None,
        });
    }

    /// How many problems so far: an entry whose checks added none is valid.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The problems as pushed, without locations.
    pub fn into_vec(self) -> Vec<Problem> {
        self.list
    }

    /// The problems, each at the position of its path (or of its nearest
    /// located parent) in `source`, in file order; problems without a
    /// position (none today) last.
    pub fn into_located(self, source: &str) -> Vec<Problem> {
        let mut list = self.list;
        let wanted: HashSet<&str> = list.iter().flat_map(|p| parents(&p.path)).collect();
        let map = SourceMap::build_for(source, &wanted);
        for problem in &mut list {
            problem.location = parents(&problem.path).find_map(|p| map.get(p));
        }
        list.sort_by_key(|p| p.location.map_or((usize::MAX, 0), |l| (l.line, l.column)));
        list
    }
}

/// `path` and its parents, nearest first: `a[1].b`, `a[1]`, `a`.
fn parents(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.rfind(['.', '[']).map(|cut| &current[..cut]);
        Some(current)
    })
}

/// A validated snapshot: the tenant, and the routes that map HTTP
/// requests to its operations.
pub struct Validated {
    pub tenant: Tenant,
    pub routes: RouteTable,
}

/// Validates a whole snapshot against the built-in roles; `source` is the
/// text `file` was read from, read again only to locate problems.
pub fn tenant(
    file: SnapshotFile,
    source: &str,
    builtin_roles: &[RoleDefinition],
    default_revision: String,
) -> Result<Tenant, Vec<Problem>> {
    snapshot(file, source, builtin_roles, default_revision).map(|v| v.tenant)
}

/// Validates a whole snapshot, routes included, against the built-in roles.
pub fn snapshot(
    file: SnapshotFile,
    source: &str,
    builtin_roles: &[RoleDefinition],
    default_revision: String,
) -> Result<Validated, Vec<Problem>> {
    snapshot_unlocated(file, builtin_roles, default_revision).map_err(|p| p.into_located(source))
}

/// As [`snapshot`], for a file whose text is not at hand (it was read as
/// a stream): the problems come unlocated, for the caller to locate in
/// the text it reads again.
pub fn snapshot_unlocated(
    file: SnapshotFile,
    builtin_roles: &[RoleDefinition],
    default_revision: String,
) -> Result<Validated, Problems> {
    let mut problems = Problems::new();
    let routes = routes::routes(&file.routes, &mut problems);
    let hierarchy = hierarchy::hierarchy(&file, &mut problems);
    let (principals, principal_index) = principals::principals(&file, &mut problems);
    let roles = roles::Roles::new(builtin_roles, &file.role_definitions, &mut problems);
    let mut role_assignments = assignments::role_assignments(
        &file.role_assignments,
        &hierarchy,
        &roles,
        &principal_index,
        &mut problems,
    );
    let deny_assignments =
        assignments::deny_assignments(&file.deny_assignments, &principal_index, &mut problems);
    let resources = resources::resources(&file.resources, &mut problems);
    let access_keys = resources::access_keys(&file.access_keys, &principal_index, &mut problems);
    let agent_context = agents::Context {
        principals: &principals,
        principal_index: &principal_index,
        roles: &roles.index,
    };
    let agents = agents::agents(&file.agents, &agent_context, &mut problems);
    role_assignments.extend(agents::derived_assignments(
        &agents,
        &roles,
        &hierarchy,
        &mut problems,
    ));

    if !problems.is_empty() {
        return Err(problems);
    }
    let tenant = Tenant {
        revision: file.revision.unwrap_or(default_revision),
        hierarchy,
        principals,
        role_definitions: roles.definitions,
        builtin_role_count: roles.builtin_count,
        role_assignments,
        deny_assignments,
        resources,
        access_keys,
        agents,
    };
    Ok(Validated { tenant, routes })
}

#[cfg(test)]
mod tests {
    use super::testing::{assert_problems, valid, with_alice};

    #[test]
    fn an_empty_tenant_is_valid_and_gets_the_default_revision() {
        let t = valid("{}");
        assert_eq!(t.revision, "sha256:test");
        assert_eq!(valid("revision: r7\n").revision, "r7");
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        // Principals come first in the file but are validated after the hierarchy.
        assert_problems(
            "principals: [{ id: alice, type: User, memberOf: [nobody] }]\nmanagementGroups: [{ id: a, parent: b }]\n",
            &[
                ("principals[0].memberOf[0]", Some("alice"), "unknown group 'nobody'"),
                ("managementGroups[0].parent", Some("a"), "unknown parent management group 'b'"),
            ],
        );
    }

    #[test]
    fn an_entry_with_a_problem_does_not_hide_the_others() {
        assert_problems(
            &with_alice("roleAssignments:\n  - { id: ra, principal: nobody, role: Nope, scope: / }\n  - { id: rb, principal: alice, role: Reader, scope: /subscriptions }\n"),
            &[
                ("roleAssignments[0].principal", Some("ra"), "unknown principal 'nobody'"),
                ("roleAssignments[0].role", Some("ra"), "unknown role 'Nope' (give a role id, name or earlier name; `rampart role --search TEXT` finds one)"),
                ("roleAssignments[1].scope", Some("rb"), "scope '/subscriptions' has 'subscriptions' without a subscription id"),
            ],
        );
    }
}
