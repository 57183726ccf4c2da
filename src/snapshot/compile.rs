//! Compilation: a validated [`Tenant`] becomes the immutable, indexed form
//! the engine decides on.
//!
//! Every scope the snapshot mentions is interned as a node with a link to
//! its nearest interned ancestor, so any request scope reduces to one node
//! (the deepest interned scope at or above it) and ancestry becomes a walk
//! up parent links. Principals are interned too, with their transitive
//! groups, and assignments are indexed by the principal they name.

use std::collections::HashMap;
use std::time::SystemTime;

use foldhash::fast::RandomState;

use super::index::{
    AccessKeyIx, AgentIx, AssignmentIx, DenyIx, Position, PrincipalIx, ResourceIx, Table,
};
pub use super::index::{NodeId, ROOT_NODE};
use crate::extauthz::RouteTable;
use crate::model::tenant::{management_group_scope_key, subscription_scope_key};
use crate::model::{guid_bits, is_guid, principal_key, Scope, Tenant};

/// An interned scope.
#[derive(Debug, Clone)]
pub struct ScopeNode {
    /// The scope as first written in the snapshot.
    pub text: Box<str>,
    /// Nearest interned ancestor; `None` only for the root.
    pub parent: Option<NodeId>,
}

/// Where a request's scope lands: the deepest interned scope at or above it,
/// and whether it is that scope exactly (deny assignments with
/// `doNotApplyToChildScopes` care).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Anchor {
    pub node: NodeId,
    pub exact: bool,
}

/// Facts about where a snapshot came from.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub revision: String,
    /// A file path, or `embedded:demo`.
    pub source: String,
    pub content_sha256: String,
    pub loaded_at: SystemTime,
}

/// The immutable, indexed snapshot. Positions ([`super::index`]) point
/// into the tenant's vectors and the tables here.
pub struct CompiledSnapshot {
    pub tenant: Tenant,
    pub info: SnapshotInfo,
    pub nodes: Table<NodeId, ScopeNode>,
    node_by_key: HashMap<Box<str>, NodeId, RandomState>,
    /// Principals whose id is a GUID (nearly all, in an Azure export), by
    /// its bits: a look-up is one probe with no key text to fetch, which
    /// at a million assignments is a cache miss saved per decision.
    principal_by_guid: HashMap<u128, PrincipalIx, RandomState>,
    /// The other principals, by id.
    principal_by_key: HashMap<Box<str>, PrincipalIx, RandomState>,
    access_key_by_id: HashMap<Box<str>, AccessKeyIx, RandomState>,
    /// Transitive groups of each principal, itself excluded, sorted.
    pub groups: Table<PrincipalIx, Box<[PrincipalIx]>>,
    /// Role assignments made directly to each principal.
    pub assignments_of: Table<PrincipalIx, Box<[AssignmentIx]>>,
    pub assignment_node: Table<AssignmentIx, NodeId>,
    /// Deny assignments that list each principal (or group) directly.
    pub denies_of: Table<PrincipalIx, Box<[DenyIx]>>,
    pub everyone_denies: Box<[DenyIx]>,
    pub deny_node: Table<DenyIx, NodeId>,
    /// The agent whose identity each principal is, if any.
    pub agent_of: Table<PrincipalIx, Option<AgentIx>>,
    pub agent_managed_nodes: Table<AgentIx, Box<[NodeId]>>,
    pub access_key_node: Table<AccessKeyIx, NodeId>,
    /// Declared resources by node.
    pub resource_at: HashMap<NodeId, ResourceIx, RandomState>,
    /// The ext_authz routes, swapped with everything else on a reload.
    pub routes: RouteTable,
}

impl CompiledSnapshot {
    pub fn compile(tenant: Tenant, info: SnapshotInfo) -> CompiledSnapshot {
        let mut interner = Interner::default();
        interner.intern_key("/".into(), "/");
        let h = &tenant.hierarchy;
        for mg in &h.management_groups {
            let text = format!("/providers/Microsoft.Management/managementGroups/{}", mg.id);
            interner.intern_key(management_group_scope_key(&mg.id), &text);
        }
        for sub in &h.subscriptions {
            interner.intern_key(
                subscription_scope_key(&sub.id),
                &format!("/subscriptions/{}", sub.id),
            );
        }
        let assignment_node: Table<AssignmentIx, NodeId> = tenant
            .role_assignments
            .iter()
            .map(|a| interner.intern(&a.scope))
            .collect();
        let deny_node: Table<DenyIx, NodeId> = tenant
            .deny_assignments
            .iter()
            .map(|d| interner.intern(&d.scope))
            .collect();
        let agent_managed_nodes: Table<AgentIx, Box<[NodeId]>> = tenant
            .agents
            .iter()
            .map(|a| {
                interner.intern(&a.resource);
                a.managed_scopes
                    .iter()
                    .map(|s| interner.intern(s))
                    .collect()
            })
            .collect();
        let access_key_node: Table<AccessKeyIx, NodeId> = tenant
            .access_keys
            .iter()
            .map(|k| interner.intern(&k.resource))
            .collect();
        let resource_at = tenant
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| (interner.intern(&r.scope), ResourceIx::at(i)))
            .collect();
        let nodes = interner.link(&tenant);

        let mut principal_by_guid = HashMap::default();
        let mut principal_by_key = HashMap::default();
        for (i, p) in tenant.principals.iter().enumerate() {
            match guid_bits(&p.id) {
                Some(bits) => {
                    principal_by_guid.insert(bits, PrincipalIx::at(i));
                }
                None => {
                    principal_by_key.insert(p.id.as_str().into(), PrincipalIx::at(i));
                }
            }
        }
        let access_key_by_id = tenant
            .access_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let key = principal_key(&k.id).into_owned().into_boxed_str();
                (key, AccessKeyIx::at(i))
            })
            .collect();

        let n = tenant.principals.len();
        let groups = transitive_groups(&tenant);
        let mut assignments_of = vec![Vec::new(); n];
        for (i, a) in tenant.role_assignments.iter().enumerate() {
            assignments_of[a.principal].push(AssignmentIx::at(i));
        }
        let mut denies_of = vec![Vec::new(); n];
        let mut everyone_denies = Vec::new();
        for (i, d) in tenant.deny_assignments.iter().enumerate() {
            if d.everyone {
                everyone_denies.push(DenyIx::at(i));
            }
            for &p in &d.principals {
                denies_of[p].push(DenyIx::at(i));
            }
        }
        let mut agent_of = vec![None; n];
        for (i, a) in tenant.agents.iter().enumerate() {
            agent_of[a.principal] = Some(AgentIx::at(i));
        }

        CompiledSnapshot {
            nodes,
            node_by_key: interner.by_key,
            principal_by_guid,
            principal_by_key,
            access_key_by_id,
            groups,
            assignments_of: assignments_of
                .into_iter()
                .map(Vec::into_boxed_slice)
                .collect(),

            assignment_node,
            denies_of: denies_of.into_iter().map(Vec::into_boxed_slice).collect(),
            everyone_denies: everyone_denies.into_boxed_slice(),
            deny_node,
            agent_of: agent_of.into(),
            agent_managed_nodes,
            access_key_node,
            resource_at,
            routes: RouteTable::empty(),
            tenant,
            info,
        }
    }

    /// The same snapshot with these ext_authz routes (compiled from its
    /// `routes:` section).
    pub fn with_routes(mut self, routes: RouteTable) -> CompiledSnapshot {
        self.routes = routes;
        self
    }

    /// The principal with this id (GUIDs in any case), without allocating.
    #[inline]
    pub fn principal(&self, id: &str) -> Option<PrincipalIx> {
        match guid_bits(id) {
            Some(bits) => self.principal_by_guid.get(&bits).copied(),
            None => self.principal_by_key.get(id).copied(),
        }
    }

    /// The access key with this id, without allocating.
    #[inline]
    pub fn access_key(&self, id: &str) -> Option<AccessKeyIx> {
        if self.access_key_by_id.is_empty() {
            return None;
        }
        lookup_id(&self.access_key_by_id, id)
    }

    /// The deepest interned scope at or above `scope`.
    pub fn anchor(&self, scope: &Scope) -> Anchor {
        if let Some(&node) = self.node_by_key.get(scope.key()) {
            return Anchor { node, exact: true };
        }
        let node = scope
            .structural_ancestor_keys()
            .find_map(|k| self.node_by_key.get(k).copied())
            .unwrap_or(ROOT_NODE);
        Anchor { node, exact: false }
    }

    /// `node` and its ancestors up to the root, nearest first.
    pub fn chain(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        let mut next = Some(node);
        std::iter::from_fn(move || {
            let current = next?;
            next = self.nodes[current].parent;
            Some(current)
        })
    }
}

/// Looks up an id by the principal-key rule: GUIDs are folded to lowercase
/// in a stack buffer, other ids are looked up as given.
#[inline]
fn lookup_id<I: Copy>(map: &HashMap<Box<str>, I, RandomState>, id: &str) -> Option<I> {
    if is_guid(id) {
        let mut buf = [0u8; crate::model::principal::GUID_LEN];
        buf.copy_from_slice(id.as_bytes());
        buf.make_ascii_lowercase();
        let folded = std::str::from_utf8(&buf).ok()?;
        map.get(folded).copied()
    } else {
        map.get(id).copied()
    }
}

#[derive(Default)]
struct Interner {
    by_key: HashMap<Box<str>, NodeId, RandomState>,
    /// Nodes by [`Scope::identity`]: validation shares one parsed scope
    /// among the many assignments that write it, so most look-ups need
    /// no text hashed or compared. Every scope looked up lives in the
    /// tenant for as long as the interner, so an identity is never reused.
    by_identity: HashMap<usize, NodeId, RandomState>,
    texts: Vec<Box<str>>,
}

impl Interner {
    fn intern_key(&mut self, key: String, text: &str) -> NodeId {
        if let Some(&n) = self.by_key.get(key.as_str()) {
            return n;
        }
        let n = NodeId::at(self.texts.len());
        self.texts.push(text.into());
        self.by_key.insert(key.into_boxed_str(), n);
        n
    }

    fn intern(&mut self, scope: &Scope) -> NodeId {
        if let Some(&n) = self.by_identity.get(&scope.identity()) {
            return n;
        }
        let n = match self.by_key.get(scope.key()) {
            Some(&n) => n,
            None => self.intern_key(scope.key().to_owned(), scope.as_str()),
        };
        self.by_identity.insert(scope.identity(), n);
        n
    }

    /// Links every node to its nearest interned ancestor: a structural
    /// prefix, else the management group above its subscription or group.
    fn link(&self, tenant: &Tenant) -> Table<NodeId, ScopeNode> {
        let h = &tenant.hierarchy;
        self.texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                if NodeId::at(i) == ROOT_NODE {
                    return ScopeNode {
                        text: text.clone(),
                        parent: None,
                    };
                }
                let parent = Scope::parse(text).ok().map_or(ROOT_NODE, |scope| {
                    scope
                        .structural_ancestor_keys()
                        .find_map(|k| self.by_key.get(k).copied())
                        .or_else(|| {
                            h.hierarchy_parents(&scope).find_map(|mg| {
                                let key = management_group_scope_key(&h.management_groups[mg].id);
                                self.by_key.get(key.as_str()).copied()
                            })
                        })
                        .unwrap_or(ROOT_NODE)
                });
                ScopeNode {
                    text: text.clone(),
                    parent: Some(parent),
                }
            })
            .collect()
    }
}

/// Transitive group closure per principal. Validation has rejected cycles;
/// the visited set keeps this finite regardless.
fn transitive_groups(tenant: &Tenant) -> Table<PrincipalIx, Box<[PrincipalIx]>> {
    let principals = &tenant.principals;
    let mut out = Vec::with_capacity(principals.len());
    let mut seen = vec![usize::MAX; principals.len()];
    for (i, p) in principals.iter().enumerate() {
        let mut groups = Vec::new();
        let mut stack: Vec<usize> = p.member_of.clone();
        seen[i] = i;
        while let Some(g) = stack.pop() {
            if seen[g] == i {
                continue;
            }
            seen[g] = i;
            groups.push(PrincipalIx::at(g));
            stack.extend(&principals[g].member_of);
        }
        groups.sort_unstable();
        out.push(groups.into_boxed_slice());
    }
    out.into()
}
