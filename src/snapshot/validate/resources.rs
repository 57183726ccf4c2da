//! Resources (tags, local-auth switch) and the access keys bound to them.

use super::fields::{scope, Declared};
use super::principals::PrincipalIndex;
use super::Problems;
use crate::model::{check_principal_id, principal_key, AccessKey, Resource, ScopeKind};
use crate::snapshot::schema::{AccessKeyEntry, ResourceEntry};

pub(super) fn resources(entries: &[ResourceEntry], problems: &mut Problems) -> Vec<Resource> {
    let mut out = Vec::with_capacity(entries.len());
    let mut scopes: Declared = Declared::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("resources[{i}].scope");
        let Some(s) = scope(&entry.scope, &path, None, problems) else {
            continue;
        };
        if scopes.declare(s.key().to_owned(), ()).is_some() {
            problems.push(path, Some(&entry.scope), "this resource is declared twice");
        }
        out.push(Resource {
            scope: s,
            tags: entry.tags.clone(),
            disable_local_auth: entry.disable_local_auth,
        });
    }
    out
}

pub(super) fn access_keys(
    entries: &[AccessKeyEntry],
    principals: &PrincipalIndex,
    problems: &mut Problems,
) -> Vec<AccessKey> {
    let mut out = Vec::with_capacity(entries.len());
    let mut ids: Declared = Declared::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("accessKeys[{i}]");
        let id = Some(entry.id.as_str());
        if let Err(e) = check_principal_id(&entry.id) {
            problems.push(format!("{path}.id"), id, format!("id {e}"));
        }
        ids.declare_id(
            principal_key(&entry.id).into_owned(),
            (),
            "access key",
            &entry.id,
            format!("{path}.id"),
            problems,
        );
        if principals.resolve(&entry.id).is_some() {
            problems.push(
                format!("{path}.id"),
                id,
                "an access key id must not be a principal id too",
            );
        }
        let Some(s) = scope(&entry.resource, &format!("{path}.resource"), id, problems) else {
            continue;
        };
        if !matches!(s.kind(), ScopeKind::Resource) {
            problems.push(
                format!("{path}.resource"),
                id,
                format!(
                    "an access key is bound to a resource, not a {}",
                    s.kind().as_str()
                ),
            );
        }
        out.push(AccessKey {
            id: entry.id.clone(),
            resource: s,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_problems, with_alice};

    const RESOURCE: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st";

    #[test]
    fn resource_scope_must_parse() {
        assert_problems(
            "resources: [{ scope: /subscriptions }]\n",
            &[(
                "resources[0].scope",
                None,
                "scope '/subscriptions' has 'subscriptions' without a subscription id",
            )],
        );
    }

    #[test]
    fn resources_are_declared_once() {
        let yaml = format!(
            "resources: [{{ scope: {RESOURCE} }}, {{ scope: {} }}]\n",
            RESOURCE.to_uppercase()
        );
        assert_problems(
            &yaml,
            &[(
                "resources[1].scope",
                Some(RESOURCE.to_uppercase().as_str()),
                "this resource is declared twice",
            )],
        );
    }

    fn key(id: &str, resource: &str) -> String {
        format!("accessKeys: [{{ id: \"{id}\", resource: {resource} }}]\n")
    }

    #[test]
    fn access_key_ids_must_be_valid() {
        assert_problems(
            &key("", RESOURCE),
            &[("accessKeys[0].id", Some(""), "id is empty")],
        );
    }

    #[test]
    fn access_key_ids_are_unique() {
        assert_problems(
            &format!("accessKeys: [{{ id: k, resource: {RESOURCE} }}, {{ id: k, resource: {RESOURCE} }}]\n"),
            &[("accessKeys[1].id", Some("k"), "duplicate access key id 'k'")],
        );
    }

    #[test]
    fn access_key_ids_are_not_principal_ids() {
        assert_problems(
            &with_alice(&key("alice", RESOURCE)),
            &[(
                "accessKeys[0].id",
                Some("alice"),
                "an access key id must not be a principal id too",
            )],
        );
    }

    #[test]
    fn access_key_resource_must_parse() {
        assert_problems(
            &key("k", "/subscriptions"),
            &[(
                "accessKeys[0].resource",
                Some("k"),
                "scope '/subscriptions' has 'subscriptions' without a subscription id",
            )],
        );
    }

    #[test]
    fn access_key_resource_is_a_resource() {
        assert_problems(
            &key("k", "/subscriptions/s1/resourceGroups/rg"),
            &[(
                "accessKeys[0].resource",
                Some("k"),
                "an access key is bound to a resource, not a resource group",
            )],
        );
    }
}
