//! Validating YAML fixtures in rule tests.

use super::{snapshot, tenant, Validated};
use crate::model::{RoleDefinition, Tenant};
use crate::snapshot::error::Problem;
use crate::snapshot::schema::SnapshotFile;

/// Validates snapshot YAML against `builtin` roles.
pub fn check_with(yaml: &str, builtin: &[RoleDefinition]) -> Result<Tenant, Vec<Problem>> {
    let file: SnapshotFile =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("fixture does not parse: {e}"));
    tenant(file, yaml, builtin, "sha256:test".into())
}

/// The validated snapshot (routes included) of YAML that must be valid.
pub fn valid_snapshot(yaml: &str) -> Validated {
    let file: SnapshotFile =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("fixture does not parse: {e}"));
    let builtin = crate::snapshot::catalog::builtin_roles().unwrap_or_else(|e| panic!("{e}"));
    snapshot(file, yaml, builtin, "sha256:test".into())
        .unwrap_or_else(|p| panic!("expected valid, got {p:#?}"))
}

/// Validates snapshot YAML against the embedded catalog.
pub fn check(yaml: &str) -> Result<Tenant, Vec<Problem>> {
    let builtin = crate::snapshot::catalog::builtin_roles().unwrap_or_else(|e| panic!("{e}"));
    check_with(yaml, builtin)
}

/// The validated tenant of YAML that must be valid.
pub fn valid(yaml: &str) -> Tenant {
    check(yaml).unwrap_or_else(|p| panic!("expected valid, got {p:#?}"))
}

/// Asserts the exact problems (path, id, message), in report order.
pub fn assert_problems(yaml: &str, expected: &[(&str, Option<&str>, &str)]) {
    let problems = check(yaml).err().unwrap_or_default();
    assert_same(&problems, expected, yaml);
}

pub fn assert_same(problems: &[Problem], expected: &[(&str, Option<&str>, &str)], yaml: &str) {
    let got: Vec<(&str, Option<&str>, &str)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.id.as_deref(), p.message.as_str()))
        .collect();
    assert_eq!(got, expected, "\nfixture:\n{yaml}");
}

/// A snapshot with one custom role written as the flow-mapping `fields`.
pub fn custom_role(fields: &str) -> String {
    format!("roleDefinitions:\n  - {{ {fields} }}\n")
}

/// The id of the custom role of the fixtures.
pub const GUID: &str = "11111111-0000-4000-8000-000000000001";

/// `rest` after a snapshot line declaring the user `alice`.
pub fn with_alice(rest: &str) -> String {
    ["principals: [{ id: alice, type: User }]\n", rest].concat()
}
