//! The snapshot file as written (docs/snapshot-format.md): serde types with Azure's
//! camelCase keys. Unknown keys are errors, so a typo such as `notAction`
//! cannot silently drop a restriction.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::extauthz::RouteSpec;
use crate::model::{ExecutionMode, PermissionLevel, PrincipalType};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotFile {
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
    #[serde(default)]
    pub role_assignments: RoleAssignments,
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

/// The entry a large tenant has a million of, kept small: its strings
/// are interned in [`RoleAssignments::strings`] as they are read (a million
/// assignments write a few thousand scopes, a few roles and one principal
/// per ten entries), and its id is its only allocation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleAssignmentEntry {
    #[serde(default)]
    pub id: Option<Box<str>>,
    pub principal: Sym,
    pub role: Sym,
    pub scope: Sym,
    #[serde(default)]
    pub condition: Option<Sym>,
    #[serde(default)]
    pub condition_version: Option<Sym>,
    #[serde(default)]
    pub description: Option<Sym>,
}

/// A role assignment entry with its strings looked up.
#[derive(Debug, Clone, Copy)]
pub struct RoleAssignmentRef<'a> {
    pub id: Option<&'a str>,
    pub principal: &'a str,
    pub role: &'a str,
    pub scope: &'a str,
    pub condition: Option<&'a str>,
    pub condition_version: Option<&'a str>,
}

/// The `roleAssignments` section: its entries and the strings they share.
#[derive(Debug, Default)]
pub struct RoleAssignments {
    pub entries: Vec<RoleAssignmentEntry>,
    pub strings: Box<[Box<str>]>,
}

impl RoleAssignments {
    /// Entry `i` with its strings.
    pub fn get(&self, i: usize) -> Option<RoleAssignmentRef<'_>> {
        self.entries.get(i).map(|entry| self.resolve(entry))
    }

    /// The entries with their strings, in file order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RoleAssignmentRef<'_>> + '_ {
        self.entries.iter().map(|entry| self.resolve(entry))
    }

    fn resolve<'a>(&'a self, entry: &'a RoleAssignmentEntry) -> RoleAssignmentRef<'a> {
        RoleAssignmentRef {
            id: entry.id.as_deref(),
            principal: self.text(entry.principal),
            role: self.text(entry.role),
            scope: self.text(entry.scope),
            condition: entry.condition.map(|s| self.text(s)),
            condition_version: entry.condition_version.map(|s| self.text(s)),
        }
    }

    /// The section as `read` reads its entries one by one (the tolerant
    /// pass over a file that failed to parse), their strings interned as
    /// when the section is read whole.
    pub fn read_each<R>(read: impl FnOnce(&mut Vec<RoleAssignmentEntry>) -> R) -> (Self, R) {
        let interning = Interning::begin();
        let mut entries = Vec::new();
        let answer = read(&mut entries);
        let section = RoleAssignments {
            entries,
            strings: interning.finish(),
        };
        (section, answer)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn text(&self, sym: Sym) -> &str {
        self.strings.get(sym.index()).map_or("", |s| s)
    }
}

impl<'de> Deserialize<'de> for RoleAssignments {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (section, read) = RoleAssignments::read_each(|entries| {
            *entries = Vec::<RoleAssignmentEntry>::deserialize(deserializer)?;
            Ok(())
        });
        read.map(|()| section)
    }
}

/// A string of the `roleAssignments` section, by its place in
/// [`RoleAssignments::strings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sym(std::num::NonZeroU32);

impl Sym {
    fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// The strings of the `roleAssignments` section being read, each once.
#[derive(Default)]
struct Interner {
    by_text: HashMap<Box<str>, Sym, foldhash::fast::RandomState>,
}

impl Interner {
    fn intern(&mut self, text: &str) -> Option<Sym> {
        if let Some(&sym) = self.by_text.get(text) {
            return Some(sym);
        }
        let next = u32::try_from(self.by_text.len() + 1).ok()?;
        let sym = Sym(std::num::NonZeroU32::new(next)?);
        self.by_text.insert(text.into(), sym);
        Some(sym)
    }

    fn into_strings(self) -> Box<[Box<str>]> {
        let mut strings: Vec<Box<str>> = vec![Box::default(); self.by_text.len()];
        for (text, sym) in self.by_text {
            strings[sym.index()] = text;
        }
        strings.into_boxed_slice()
    }
}

thread_local! {
    /// The interner of the `roleAssignments` section being read on this
    /// thread: serde's derived deserialisers carry no state down to a
    /// field, and deriving keeps their error messages exactly serde's.
    static INTERNER: RefCell<Option<Interner>> = const { RefCell::new(None) };
}

/// Interning for the duration of one `roleAssignments` section; the
/// interner it replaced (none, unless sections nest) is put back when it
/// ends, error or not.
struct Interning {
    outer: Option<Interner>,
    ended: bool,
}

impl Interning {
    fn begin() -> Interning {
        let outer = INTERNER.with(|i| i.replace(Some(Interner::default())));
        Interning {
            outer,
            ended: false,
        }
    }

    /// The section's strings, each at its [`Sym`]'s place.
    fn finish(mut self) -> Box<[Box<str>]> {
        self.end().map(Interner::into_strings).unwrap_or_default()
    }

    fn end(&mut self) -> Option<Interner> {
        self.ended = true;
        let outer = self.outer.take();
        INTERNER.with(|i| i.replace(outer))
    }
}

impl Drop for Interning {
    fn drop(&mut self) {
        if !self.ended {
            self.end();
        }
    }
}

impl<'de> Deserialize<'de> for Sym {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Sym;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sym, E> {
                INTERNER
                    .with(|i| i.borrow_mut().as_mut().and_then(|i| i.intern(v)))
                    .ok_or_else(|| E::custom("too many distinct strings in roleAssignments"))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
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
