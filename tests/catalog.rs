//! The embedded built-in catalog against its sources: every role named in
//! seed 002 resolves, and every embedded role equals Azure's published
//! definition (`../shared/catalog/azure-builtin-roles.json`) field by field.
//! Both skip, saying so, where `../shared/` is absent.

use std::path::PathBuf;

use rampart::model::Condition;
use rampart::snapshot::catalog;

fn shared(path: &str) -> Option<String> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(path);
    std::fs::read_to_string(p).ok()
}

/// The role rows of seed 002: the lines under each "Built-in role
/// Description" header, up to the next blank line.
fn seed_002_rows(text: &str) -> Vec<&str> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let line = line.trim();
        if line == "Built-in role Description" {
            in_table = true;
        } else if line.is_empty() {
            in_table = false;
        } else if in_table {
            rows.push(line);
        }
    }
    rows
}

#[test]
fn every_role_named_in_seed_002_resolves() {
    let Some(seed) =
        std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/seeds"))
            .ok()
            .and_then(|d| {
                d.filter_map(Result::ok)
                    .find(|e| e.file_name().to_string_lossy().starts_with("002_"))
            })
            .and_then(|e| std::fs::read_to_string(e.path()).ok())
    else {
        eprintln!("skipped: ../shared/seeds is not here (it exists only in the workspace and CI)");
        return;
    };
    let roles = catalog::builtin_roles().unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = roles
        .iter()
        .flat_map(|r| {
            std::iter::once(r.role_name.as_str()).chain(r.aliases.iter().map(String::as_str))
        })
        .collect();
    let rows = seed_002_rows(&seed);
    assert!(rows.len() >= 170, "only {} rows parsed", rows.len());
    let mut unresolved = Vec::new();
    for row in &rows {
        // The row is "{role name} {description}": take the longest name
        // that the row starts with, then resolve it through the catalog.
        let name = names
            .iter()
            .filter(|n| {
                row.len() > n.len()
                    && row[..n.len()].eq_ignore_ascii_case(n)
                    && row.as_bytes()[n.len()] == b' '
            })
            .max_by_key(|n| n.len());
        match name.and_then(|n| catalog::find(n)) {
            Some(_) => {}
            None => unresolved.push(*row),
        }
    }
    assert!(
        unresolved.is_empty(),
        "{} rows name no embedded role:\n{}",
        unresolved.len(),
        unresolved.join("\n")
    );
}

#[test]
fn every_embedded_role_equals_the_published_definition() {
    let Some(text) = shared("catalog/azure-builtin-roles.json") else {
        eprintln!(
            "skipped: ../shared/catalog is not here (it exists only in the workspace and CI)"
        );
        return;
    };
    let reference: Vec<serde_json::Value> = serde_json::from_str(&text).expect("reference JSON");
    let roles = catalog::builtin_roles().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        roles.len(),
        reference.len(),
        "the catalog holds exactly the published roles"
    );
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut differences = Vec::new();
    for want in &reference {
        let id = want["id"].as_str().unwrap_or_default();
        let Some(got) = roles.iter().find(|r| r.id == id) else {
            differences.push(format!("{id}: missing"));
            continue;
        };
        let mut diff = |field: &str, ok: bool| {
            if !ok {
                differences.push(format!("{id} ({}): {field} differs", got.role_name));
            }
        };
        diff(
            "roleName",
            got.role_name == want["roleName"].as_str().unwrap_or_default(),
        );
        let mut aliases = got.aliases.clone();
        aliases.sort();
        let mut want_aliases = strings(&want["aliases"]);
        want_aliases.sort();
        diff("aliases", aliases == want_aliases);
        let scopes: Vec<String> = got
            .assignable_scopes
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        diff(
            "assignableScopes",
            scopes == strings(&want["assignableScopes"]),
        );
        let blocks = want["permissions"].as_array().cloned().unwrap_or_default();
        diff("permissions (count)", blocks.len() == got.permissions.len());
        for (b, (mine, theirs)) in got.permissions.iter().zip(&blocks).enumerate() {
            diff(
                &format!("permissions[{b}].actions"),
                mine.actions.sources() == strings(&theirs["actions"]),
            );
            diff(
                &format!("permissions[{b}].notActions"),
                mine.not_actions.sources() == strings(&theirs["notActions"]),
            );
            diff(
                &format!("permissions[{b}].dataActions"),
                mine.data_actions.sources() == strings(&theirs["dataActions"]),
            );
            diff(
                &format!("permissions[{b}].notDataActions"),
                mine.not_data_actions.sources() == strings(&theirs["notDataActions"]),
            );
            diff(
                &format!("permissions[{b}].condition"),
                mine.condition.as_ref().map(|c| c.as_str()) == theirs["condition"].as_str(),
            );
            if let Some(version) = theirs["conditionVersion"].as_str() {
                diff(
                    &format!("permissions[{b}].conditionVersion"),
                    version == "2.0",
                );
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn every_published_condition_parses() {
    let Some(text) = shared("catalog/azure-builtin-roles.json") else {
        eprintln!(
            "skipped: ../shared/catalog is not here (it exists only in the workspace and CI)"
        );
        return;
    };
    let reference: Vec<serde_json::Value> = serde_json::from_str(&text).expect("reference JSON");
    let mut count = 0;
    for role in &reference {
        for block in role["permissions"].as_array().into_iter().flatten() {
            if let Some(condition) = block["condition"].as_str() {
                count += 1;
                if let Err(e) = Condition::parse(condition) {
                    panic!("{}: {e}\n{condition}", role["roleName"]);
                }
            }
        }
    }
    assert!(count > 0);
}

#[test]
fn renamed_roles_resolve_by_every_name_in_any_case() {
    let roles = catalog::builtin_roles().unwrap_or_else(|e| panic!("{e}"));
    let renamed: Vec<_> = roles.iter().filter(|r| !r.aliases.is_empty()).collect();
    assert!(renamed.len() >= 4, "the Foundry renames at least");
    for role in renamed {
        for name in std::iter::once(&role.role_name).chain(&role.aliases) {
            for variant in [name.clone(), name.to_lowercase(), name.to_uppercase()] {
                assert_eq!(
                    catalog::find(&variant).map(|r| &r.id),
                    Some(&role.id),
                    "{variant}"
                );
            }
        }
        assert_eq!(
            catalog::find(&role.id.to_uppercase()).map(|r| &r.id),
            Some(&role.id)
        );
    }
}
