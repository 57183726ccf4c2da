//! Every problem of a snapshot that does not fit the schema, not just the
//! first.
//!
//! The strict parse stops at its first error. Only once it has failed,
//! this pass reads the document into a tree, deserializes each entry of
//! each top-level section on its own, and reports every entry that does not
//! fit (an unknown key, a wrong type, a missing field) at its path and
//! line, one problem per entry. The entries that fit are then validated as
//! usual, so their problems join the same report; a reference to an entry
//! that did not fit is not also reported as unknown (see
//! [`validate::Unparsed`]). A document that is not YAML at all keeps its
//! single syntax error.

mod tree;

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::error::Problem;
use super::locate::Location;
use super::schema::{RoleAssignments, SnapshotFile};
use super::suggest;
use super::validate::{self, Named, Unparsed};
use crate::model::RoleDefinition;
use tree::{Kind, OneEntry, Tree, TreeError};

/// Every structural problem of `text`, which the strict parse refused with
/// `strict`, and the problems of the entries that did parse, in file order.
/// Never empty: when this pass cannot tell more (the document is not YAML,
/// or it finds nothing the strict parse did not), the answer is `strict`.
pub fn every_problem(
    text: &str,
    strict: Problem,
    builtin_roles: &[RoleDefinition],
) -> Vec<Problem> {
    // serde_yaml's own parser decides whether the document is YAML at all.
    if serde_yaml::from_str::<serde::de::IgnoredAny>(text).is_err() {
        return vec![strict];
    }
    let Some(tree) = Tree::parse(text) else {
        return vec![strict];
    };
    let Kind::Map(sections) = &tree.node(tree.root()).kind else {
        return vec![strict];
    };
    let mut pass = Pass {
        tree: &tree,
        problems: Vec::new(),
        origins: HashMap::new(),
        unparsed: Unparsed::default(),
    };
    let mut file = SnapshotFile::default();
    let mut seen = HashSet::new();
    for &(key, value) in sections {
        let name = tree.scalar(key);
        if let Some(name) = name {
            if !seen.insert(name) {
                pass.problems.push(Problem {
                    path: String::new(),
                    id: None,
                    message: format!("duplicate field `{name}`"),
                    location: Some(tree.node(key).location),
                });
                continue;
            }
        }
        let read = match name {
            Some("managementGroups") => {
                pass.section("managementGroups", value, &mut file.management_groups)
            }
            Some("subscriptions") => pass.section("subscriptions", value, &mut file.subscriptions),
            Some("principals") => pass.section("principals", value, &mut file.principals),
            Some("roleDefinitions") => {
                pass.section("roleDefinitions", value, &mut file.role_definitions)
            }
            Some("roleAssignments") => {
                let (section, read) = RoleAssignments::read_each(|entries| {
                    pass.section("roleAssignments", value, entries)
                });
                if read {
                    file.role_assignments = section;
                }
                read
            }
            Some("denyAssignments") => {
                pass.section("denyAssignments", value, &mut file.deny_assignments)
            }
            Some("resources") => pass.section("resources", value, &mut file.resources),
            Some("accessKeys") => pass.section("accessKeys", value, &mut file.access_keys),
            Some("agents") => pass.section("agents", value, &mut file.agents),
            Some("routes") => pass.section("routes", value, &mut file.routes),
            _ => false,
        };
        if !read {
            pass.whole_key(key, value, &mut file);
        }
    }
    if pass.problems.is_empty() {
        return vec![strict];
    }
    let Pass {
        mut problems,
        origins,
        unparsed,
        ..
    } = pass;
    // Located on the tree already built, not by parsing the text again.
    let semantic = validate::parsed_entries(file, builtin_roles, unparsed, |path| {
        original_path(path, &origins)
    });
    problems.extend(semantic.into_iter().map(|problem| Problem {
        location: tree.locate(&problem.path),
        ..problem
    }));
    problems.sort_by_key(|p| p.location.map_or((usize::MAX, 0), |l| (l.line, l.column)));
    problems
}

/// The tolerant pass over one document.
struct Pass<'t> {
    tree: &'t Tree,
    problems: Vec<Problem>,
    /// For each section read entry by entry, the position in the file of
    /// each entry that parsed.
    origins: HashMap<&'static str, Vec<usize>>,
    unparsed: Unparsed,
}

impl<'t> Pass<'t> {
    /// Reads the sequence `value` of section `name` entry by entry into
    /// `out`; false when `value` is not a sequence.
    fn section<T: Deserialize<'t>>(
        &mut self,
        name: &'static str,
        value: usize,
        out: &mut Vec<T>,
    ) -> bool {
        let Kind::Seq(entries) = &self.tree.node(value).kind else {
            return false;
        };
        let origins = self.origins.entry(name).or_default();
        for (i, &entry) in entries.iter().enumerate() {
            match T::deserialize(self.tree.at(entry)) {
                Ok(parsed) => {
                    out.push(parsed);
                    origins.push(i);
                }
                Err(error) => {
                    let node = self.tree.node(entry).location;
                    let id = entry_id(self.tree, name, entry);
                    self.problems
                        .push(structural(error, &format!("{name}[{i}]"), id, node));
                    remember_unparsed(&mut self.unparsed, self.tree, name, entry);
                }
            }
        }
        true
    }

    /// Reads one top-level key as a whole: `revision`, an unknown key, or a
    /// section that is not a sequence.
    fn whole_key(&mut self, key: usize, value: usize, file: &mut SnapshotFile) {
        let one = OneEntry {
            tree: self.tree,
            key,
            value,
        };
        match SnapshotFile::deserialize(one) {
            Ok(part) => adopt(file, part, &mut self.origins),
            Err(error) => {
                let at = self.tree.node(key).location;
                self.problems.push(structural(error, "", None, at));
                if let Some(named) = self.tree.scalar(key).and_then(section_names) {
                    self.unparsed.insert_section(named);
                }
            }
        }
    }
}

/// Moves what a single top-level key held into `file`.
fn adopt(
    file: &mut SnapshotFile,
    part: SnapshotFile,
    origins: &mut HashMap<&'static str, Vec<usize>>,
) {
    fn extend<T>(
        into: &mut Vec<T>,
        from: Vec<T>,
        name: &'static str,
        origins: &mut HashMap<&'static str, Vec<usize>>,
    ) {
        if !from.is_empty() {
            origins.entry(name).or_default().extend(0..from.len());
            into.extend(from);
        }
    }
    // Written out whole, so that a new section cannot be forgotten here.
    let SnapshotFile {
        revision,
        management_groups,
        subscriptions,
        principals,
        role_definitions,
        role_assignments,
        deny_assignments,
        resources,
        access_keys,
        agents,
        routes,
    } = part;
    if revision.is_some() {
        file.revision = revision;
    }
    extend(
        &mut file.management_groups,
        management_groups,
        "managementGroups",
        origins,
    );
    extend(
        &mut file.subscriptions,
        subscriptions,
        "subscriptions",
        origins,
    );
    extend(&mut file.principals, principals, "principals", origins);
    extend(
        &mut file.role_definitions,
        role_definitions,
        "roleDefinitions",
        origins,
    );
    // Sections appear once (a repeated key is a problem of its own), so
    // there is nothing here yet to merge with.
    if !role_assignments.is_empty() {
        origins
            .entry("roleAssignments")
            .or_default()
            .extend(0..role_assignments.len());
        file.role_assignments = role_assignments;
    }
    extend(
        &mut file.deny_assignments,
        deny_assignments,
        "denyAssignments",
        origins,
    );
    extend(&mut file.resources, resources, "resources", origins);
    extend(&mut file.access_keys, access_keys, "accessKeys", origins);
    extend(&mut file.agents, agents, "agents", origins);
    extend(&mut file.routes, routes, "routes", origins);
}

/// A structural problem from a deserialization error below `base`.
fn structural(error: TreeError, base: &str, id: Option<String>, at: Location) -> Problem {
    Problem {
        path: error.path(base),
        id,
        location: Some(error.location.unwrap_or(at)),
        message: suggest::unknown_field(error.message),
    }
}

/// The id an entry of `section` gives itself, as the validator names it.
fn entry_id(tree: &Tree, section: &str, entry: usize) -> Option<String> {
    let key = match section {
        "resources" => "scope",
        "routes" => "path",
        _ => "id",
    };
    tree.field(entry, key).map(str::to_owned)
}

/// What the entries of `section` are named as in references, if other
/// entries refer to them.
fn section_names(section: &str) -> Option<Named> {
    match section {
        "managementGroups" => Some(Named::ManagementGroup),
        "principals" => Some(Named::Principal),
        "roleDefinitions" => Some(Named::Role),
        _ => None,
    }
}

/// Records what other entries could call an entry that did not parse.
fn remember_unparsed(unparsed: &mut Unparsed, tree: &Tree, section: &str, entry: usize) {
    let Some(named) = section_names(section) else {
        return;
    };
    if let Some(id) = tree.field(entry, "id") {
        unparsed.insert(named, id);
    }
    if named == Named::Role {
        for name in tree
            .field(entry, "roleName")
            .into_iter()
            .chain(tree.list_field(entry, "aliases"))
        {
            unparsed.insert(named, name);
        }
    }
}

/// `path` with the index of its section's entry (`roleAssignments[3]`)
/// changed from its place among the entries that parsed to its place in
/// the file.
fn original_path(path: &str, origins: &HashMap<&'static str, Vec<usize>>) -> String {
    let renumbered = || {
        let open = path.find('[')?;
        let close = open + path[open..].find(']')?;
        let section = &path[..open];
        let index: usize = path[open + 1..close].parse().ok()?;
        let original = origins.get(section)?.get(index)?;
        Some(format!("{section}[{original}]{}", &path[close + 1..]))
    };
    renumbered().unwrap_or_else(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::snapshot::load_str;

    const GUID: &str = "11111111-0000-4000-8000-000000000001";

    /// The problems of a snapshot that must be refused: path, id, message
    /// and line of each, in report order.
    fn problems(yaml: &str) -> Vec<(String, Option<String>, String, Option<usize>)> {
        let error = load_str(yaml, "test")
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{yaml}"));
        error
            .problems
            .into_iter()
            .map(|p| (p.path, p.id, p.message, p.location.map(|l| l.line)))
            .collect()
    }

    fn expect(
        path: &str,
        id: Option<&str>,
        message: &str,
        line: usize,
    ) -> (String, Option<String>, String, Option<usize>) {
        (
            path.to_owned(),
            id.map(str::to_owned),
            message.to_owned(),
            Some(line),
        )
    }

    const UNKNOWN_ROLE_TAIL: &str =
        " (give a role id, name or earlier name; `rampart role --search TEXT` finds one)";

    #[test]
    fn a_key_typo_and_an_unknown_role_are_two_problems_in_one_report() {
        let yaml = format!(
            "principals: [{{ id: alice, type: User }}]\n\
             roleDefinitions:\n\
             \x20 - id: {GUID}\n\
             \x20   roleName: Auditor\n\
             \x20   permissions: [{{ actions: ['*/read'], notAction: ['*/delete'] }}]\n\
             \x20   assignableScopes: [/]\n\
             roleAssignments:\n\
             \x20 - {{ id: ra-1, principal: alice, role: Reeder, scope: / }}\n"
        );
        assert_eq!(
            problems(&yaml),
            [
                expect(
                    "roleDefinitions[0].permissions[0]",
                    Some(GUID),
                    "unknown field `notAction`, expected one of `actions`, `notActions`, `dataActions`, `notDataActions`, `condition`, `conditionVersion` (did you mean `notActions`?)",
                    5,
                ),
                expect(
                    "roleAssignments[0].role",
                    Some("ra-1"),
                    &format!("unknown role 'Reeder' (did you mean 'Reader'?){UNKNOWN_ROLE_TAIL}"),
                    8,
                ),
            ]
        );
    }

    #[test]
    fn unknown_keys_in_several_entries_are_all_reported() {
        let yaml = "principals:\n  - { id: alice, typ: User }\n  - { id: bob, type: User, displayname: Bob }\nroleAssignments:\n  - { principal: bob, role: Reader, scope: /, descripton: x }\nroleAssignmnets: []\n";
        assert_eq!(
            problems(yaml),
            [
                expect(
                    "principals[0]",
                    Some("alice"),
                    "unknown field `typ`, expected one of `id`, `type`, `displayName`, `memberOf`, `attributes` (did you mean `type`?)",
                    2,
                ),
                expect(
                    "principals[1]",
                    Some("bob"),
                    "unknown field `displayname`, expected one of `id`, `type`, `displayName`, `memberOf`, `attributes` (did you mean `displayName`?)",
                    3,
                ),
                expect(
                    "roleAssignments[0]",
                    None,
                    "unknown field `descripton`, expected one of `id`, `principal`, `role`, `scope`, `condition`, `conditionVersion`, `description` (did you mean `description`?)",
                    5,
                ),
                expect(
                    "",
                    None,
                    "unknown field `roleAssignmnets`, expected one of `revision`, `managementGroups`, `subscriptions`, `principals`, `roleDefinitions`, `roleAssignments`, `denyAssignments`, `resources`, `accessKeys`, `agents`, `routes` (did you mean `roleAssignments`?)",
                    6,
                ),
            ]
        );
    }

    #[test]
    fn a_wrong_type_is_reported_at_the_field_and_the_rest_is_still_read() {
        let yaml = "revision: [r1]\nprincipals:\n  - { id: alice, type: User, memberOf: admins }\n  - { id: bob, type: Robot }\nagents:\n  - id: ag\n    principal: alice\n    resource: /subscriptions/s1/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/a\n    permissionLevel: Reader\n    executionMode: Auto\n    elevation: { maxRequestsPerMinute: lots }\nroleAssignments:\n  - { principal: carol, role: Reader, scope: / }\n";
        assert_eq!(
            problems(yaml),
            [
                expect(
                    "revision",
                    None,
                    "invalid type: sequence, expected a string",
                    1,
                ),
                expect(
                    "principals[0].memberOf",
                    Some("alice"),
                    "invalid type: string \"admins\", expected a sequence",
                    3,
                ),
                expect(
                    "principals[1].type",
                    Some("bob"),
                    "unknown variant `Robot`, expected one of `User`, `Group`, `ServicePrincipal`, `ManagedIdentity`",
                    4,
                ),
                expect(
                    "agents[0].elevation.maxRequestsPerMinute",
                    Some("ag"),
                    "invalid type: string \"lots\", expected u32",
                    11,
                ),
                expect(
                    "roleAssignments[0].principal",
                    None,
                    "unknown principal 'carol'",
                    13,
                ),
            ]
        );
    }

    #[test]
    fn a_missing_field_is_reported_at_its_entry() {
        let yaml = "principals: [{ id: alice, type: User }]\nroleAssignments:\n  - { id: ra-1, principal: alice, scope: / }\n  - { id: ra-2, principal: alice, role: Nope, scope: / }\n";
        assert_eq!(
            problems(yaml),
            [
                expect(
                    "roleAssignments[0]",
                    Some("ra-1"),
                    "missing field `role`",
                    3
                ),
                // Numbered as in the file, though the first entry was left out.
                expect(
                    "roleAssignments[1].role",
                    Some("ra-2"),
                    &format!("unknown role 'Nope'{UNKNOWN_ROLE_TAIL}"),
                    4,
                ),
            ]
        );
    }

    #[test]
    fn references_to_an_entry_that_did_not_parse_are_not_reported_as_unknown() {
        let yaml = format!(
            "managementGroups:\n\
             \x20 - {{ id: root, parnt: none }}\n\
             \x20 - {{ id: child, parent: root }}\n\
             subscriptions: [{{ id: s1, managementGroup: ROOT }}]\n\
             principals:\n\
             \x20 - {{ id: alice, type: User, memberOf: [admins] }}\n\
             \x20 - {{ id: admins, type: Group, colour: blue }}\n\
             roleDefinitions:\n\
             \x20 - {{ id: {GUID}, roleName: Auditor, aliases: [Old Auditor], permissions: [{{ notAction: [x] }}], assignableScopes: [/] }}\n\
             roleAssignments:\n\
             \x20 - {{ principal: alice, role: auditor, scope: / }}\n\
             \x20 - {{ principal: admins, role: Old Auditor, scope: / }}\n\
             \x20 - {{ principal: alice, role: /providers/Microsoft.Authorization/roleDefinitions/{GUID}, scope: /subscriptions/s1 }}\n\
             \x20 - {{ principal: alice, role: Auditer, scope: /subscriptions/s2 }}\n\
             denyAssignments:\n\
             \x20 - {{ id: d1, principals: [admins, ghost], scope: /, actions: ['*'] }}\n"
        );
        let found = problems(&yaml);
        let paths: Vec<&str> = found.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "managementGroups[0]",
                "principals[1]",
                "roleDefinitions[0].permissions[0]",
                // A name close to the broken role's is still unknown.
                "roleAssignments[3].role",
                "denyAssignments[0].principals[1]",
            ],
            "{found:#?}"
        );
        assert_eq!(found[4].2, "unknown principal 'ghost'");
    }

    #[test]
    fn a_section_that_is_not_a_list_hides_references_to_its_entries_only() {
        let yaml = "principals: { alice: User }\nroleAssignments:\n  - { principal: alice, role: Reader, scope: / }\n  - { principal: bob, role: Nope, scope: / }\n";
        assert_eq!(
            problems(yaml),
            [
                expect(
                    "principals",
                    None,
                    "invalid type: map, expected a sequence",
                    1,
                ),
                expect(
                    "roleAssignments[1].role",
                    None,
                    &format!("unknown role 'Nope'{UNKNOWN_ROLE_TAIL}"),
                    4,
                ),
            ]
        );
    }

    #[test]
    fn a_yaml_syntax_error_stays_a_single_located_problem() {
        let yaml = "principals:\n  - { id: alice, type: User\nroleAssignments: []\n";
        let found = problems(yaml);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, "");
        assert!(found[0].3.is_some(), "{found:#?}");
        let strict = serde_yaml::from_str::<SnapshotFile>(yaml)
            .err()
            .map(|e| e.to_string());
        assert_eq!(Some(found[0].2.clone()), strict);
    }

    #[test]
    fn a_key_written_twice_is_reported_at_the_second() {
        let yaml = "revision: a\nprincipals: []\nrevision: b\n";
        assert_eq!(
            problems(yaml),
            [expect("", None, "duplicate field `revision`", 3)]
        );
    }

    #[test]
    fn paths_are_renumbered_to_the_file() {
        let origins = HashMap::from([("roleAssignments", vec![1, 3])]);
        assert_eq!(
            original_path("roleAssignments[1].role", &origins),
            "roleAssignments[3].role"
        );
        assert_eq!(
            original_path("roleAssignments[0]", &origins),
            "roleAssignments[1]"
        );
        assert_eq!(
            original_path("principals[0].id", &origins),
            "principals[0].id"
        );
        assert_eq!(original_path("", &origins), "");
        assert_eq!(
            original_path("roleAssignments[x]", &origins),
            "roleAssignments[x]"
        );
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "id",
                "type",
                "typ",
                "role",
                "principal",
                "scope",
                "roleName",
                "permissions",
                "actions",
                "notAction",
                "assignableScopes",
                "memberOf",
                "parent",
                "elevation",
                "maxPerHour",
                "managedScopes",
                "permissionLevel",
                "executionMode",
                "resource",
                "method",
                "path",
                "operation",
            ])
            .prop_map(str::to_owned),
            "[a-z]{1,5}",
        ]
    }

    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i32>().prop_map(serde_json::Value::from),
            "[a-zA-Z0-9/ *.~-]{0,10}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("Reader")),
            Just(serde_json::Value::from("User")),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                prop::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn document() -> impl Strategy<Value = serde_json::Value> {
        let section = prop::sample::select(vec![
            "revision",
            "managementGroups",
            "subscriptions",
            "principals",
            "roleDefinitions",
            "roleAssignments",
            "denyAssignments",
            "resources",
            "accessKeys",
            "agents",
            "routes",
            "roleAssignmnets",
        ]);
        let entry = prop::collection::btree_map(key(), value(), 0..5)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()));
        let body = prop_oneof![
            3 => prop::collection::vec(entry, 0..4).prop_map(serde_json::Value::from),
            1 => value(),
        ];
        prop::collection::btree_map(section, body, 0..4).prop_map(|m| {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        })
    }

    proptest! {
        /// A snapshot the strict parse refuses is never reported valid: the
        /// tolerant pass always names at least one problem.
        #[test]
        fn a_refused_snapshot_always_has_a_problem(doc in document(), as_json in any::<bool>()) {
            let text = if as_json {
                serde_json::to_string(&doc).map_err(|e| e.to_string())
            } else {
                serde_yaml::to_string(&doc).map_err(|e| e.to_string())
            }
            .unwrap_or_else(|e| panic!("{e}"));
            if let Err(first) = super::super::parse(&text) {
                let builtin = crate::snapshot::catalog::builtin_roles().unwrap_or_else(|e| panic!("{e}"));
                let found = every_problem(&text, first, builtin);
                prop_assert!(!found.is_empty(), "{text}");
            }
        }

        #[test]
        fn any_text_gets_an_answer_without_panicking(text in "\\PC{0,120}") {
            if let Err(first) = super::super::parse(&text) {
                let builtin = crate::snapshot::catalog::builtin_roles().unwrap_or_else(|e| panic!("{e}"));
                prop_assert!(!every_problem(&text, first, builtin).is_empty());
            }
        }
    }
}
