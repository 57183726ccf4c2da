//! Import from Azure: the JSON that `az role definition list` and
//! `az role assignment list --all` print becomes a snapshot.
//!
//! Built-in role definitions are skipped when rampart's catalog has their
//! id (the catalog is authoritative); custom ones become `roleDefinitions`.
//! Principals, subscriptions and management groups are gathered from the
//! assignments. Group memberships are not in that output and must be added
//! by hand (or by a directory export) for group-inherited access.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::Problem;
use crate::model::{Scope, ScopeKind};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzRoleDefinition {
    name: String,
    role_name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    role_type: Option<String>,
    #[serde(default)]
    permissions: Vec<AzPermission>,
    #[serde(default)]
    assignable_scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzPermission {
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    not_actions: Vec<String>,
    #[serde(default)]
    data_actions: Vec<String>,
    #[serde(default)]
    not_data_actions: Vec<String>,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    condition_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzRoleAssignment {
    name: String,
    principal_id: String,
    #[serde(default)]
    principal_name: Option<String>,
    #[serde(default)]
    principal_type: Option<String>,
    role_definition_id: String,
    scope: String,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    condition_version: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// The imported snapshot as YAML, and what the import chose to mention.
pub struct Imported {
    pub yaml: String,
    pub notes: Vec<String>,
}

fn problem(path: String, id: Option<&str>, message: impl Into<String>) -> Problem {
    Problem {
        path,
        id: id.map(str::to_owned),
        message: message.into(),
        location: None,
    }
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<Vec<T>, Problem> {
    serde_json::from_str(text).map_err(|e| {
        problem(
            what.to_owned(),
            None,
            format!("not the JSON array az prints: {e}"),
        )
    })
}

fn principal_type(az: Option<&str>) -> Option<&'static str> {
    match az? {
        "User" => Some("User"),
        "Group" | "ForeignGroup" => Some("Group"),
        "ServicePrincipal" => Some("ServicePrincipal"),
        "ManagedIdentity" | "MSI" => Some("ManagedIdentity"),
        _ => None,
    }
}

/// Converts `az` output to snapshot YAML. Either input may be absent.
pub fn from_azure_cli(
    role_definitions: Option<&str>,
    role_assignments: Option<&str>,
) -> Result<Imported, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let definitions: Vec<AzRoleDefinition> =
        match role_definitions.map(|t| parse(t, "role definitions")) {
            Some(Ok(d)) => d,
            Some(Err(p)) => {
                problems.push(p);
                Vec::new()
            }
            None => Vec::new(),
        };
    let assignments: Vec<AzRoleAssignment> =
        match role_assignments.map(|t| parse(t, "role assignments")) {
            Some(Ok(a)) => a,
            Some(Err(p)) => {
                problems.push(p);
                Vec::new()
            }
            None => Vec::new(),
        };

    let mut role_definitions_out = Vec::new();
    let mut skipped_builtin = 0;
    for (i, d) in definitions.iter().enumerate() {
        let builtin = d.role_type.as_deref() == Some("BuiltInRole");
        if builtin && super::catalog::find(&d.name).is_some() {
            skipped_builtin += 1;
            continue;
        }
        if builtin {
            notes.push(format!(
                "built-in role '{}' ({}) is not in rampart's catalog; imported as a custom role",
                d.role_name, d.name
            ));
        }
        let permissions: Vec<Value> = d
            .permissions
            .iter()
            .map(|p| {
                let mut block = json!({
                    "actions": p.actions,
                    "notActions": p.not_actions,
                    "dataActions": p.data_actions,
                    "notDataActions": p.not_data_actions,
                });
                if let Some(c) = &p.condition {
                    block["condition"] = json!(c);
                    block["conditionVersion"] =
                        json!(p.condition_version.as_deref().unwrap_or("2.0"));
                }
                block
            })
            .collect();
        if d.name.is_empty() {
            problems.push(problem(
                format!("role definitions[{i}].name"),
                Some(&d.role_name),
                "the role has no id",
            ));
        }
        let mut role = json!({
            "id": d.name,
            "roleName": d.role_name,
            "permissions": permissions,
            "assignableScopes": d.assignable_scopes,
        });
        if let Some(text) = &d.description {
            role["description"] = json!(text);
        }
        role_definitions_out.push(role);
    }
    if skipped_builtin > 0 {
        notes.push(format!(
            "{skipped_builtin} built-in role definitions skipped: rampart embeds them"
        ));
    }

    let mut principals: BTreeMap<String, (&'static str, Option<String>)> = BTreeMap::new();
    let mut subscriptions = BTreeMap::new();
    let mut management_groups = BTreeMap::new();
    let mut assignments_out = Vec::new();
    for (i, a) in assignments.iter().enumerate() {
        let path = format!("role assignments[{i}]");
        let Some(kind) = principal_type(a.principal_type.as_deref()) else {
            problems.push(problem(
                format!("{path}.principalType"),
                Some(&a.name),
                format!(
                    "principalType {:?} is not one rampart knows (User, Group, ServicePrincipal)",
                    a.principal_type
                ),
            ));
            continue;
        };
        match principals.get(&a.principal_id) {
            Some((other, _)) if *other != kind => problems.push(problem(
                format!("{path}.principalType"),
                Some(&a.name),
                format!(
                    "principal {} is a {other} in another assignment",
                    a.principal_id
                ),
            )),
            _ => {
                principals.insert(a.principal_id.clone(), (kind, a.principal_name.clone()));
            }
        }
        match Scope::parse(&a.scope) {
            Ok(scope) => {
                if let Some(sub) = scope.subscription_id() {
                    subscriptions.insert(sub.to_ascii_lowercase(), sub.to_owned());
                }
                if scope.kind() == ScopeKind::ManagementGroup {
                    if let Some(mg) = scope.management_group_id() {
                        management_groups.insert(mg.to_ascii_lowercase(), mg.to_owned());
                    }
                }
            }
            Err(e) => problems.push(problem(
                format!("{path}.scope"),
                Some(&a.name),
                format!("scope '{}' {e}", a.scope),
            )),
        }
        let role = a.role_definition_id.rsplit('/').next().unwrap_or_default();
        let mut entry = Map::new();
        entry.insert("id".into(), json!(a.name));
        entry.insert("principal".into(), json!(a.principal_id));
        entry.insert("role".into(), json!(role));
        entry.insert("scope".into(), json!(a.scope));
        if let Some(c) = &a.condition {
            entry.insert("condition".into(), json!(c));
            entry.insert(
                "conditionVersion".into(),
                json!(a.condition_version.as_deref().unwrap_or("2.0")),
            );
        }
        if let Some(d) = &a.description {
            entry.insert("description".into(), json!(d));
        }
        assignments_out.push(Value::Object(entry));
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut snapshot = Map::new();
    snapshot.insert("revision".into(), json!("imported"));
    if !management_groups.is_empty() {
        let list: Vec<Value> = management_groups
            .values()
            .map(|id| json!({ "id": id }))
            .collect();
        snapshot.insert("managementGroups".into(), Value::Array(list));
    }
    if !subscriptions.is_empty() {
        let list: Vec<Value> = subscriptions
            .values()
            .map(|id| json!({ "id": id }))
            .collect();
        snapshot.insert("subscriptions".into(), Value::Array(list));
    }
    let principal_list: Vec<Value> = principals
        .iter()
        .map(|(id, (kind, name))| {
            let mut p = json!({ "id": id, "type": kind });
            if let Some(name) = name {
                p["displayName"] = json!(name);
            }
            p
        })
        .collect();
    snapshot.insert("principals".into(), Value::Array(principal_list));
    if !role_definitions_out.is_empty() {
        snapshot.insert("roleDefinitions".into(), Value::Array(role_definitions_out));
    }
    snapshot.insert("roleAssignments".into(), Value::Array(assignments_out));
    if !management_groups.is_empty() {
        notes.push("management groups are imported without their parents and subscriptions without their management group: add the hierarchy for inheritance through management groups".into());
    }
    let body = serde_yaml::to_string(&Value::Object(snapshot)).map_err(|e| {
        vec![problem(
            String::new(),
            None,
            format!("cannot write YAML: {e}"),
        )]
    })?;
    Ok(Imported {
        yaml: format!("# Imported from Azure CLI output by `rampart import`.\n{body}"),
        notes,
    })
}
