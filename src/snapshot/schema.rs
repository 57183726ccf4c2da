//! The snapshot file as written (docs/snapshot-format.md): serde types with Azure's
//! camelCase keys. Unknown keys are errors, so a typo such as `notAction`
//! cannot silently drop a restriction.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::extauthz::RouteSpec;
use crate::model::{ExecutionMode, PermissionLevel, PrincipalType};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotFile<'a> {
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub management_groups: Vec<ManagementGroupEntry>,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionEntry>,
    #[serde(default)]
    pub principals: Vec<PrincipalEntry>,
    #[serde(default)]
    pub role_definitions: Vec<RoleDefinitionEntry>,
    #[serde(default, borrow)]
    pub role_assignments: Vec<RoleAssignmentEntry<'a>>,
    #[serde(default)]
    pub deny_assignments: Vec<DenyAssignmentEntry>,
    #[serde(default)]
    pub resources: Vec<ResourceEntry>,
    #[serde(default)]
    pub access_keys: Vec<AccessKeyEntry>,
    #[serde(default)]
    pub agents: Vec<AgentEntry>,
    /// Routes of the ext_authz front door: (method, path template) →
    /// (operation, scope), ahead of the derivation from ARM paths.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementGroupEntry {
    pub id: String,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionEntry {
    pub id: String,
    #[serde(default)]
    pub management_group: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrincipalEntry {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: PrincipalType,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub member_of: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleDefinitionEntry {
    pub id: String,
    pub role_name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub role_type: Option<String>,
    /// Only in the embedded catalog: the seed-002 heading.
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub permissions: Vec<PermissionEntry>,
    #[serde(default)]
    pub assignable_scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionEntry {
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub not_actions: Vec<String>,
    #[serde(default)]
    pub data_actions: Vec<String>,
    #[serde(default)]
    pub not_data_actions: Vec<String>,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub condition_version: Option<String>,
}

/// The entry a large tenant has a million of: its strings borrow from the
/// file's text where the parser allows (JSON without escapes), instead of
/// four allocations each.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleAssignmentEntry<'a> {
    #[serde(default, borrow)]
    pub id: Option<Text<'a>>,
    #[serde(borrow)]
    pub principal: Text<'a>,
    #[serde(borrow)]
    pub role: Text<'a>,
    #[serde(borrow)]
    pub scope: Text<'a>,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub condition_version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DenyAssignmentEntry {
    pub id: String,
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub everyone: bool,
    #[serde(default)]
    pub exclude_principals: Vec<String>,
    pub scope: String,
    #[serde(default)]
    pub do_not_apply_to_child_scopes: bool,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub not_actions: Vec<String>,
    #[serde(default)]
    pub data_actions: Vec<String>,
    #[serde(default)]
    pub not_data_actions: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceEntry {
    pub scope: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub disable_local_auth: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessKeyEntry {
    pub id: String,
    pub resource: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentEntry {
    pub id: String,
    pub principal: String,
    pub resource: String,
    #[serde(default)]
    pub managed_scopes: Vec<String>,
    pub permission_level: PermissionLevel,
    pub execution_mode: ExecutionMode,
    #[serde(default)]
    pub elevation: ElevationEntry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ElevationEntry {
    #[serde(default)]
    pub default_duration: Option<String>,
    #[serde(default)]
    pub max_duration: Option<String>,
    #[serde(default)]
    pub max_wait: Option<String>,
    #[serde(default)]
    pub interact_action: Option<String>,
    #[serde(default)]
    pub privileged_role: Option<String>,
    #[serde(default)]
    pub auto_approve: Vec<AutoApproveEntry>,
    #[serde(default)]
    pub approval_policies: Vec<ApprovalPolicyEntry>,
    #[serde(default)]
    pub max_requests_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoApproveEntry {
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub data_action: Option<bool>,
    #[serde(default)]
    pub read_only: Option<bool>,
    #[serde(default)]
    pub max_duration: Option<String>,
    pub on_behalf_of: String,
    #[serde(default)]
    pub max_per_hour: Option<u32>,
    #[serde(default)]
    pub shadow: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalPolicyEntry {
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub data_action: Option<bool>,
    #[serde(default)]
    pub required: Option<u32>,
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default)]
    pub require_ticket: bool,
    #[serde(default)]
    pub max_duration: Option<String>,
}

/// A string of the snapshot file, borrowed from its text when the parser
/// can lend it, owned otherwise.
#[derive(Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}
