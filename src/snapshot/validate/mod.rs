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
    /// Entries left out because they did not parse: a reference to one is
    /// not also reported as unknown.
    unparsed: Unparsed,
}

/// What a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    ManagementGroup,
    Principal,
    Role,
}

/// The ids (and, for roles, the names) of entries that failed to parse,
/// ASCII-lowercase, and the sections that failed as a whole (not a list).
/// When a snapshot has structural problems, the entries
/// that parsed are still validated; an entry referring to one that did not
/// would otherwise get a second, misleading "unknown" problem, so such a
/// reference is left for the next validation, after the fix.
#[derive(Debug, Default)]
pub struct Unparsed {
    management_groups: HashSet<String>,
    principals: HashSet<String>,
    roles: HashSet<String>,
    /// Kinds whose whole section did not parse: every reference to one
    /// may name a missing entry.
    whole_sections: Vec<Named>,
}

impl Unparsed {
    /// Remembers that an entry naming itself `name` did not parse.
    pub fn insert(&mut self, named: Named, name: &str) {
        let set = match named {
            Named::ManagementGroup => &mut self.management_groups,
            Named::Principal => &mut self.principals,
            Named::Role => &mut self.roles,
        };
        set.insert(name.trim().to_ascii_lowercase());
    }

    /// Remembers that the whole section of `named` entries did not parse.
    pub fn insert_section(&mut self, named: Named) {
        self.whole_sections.push(named);
    }

    /// Whether `reference` names an entry that did not parse.
    pub fn contains(&self, named: Named, reference: &str) -> bool {
        if self.whole_sections.contains(&named) {
            return true;
        }
        let set = match named {
            Named::ManagementGroup => &self.management_groups,
            Named::Principal => &self.principals,
            Named::Role => &self.roles,
        };
        if set.is_empty() {
            return false;
        }
        let key = reference.trim().to_ascii_lowercase();
        // A role may be named by its full resource id.
        let key = match named {
            Named::Role => key
                .rsplit_once("/roledefinitions/")
                .map_or(key.as_str(), |(_, id)| id),
            _ => key.as_str(),
        };
        set.contains(key)
    }
}

impl Problems {
    pub fn new() -> Self {
        Problems::default()
    }

    /// Reports a reference that names nothing, unless it names an entry
    /// that did not parse (reported already, as a structural problem).
    pub fn push_unknown(
        &mut self,
        named: Named,
        reference: &str,
        path: impl Into<String>,
        id: Option<&str>,
        message: impl Into<String>,
    ) {
        if !self.unparsed.contains(named, reference) {
            self.push(path, id, message);
        }
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
        located(self.list, source)
    }
}

/// `list`, each problem at the position of its path (or of its nearest
/// located parent) in `source`, in file order.
fn located(mut list: Vec<Problem>, source: &str) -> Vec<Problem> {
    let wanted: HashSet<&str> = list.iter().flat_map(|p| parents(&p.path)).collect();
    let map = SourceMap::build_for(source, &wanted);
    for problem in &mut list {
        problem.location = parents(&problem.path).find_map(|p| map.get(p));
    }
    list.sort_by_key(|p| p.location.map_or((usize::MAX, 0), |l| (l.line, l.column)));
    list
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

/// Problems without their places yet: located in the text once it is at
/// hand again.
#[derive(Debug)]
pub struct Unlocated(Vec<Problem>);

impl Unlocated {
    /// Each problem at the position of its path in `source`, in file order.
    pub fn into_located(self, source: &str) -> Vec<Problem> {
        located(self.0, source)
    }
}

/// As [`snapshot`], for a file whose text is not at hand (it was read as
/// a stream): the problems come unlocated, for the caller to locate in
/// the text it reads again.
pub fn snapshot_unlocated(
    file: SnapshotFile,
    builtin_roles: &[RoleDefinition],
    default_revision: String,
) -> Result<Validated, Unlocated> {
    check(file, builtin_roles, default_revision, Problems::new()).map_err(Unlocated)
}

/// The problems of the entries of a snapshot that parsed when others did
/// not (listed in `unparsed`), not yet located. `file` holds only the
/// entries that parsed, so `original_path` turns a path into one of `file`
/// (`roleAssignments[3]`) into the path of the same entry in the source
/// (`roleAssignments[4]`).
pub fn parsed_entries(
    file: SnapshotFile,
    builtin_roles: &[RoleDefinition],
    unparsed: Unparsed,
    original_path: impl Fn(&str) -> String,
) -> Vec<Problem> {
    let problems = Problems {
        list: Vec::new(),
        unparsed,
    };
    match check(file, builtin_roles, String::new(), problems) {
        Ok(_) => Vec::new(),
        Err(mut list) => {
            for problem in &mut list {
                problem.path = original_path(&problem.path);
            }
            list
        }
    }
}

/// Validates `file` into a snapshot, adding every problem to `problems`.
fn check(
    file: SnapshotFile,
    builtin_roles: &[RoleDefinition],
    default_revision: String,
    mut problems: Problems,
) -> Result<Validated, Vec<Problem>> {
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
        return Err(problems.list);
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
