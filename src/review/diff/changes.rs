//! Object-level comparison of two snapshots: which principals and keys
//! anything changed for, what changed about agents and about the inputs
//! conditions read, and the finite universe of named operations.
//!
//! Narrowing to affected subjects first is what lets a diff of two large
//! snapshots that differ by one assignment look at one principal (or one
//! group's members) instead of every principal at every scope. The rules
//! err wide: a subject is affected when any object that can reach its
//! decisions changed — an assignment to it or to a group it is or was in,
//! a role such an assignment uses, a deny that targets or excludes it, its
//! memberships, its agent; and everyone when the hierarchy or an
//! `everyone` deny changed.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::model::tenant::{management_group_scope_key, subscription_scope_key};
use crate::model::{
    check_operation, duration_text, principal_key, ActionPattern, Agent, ApprovalPolicy,
    AutoApproveRule, DenyAssignment, PatternSet, PermissionBlock, Scope, Tenant,
};
use crate::snapshot::{CompiledSnapshot, Position};

/// Hash maps over whole snapshots, with a fast hasher seeded per process.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use super::report::{AgentChange, AgentDiff, ConditionInputChange, Effect};

/// The subjects (principal keys and access-key ids) to compare, and
/// whether the management-group hierarchy moved.
pub(super) struct Affected {
    pub subjects: BTreeSet<String>,
    pub hierarchy_changed: bool,
}

pub(super) fn affected(old: &CompiledSnapshot, new: &CompiledSnapshot) -> Affected {
    let (o, n) = (&old.tenant, &new.tenant);
    let hierarchy_changed = hierarchy(o) != hierarchy(n);
    let mut everyone = hierarchy_changed;
    let mut direct: HashSet<String, foldhash::fast::RandomState> = HashSet::default();
    let mut add = |id: &str| {
        direct.insert(principal_key(id).into_owned());
    };

    // Role assignments, by content: a renamed id changes nothing.
    let keys_old: Vec<AssignmentKey<'_>> = o
        .role_assignments
        .iter()
        .map(|a| assignment_key(o, a))
        .collect();
    let keys_new: Vec<AssignmentKey<'_>> = n
        .role_assignments
        .iter()
        .map(|a| assignment_key(n, a))
        .collect();
    for key in unmatched(keys_old, keys_new) {
        add(&key.0);
    }

    // Roles whose permissions changed reach every holder.
    let old_roles: HashMap<&str, Vec<BlockKey>> = o
        .role_definitions
        .iter()
        .map(|r| (r.id.as_str(), r.permissions.iter().map(block_key).collect()))
        .collect();
    let changed_roles: HashSet<&str> = n
        .role_definitions
        .iter()
        .filter(|r| {
            old_roles.get(r.id.as_str()).is_some_and(|blocks| {
                *blocks != r.permissions.iter().map(block_key).collect::<Vec<_>>()
            })
        })
        .map(|r| r.id.as_str())
        .collect();
    for t in [o, n] {
        for a in &t.role_assignments {
            if changed_roles.contains(t.role_definitions[a.role].id.as_str()) {
                add(&t.principals[a.principal].id);
            }
        }
    }

    // Deny assignments, by content.
    let mut denies: HashMap<DenyKey, (i64, &DenyAssignment, &Tenant)> = HashMap::new();
    for (t, sign) in [(o, 1), (n, -1)] {
        for d in &t.deny_assignments {
            denies.entry(deny_key(t, d)).or_insert((0, d, t)).0 += sign;
        }
    }
    for (count, d, t) in denies.values() {
        if *count == 0 {
            continue;
        }
        everyone |= d.everyone;
        for &p in d.principals.iter().chain(&d.exclude_principals) {
            add(&t.principals[p].id);
        }
    }

    // Principals: added, removed, or with other groups or another type;
    // looked up in the other snapshot's index, so nothing is copied.
    for (a, b) in [(old, new), (new, old)] {
        for p in &a.tenant.principals {
            let same = b.principal(&p.id).is_some_and(|j| {
                let q = &b.tenant.principals[j];
                let groups = |t: &Tenant, list: &[usize]| -> Vec<String> {
                    let mut v: Vec<String> = list
                        .iter()
                        .map(|&g| principal_key(&t.principals[g].id).into_owned())
                        .collect();
                    v.sort_unstable();
                    v
                };
                p.kind == q.kind
                    && p.member_of.len() == q.member_of.len()
                    && (p.member_of.is_empty()
                        || groups(&a.tenant, &p.member_of) == groups(&b.tenant, &q.member_of))
            });
            if !same {
                add(&p.id);
            }
        }
    }

    // Agents: their gate (managed scopes, mode) is not in any assignment.
    let agents = |t: &Tenant| -> HashMap<String, AgentGateKey> {
        t.agents
            .iter()
            .map(|a| (a.id.clone(), agent_gate_key(t, a)))
            .collect()
    };
    let (ao, an) = (agents(o), agents(n));
    let ids: HashSet<&String> = ao.keys().chain(an.keys()).collect();
    for id in ids {
        let (a, b) = (ao.get(id), an.get(id));
        if a != b {
            for k in [a, b].into_iter().flatten() {
                add(&k.0);
            }
        }
    }

    // Access keys: their resource, and whether it allows local auth.
    let keys = |s: &CompiledSnapshot| -> HashMap<String, (String, bool)> {
        s.tenant
            .access_keys
            .iter()
            .zip(s.access_key_node.iter())
            .map(|(k, node)| {
                let disabled = s
                    .resource_at
                    .get(node)
                    .is_some_and(|&r| s.tenant.resources[r].disable_local_auth);
                let id = principal_key(&k.id).into_owned();
                (id, (k.resource.key().to_owned(), disabled))
            })
            .collect()
    };
    let (ko, kn) = (keys(old), keys(new));
    for (id, key) in ko.iter().chain(&kn) {
        if ko.get(id) != Some(key) || kn.get(id) != Some(key) {
            direct.insert(id.clone());
        }
    }

    let mut subjects: BTreeSet<String> = BTreeSet::new();
    if everyone {
        for s in [old, new] {
            subjects.extend(
                s.tenant
                    .principals
                    .iter()
                    .map(|p| principal_key(&p.id).into_owned()),
            );
            subjects.extend(
                s.tenant
                    .access_keys
                    .iter()
                    .map(|k| principal_key(&k.id).into_owned()),
            );
        }
    } else {
        // Members of an affected group are affected, in either snapshot.
        for s in [old, new] {
            let touched: Vec<bool> = s
                .tenant
                .principals
                .iter()
                .map(|p| direct.contains(principal_key(&p.id).as_ref()))
                .collect();
            for (p, groups) in s.tenant.principals.iter().zip(s.groups.iter()) {
                if groups.iter().any(|&g| touched[g.get()]) {
                    subjects.insert(principal_key(&p.id).into_owned());
                }
            }
        }
        subjects.extend(direct);
    }
    Affected {
        subjects,
        hierarchy_changed,
    }
}

/// The keys of `old` and `new` that the other lacks (as multisets). The
/// runs where both agree entry by entry at the start and at the end, which
/// is most of a file after a small edit, are skipped without hashing.
fn unmatched<K: std::hash::Hash + Eq>(old: Vec<K>, new: Vec<K>) -> Vec<K> {
    let prefix = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (old_middle, new_middle) = (old.len() - prefix - suffix, new.len() - prefix - suffix);
    let mut counts: Map<K, i64> =
        Map::with_capacity_and_hasher(old_middle.max(new_middle), Default::default());
    for k in old.into_iter().skip(prefix).take(old_middle) {
        *counts.entry(k).or_default() += 1;
    }
    for k in new.into_iter().skip(prefix).take(new_middle) {
        *counts.entry(k).or_default() -= 1;
    }
    counts
        .into_iter()
        .filter(|(_, c)| *c != 0)
        .map(|(k, _)| k)
        .collect()
}

/// Parent links of management groups and the group of each subscription,
/// by lowercase id; entries that say "under the root" are left out, as
/// that is where undeclared ones sit too.
type HierarchyKey = (BTreeMap<String, String>, BTreeMap<String, String>);

fn hierarchy(t: &Tenant) -> HierarchyKey {
    let h = &t.hierarchy;
    let mg_id = |i: usize| h.management_groups[i].id.to_ascii_lowercase();
    let parents = h
        .management_groups
        .iter()
        .filter_map(|mg| Some((mg.id.to_ascii_lowercase(), mg_id(mg.parent?))))
        .collect();
    let subscriptions = h
        .subscriptions
        .iter()
        .filter_map(|s| Some((s.id.to_ascii_lowercase(), mg_id(s.management_group?))))
        .collect();
    (parents, subscriptions)
}

/// The scopes of the hierarchy: every management group and subscription.
pub(super) fn hierarchy_scopes(t: &Tenant) -> Vec<(String, String)> {
    let h = &t.hierarchy;
    let groups = h.management_groups.iter().map(|mg| {
        (
            management_group_scope_key(&mg.id),
            format!("/providers/Microsoft.Management/managementGroups/{}", mg.id),
        )
    });
    let subscriptions = h.subscriptions.iter().map(|s| {
        (
            subscription_scope_key(&s.id),
            format!("/subscriptions/{}", s.id),
        )
    });
    groups.chain(subscriptions).collect()
}

/// (principal, role id, scope, condition, deriving agent).
type AssignmentKey<'t> = (
    Cow<'t, str>,
    &'t str,
    &'t str,
    Option<&'t str>,
    Option<&'t str>,
);

fn assignment_key<'t>(t: &'t Tenant, a: &'t crate::model::RoleAssignment) -> AssignmentKey<'t> {
    (
        principal_key(&t.principals[a.principal].id),
        t.role_definitions[a.role].id.as_str(),
        a.scope.key(),
        a.condition.as_ref().map(|c| c.as_str()),
        a.derived_from_agent.map(|i| t.agents[i].id.as_str()),
    )
}

/// A pattern list as compared: lowercase, sorted, without repeats.
fn patterns_key(set: &PatternSet) -> Vec<String> {
    let mut v: Vec<String> = set
        .iter()
        .map(|p| p.as_str().to_ascii_lowercase())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

type BlockKey = ([Vec<String>; 4], Option<String>);

fn block_key(b: &PermissionBlock) -> BlockKey {
    (
        [
            patterns_key(&b.actions),
            patterns_key(&b.not_actions),
            patterns_key(&b.data_actions),
            patterns_key(&b.not_data_actions),
        ],
        b.condition.as_ref().map(|c| c.as_str().to_owned()),
    )
}

/// (everyone, targets, exclusions, scope, only at the scope, patterns).
type DenyKey = (
    bool,
    Vec<String>,
    Vec<String>,
    String,
    bool,
    [Vec<String>; 4],
);

fn deny_key(t: &Tenant, d: &DenyAssignment) -> DenyKey {
    let ids = |list: &[usize]| {
        let mut v: Vec<String> = list
            .iter()
            .map(|&p| principal_key(&t.principals[p].id).into_owned())
            .collect();
        v.sort_unstable();
        v
    };
    (
        d.everyone,
        ids(&d.principals),
        ids(&d.exclude_principals),
        d.scope.key().to_owned(),
        d.do_not_apply_to_child_scopes,
        [
            patterns_key(&d.actions),
            patterns_key(&d.not_actions),
            patterns_key(&d.data_actions),
            patterns_key(&d.not_data_actions),
        ],
    )
}

/// What of an agent decides its identity's access beyond assignments:
/// (identity, managed scopes, mode).
type AgentGateKey = (String, Vec<String>, &'static str);

fn agent_gate_key(t: &Tenant, a: &Agent) -> AgentGateKey {
    let mut scopes: Vec<String> = a
        .managed_scopes
        .iter()
        .map(|s| s.key().to_owned())
        .collect();
    scopes.sort_unstable();
    let mode = a.execution_mode.as_str();
    (
        principal_key(&t.principals[a.principal].id).into_owned(),
        scopes,
        mode,
    )
}

/// Every agent that was added, removed or changed, with each change and
/// whether it gives the agent more autonomy (a gain), less, or neither.
pub(super) fn agents(old: &Tenant, new: &Tenant) -> Vec<AgentDiff> {
    let by_id = |t: &Tenant| -> BTreeMap<String, usize> {
        t.agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect()
    };
    let (bo, bn) = (by_id(old), by_id(new));
    let ids: BTreeSet<&String> = bo.keys().chain(bn.keys()).collect();
    let mut out = Vec::new();
    for id in ids {
        let a_old = bo.get(id).map(|&i| &old.agents[i]);
        let a_new = bn.get(id).map(|&i| &new.agents[i]);
        let changes = match (a_old, a_new) {
            (None, Some(a)) => {
                let autonomous = a.execution_mode == crate::model::ExecutionMode::Auto
                    || !a.elevation.auto_approve.is_empty();
                let mut v = vec![AgentChange {
                    field: "agent".into(),
                    old: None,
                    new: Some(serde_json::Value::String(a.id.clone())),
                    effect: if autonomous {
                        Effect::Gain
                    } else {
                        Effect::Change
                    },
                }];
                v.extend(rule_changes(old, new, &[], &a.elevation.auto_approve));
                v
            }
            (Some(a), None) => vec![AgentChange {
                field: "agent".into(),
                old: Some(serde_json::Value::String(a.id.clone())),
                new: None,
                effect: Effect::Change,
            }],
            (Some(a), Some(b)) => agent_changes(old, a, new, b),
            (None, None) => Vec::new(),
        };
        if changes.is_empty() {
            continue;
        }
        let identity = a_new
            .map(|a| new.principals[a.principal].id.clone())
            .or_else(|| a_old.map(|a| old.principals[a.principal].id.clone()))
            .unwrap_or_default();
        let presence = match (a_old, a_new) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        out.push(AgentDiff {
            agent: id.clone(),
            principal: identity,
            presence: presence.into(),
            changes,
        });
    }
    out
}

fn text(s: impl Into<String>) -> Option<serde_json::Value> {
    Some(serde_json::Value::String(s.into()))
}

fn agent_changes(ot: &Tenant, a: &Agent, nt: &Tenant, b: &Agent) -> Vec<AgentChange> {
    use crate::model::{ExecutionMode, PermissionLevel};
    let mut out = Vec::new();
    let mut field = |name: &str, old: String, new: String, effect: Effect| {
        if old != new {
            out.push(AgentChange {
                field: name.into(),
                old: text(old),
                new: text(new),
                effect,
            });
        }
    };
    let (pa, pb) = (
        &ot.principals[a.principal].id,
        &nt.principals[b.principal].id,
    );
    field("principal", pa.clone(), pb.clone(), Effect::Change);
    field(
        "resource",
        a.resource.as_str().into(),
        b.resource.as_str().into(),
        Effect::Change,
    );
    let level = |l: PermissionLevel| l.as_str().to_owned();
    let level_effect = match (a.permission_level, b.permission_level) {
        (PermissionLevel::Reader, PermissionLevel::Privileged) => Effect::Gain,
        _ => Effect::Loss,
    };
    field(
        "permissionLevel",
        level(a.permission_level),
        level(b.permission_level),
        level_effect,
    );
    let mode = |m: ExecutionMode| m.as_str().to_owned();
    let mode_effect = match (a.execution_mode, b.execution_mode) {
        (ExecutionMode::Review, ExecutionMode::Auto) => Effect::Gain,
        _ => Effect::Loss,
    };
    field(
        "executionMode",
        mode(a.execution_mode),
        mode(b.execution_mode),
        mode_effect,
    );
    let (ea, eb) = (&a.elevation, &b.elevation);
    field(
        "elevation.privilegedRole",
        ot.role_definitions[ea.privileged_role].role_name.clone(),
        nt.role_definitions[eb.privileged_role].role_name.clone(),
        Effect::Change,
    );
    field(
        "elevation.interactAction",
        ea.interact_action.clone(),
        eb.interact_action.clone(),
        Effect::Change,
    );
    for (name, x, y) in [
        (
            "elevation.defaultDuration",
            ea.default_duration,
            eb.default_duration,
        ),
        ("elevation.maxDuration", ea.max_duration, eb.max_duration),
        ("elevation.maxWait", ea.max_wait, eb.max_wait),
    ] {
        let effect = if y > x { Effect::Gain } else { Effect::Loss };
        field(name, duration_text(x), duration_text(y), effect);
    }
    let scopes = |t: &Agent| -> BTreeMap<String, String> {
        t.managed_scopes
            .iter()
            .map(|s| (s.key().to_owned(), s.as_str().to_owned()))
            .collect()
    };
    let (sa, sb) = (scopes(a), scopes(b));
    for (key, scope) in &sb {
        if !sa.contains_key(key) {
            out.push(AgentChange {
                field: "managedScopes".into(),
                old: None,
                new: text(scope.clone()),
                effect: Effect::Gain,
            });
        }
    }
    for (key, scope) in &sa {
        if !sb.contains_key(key) {
            out.push(AgentChange {
                field: "managedScopes".into(),
                old: text(scope.clone()),
                new: None,
                effect: Effect::Loss,
            });
        }
    }
    out.extend(rule_changes(ot, nt, &ea.auto_approve, &eb.auto_approve));
    out.extend(policy_changes(
        ot,
        nt,
        &ea.approval_policies,
        &eb.approval_policies,
    ));
    out
}

/// Added rules are gains of autonomy, removed ones losses; a changed rule
/// is both. Shadow rules never act, so they are neither: a rule turned
/// shadow is a loss, a shadow turned live a gain.
fn rule_changes(
    ot: &Tenant,
    nt: &Tenant,
    old: &[AutoApproveRule],
    new: &[AutoApproveRule],
) -> Vec<AgentChange> {
    let live = |t: &Tenant, rules: &[AutoApproveRule]| -> Vec<serde_json::Value> {
        rules
            .iter()
            .filter(|r| !r.shadow)
            .map(|r| rule_json(t, r))
            .collect()
    };
    added_and_removed(
        "elevation.autoApprove",
        live(ot, old),
        live(nt, new),
        Effect::Gain,
    )
}

/// Approval policies make elevations harder to approve (more approvers,
/// named ones, a ticket, shorter grants): an added policy is a loss of
/// autonomy, a removed one a gain; a changed policy is both.
fn policy_changes(
    ot: &Tenant,
    nt: &Tenant,
    old: &[ApprovalPolicy],
    new: &[ApprovalPolicy],
) -> Vec<AgentChange> {
    added_and_removed(
        "elevation.approvalPolicies",
        old.iter().map(|p| policy_json(ot, p)).collect(),
        new.iter().map(|p| policy_json(nt, p)).collect(),
        Effect::Loss,
    )
}

/// The entries of a list of rules found only in `new` (with the effect
/// `added`), then those only in `old` (with the opposite effect); a
/// changed entry is both.
fn added_and_removed(
    field: &str,
    old: Vec<serde_json::Value>,
    new: Vec<serde_json::Value>,
    added: Effect,
) -> Vec<AgentChange> {
    let removed = match added {
        Effect::Gain => Effect::Loss,
        _ => Effect::Gain,
    };
    let change =
        |old: Option<&serde_json::Value>, new: Option<&serde_json::Value>, effect| AgentChange {
            field: field.into(),
            old: old.cloned(),
            new: new.cloned(),
            effect,
        };
    let came = new
        .iter()
        .filter(|r| !old.contains(r))
        .map(|r| change(None, Some(r), added));
    let gone = old
        .iter()
        .filter(|r| !new.contains(r))
        .map(|r| change(Some(r), None, removed));
    came.chain(gone).collect()
}

/// The operations, scopes and plane a rule or policy matches, as the
/// snapshot spells them; `scopes` is left out when empty unless
/// `always_scopes`.
fn matcher_json(
    m: &mut serde_json::Map<String, serde_json::Value>,
    actions: &[ActionPattern],
    scopes: &[Scope],
    data_action: Option<bool>,
    always_scopes: bool,
) {
    let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
    m.insert("actions".into(), actions.into());
    if always_scopes || !scopes.is_empty() {
        let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        m.insert("scopes".into(), scopes.into());
    }
    if let Some(d) = data_action {
        m.insert("dataAction".into(), d.into());
    }
}

/// An approval policy as the snapshot spells it.
fn policy_json(t: &Tenant, p: &ApprovalPolicy) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    matcher_json(&mut m, &p.actions, &p.scopes, p.data_action, false);
    m.insert("required".into(), p.required.into());
    if !p.approvers.is_empty() {
        let mut approvers: Vec<String> = p
            .approvers
            .iter()
            .map(|&a| t.principals[a].id.clone())
            .collect();
        approvers.sort_unstable();
        m.insert("approvers".into(), approvers.into());
    }
    if p.require_ticket {
        m.insert("requireTicket".into(), true.into());
    }
    if let Some(d) = p.max_duration {
        m.insert("maxDuration".into(), duration_text(d).into());
    }
    serde_json::Value::Object(m)
}

/// An auto-approve rule as the snapshot spells it.
fn rule_json(t: &Tenant, r: &AutoApproveRule) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    matcher_json(&mut m, &r.actions, &r.scopes, r.data_action, true);
    if let Some(ro) = r.read_only {
        m.insert("readOnly".into(), ro.into());
    }
    if let Some(d) = r.max_duration {
        m.insert("maxDuration".into(), duration_text(d).into());
    }
    m.insert(
        "onBehalfOf".into(),
        t.principals[r.on_behalf_of].id.clone().into(),
    );
    if let Some(n) = r.max_per_hour {
        m.insert("maxPerHour".into(), n.into());
    }
    serde_json::Value::Object(m)
}

/// Tags and principal attributes that changed. They change no grant, but
/// a condition reading them may decide differently; `may_affect` says
/// whether any condition of the new snapshot reads that kind of input.
pub(super) fn condition_inputs(
    old_s: &CompiledSnapshot,
    new_s: &CompiledSnapshot,
) -> Vec<ConditionInputChange> {
    let (old, new) = (&old_s.tenant, &new_s.tenant);
    let conditions = conditions_of(new);
    let reads = |source: &str| {
        conditions
            .iter()
            .any(|c| c.to_ascii_lowercase().contains(source))
    };
    let (reads_resource, reads_principal) = (reads("@resource["), reads("@principal["));
    let mut out = Vec::new();

    let tags = |t: &Tenant| -> BTreeMap<String, (String, BTreeMap<String, String>)> {
        t.resources
            .iter()
            .map(|r| {
                (
                    r.scope.key().to_owned(),
                    (r.scope.as_str().to_owned(), r.tags.clone()),
                )
            })
            .collect()
    };
    let (to, tn) = (tags(old), tags(new));
    let keys: BTreeSet<&String> = to.keys().chain(tn.keys()).collect();
    let empty = BTreeMap::new();
    for key in keys {
        let (a, b) = (to.get(key), tn.get(key));
        let (ta, tb) = (a.map_or(&empty, |x| &x.1), b.map_or(&empty, |x| &x.1));
        if ta != tb {
            let target = b.or(a).map(|x| x.0.clone()).unwrap_or_default();
            out.push(ConditionInputChange {
                kind: "resourceTags".into(),
                target,
                old: ta.clone(),
                new: tb.clone(),
                may_affect: reads_resource,
            });
        }
    }

    // Principals looked up in the other snapshot: only changes are copied.
    type Attributes = BTreeMap<String, String>;
    let mut changed: Vec<(String, &Attributes, &Attributes)> = Vec::new();
    for p in &old_s.tenant.principals {
        let b = new_s
            .principal(&p.id)
            .map_or(&empty, |j| &new.principals[j].attributes);
        if p.attributes != *b {
            changed.push((p.id.clone(), &p.attributes, b));
        }
    }
    for q in &new_s.tenant.principals {
        if old_s.principal(&q.id).is_none() && !q.attributes.is_empty() {
            changed.push((q.id.clone(), &empty, &q.attributes));
        }
    }
    changed.sort_by(|x, y| x.0.cmp(&y.0));
    for (target, a, b) in changed {
        out.push(ConditionInputChange {
            kind: "principalAttributes".into(),
            target,
            old: a.clone(),
            new: b.clone(),
            may_affect: reads_principal,
        });
    }
    out
}

/// Every condition that some assignment of the tenant carries, on itself
/// or on a block of its role.
fn conditions_of(t: &Tenant) -> Vec<&str> {
    let mut roles = vec![false; t.role_definitions.len()];
    let mut out = Vec::new();
    for a in &t.role_assignments {
        if let Some(c) = &a.condition {
            out.push(c.as_str());
        }
        roles[a.role] = true;
    }
    for (r, used) in t.role_definitions.iter().zip(roles) {
        if used {
            out.extend(
                r.permissions
                    .iter()
                    .filter_map(|b| b.condition.as_ref())
                    .map(|c| c.as_str()),
            );
        }
    }
    out
}

/// Adds the read, write and delete of every resource type an operation of
/// `plane` names (`Microsoft.Compute/virtualMachines/restart/action` names
/// `Microsoft.Compute/virtualMachines`): roles seldom spell those out, and
/// they are what people ask about first.
fn derive_crud(plane: &mut BTreeMap<String, String>) {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for op in plane.values() {
        let segments: Vec<&str> = op.split('/').collect();
        let keep = if segments
            .last()
            .is_some_and(|s| s.eq_ignore_ascii_case("action"))
        {
            segments.len().saturating_sub(2)
        } else {
            segments.len() - 1
        };
        if keep >= 2 {
            let t = segments[..keep].join("/");
            types.entry(t.to_ascii_lowercase()).or_insert(t);
        }
    }
    for t in types.values() {
        for verb in ["read", "write", "delete"] {
            let op = format!("{t}/{verb}");
            plane.entry(op.to_ascii_lowercase()).or_insert(op);
        }
    }
}

/// Operations literally named (no `*`) by any role, deny assignment or
/// auto-approve rule of either snapshot (the built-in catalog included),
/// and the read, write and delete of each resource type these name, per
/// plane: the finite universe whose decisions a diff lists.
pub(super) struct Universe {
    pub control: Vec<(String, bool)>,
    pub data: Vec<(String, bool)>,
}

impl Universe {
    pub fn of(old: &Tenant, new: &Tenant) -> Universe {
        let mut control: BTreeMap<String, String> = BTreeMap::new();
        let mut data: BTreeMap<String, String> = BTreeMap::new();
        let add = |plane: &mut BTreeMap<String, String>, set: &PatternSet| {
            for p in set.iter() {
                let text = p.as_str();
                if !text.contains('*') && check_operation(text).is_ok() {
                    plane
                        .entry(text.to_ascii_lowercase())
                        .or_insert_with(|| text.to_owned());
                }
            }
        };
        for (i, t) in [old, new].into_iter().enumerate() {
            // Both hold the same built-in catalog first: read it once.
            let skip = if i == 0 { 0 } else { t.builtin_role_count };
            for b in t.role_definitions[skip..]
                .iter()
                .flat_map(|r| &r.permissions)
            {
                add(&mut control, &b.actions);
                add(&mut control, &b.not_actions);
                add(&mut data, &b.data_actions);
                add(&mut data, &b.not_data_actions);
            }
            for d in &t.deny_assignments {
                add(&mut control, &d.actions);
                add(&mut control, &d.not_actions);
                add(&mut data, &d.data_actions);
                add(&mut data, &d.not_data_actions);
            }
            for r in t.agents.iter().flat_map(|a| &a.elevation.auto_approve) {
                let literal: Vec<crate::model::ActionPattern> = r.actions.clone();
                let set = PatternSet::new(literal);
                match r.data_action {
                    Some(true) => add(&mut data, &set),
                    Some(false) => add(&mut control, &set),
                    None => {
                        add(&mut data, &set);
                        add(&mut control, &set);
                    }
                }
            }
        }
        derive_crud(&mut control);
        derive_crud(&mut data);
        let finish = |m: BTreeMap<String, String>| {
            m.into_values()
                .map(|op| {
                    let read_only = check_operation(&op).is_ok_and(|i| i.read_only);
                    (op, read_only)
                })
                .collect()
        };
        Universe {
            control: finish(control),
            data: finish(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> CompiledSnapshot {
        crate::snapshot::load_str(text, "test").unwrap_or_else(|e| panic!("{e}"))
    }

    const BASE: &str = r#"
principals:
  - { id: alice, type: User, memberOf: [ops] }
  - { id: bob, type: User }
  - { id: ops, type: Group }
  - { id: carol, type: User }
roleAssignments:
  - { id: ra-1, principal: bob, role: Reader, scope: /subscriptions/s1 }
"#;

    fn subjects(old: &str, new: &str) -> Vec<String> {
        affected(&load(old), &load(new))
            .subjects
            .into_iter()
            .collect()
    }

    #[test]
    fn an_unchanged_snapshot_affects_nobody() {
        assert!(subjects(BASE, BASE).is_empty());
        // Renaming an assignment's id changes no access.
        let renamed = BASE.replace("id: ra-1", "id: ra-renamed");
        assert!(subjects(BASE, &renamed).is_empty());
    }

    #[test]
    fn an_assignment_to_a_group_affects_its_members() {
        let new = format!(
            "{BASE}  - {{ id: ra-2, principal: ops, role: Owner, scope: /subscriptions/s1 }}\n"
        );
        assert_eq!(subjects(BASE, &new), ["alice", "ops"]);
    }

    #[test]
    fn joining_a_group_affects_the_member() {
        let new = BASE.replace(
            "{ id: carol, type: User }",
            "{ id: carol, type: User, memberOf: [ops] }",
        );
        assert_eq!(subjects(BASE, &new), ["carol"]);
    }

    #[test]
    fn an_everyone_deny_or_a_hierarchy_move_affects_everyone() {
        let deny = format!("{BASE}denyAssignments:\n  - {{ id: d, everyone: true, scope: /, actions: ['*/delete'] }}\n");
        assert_eq!(subjects(BASE, &deny).len(), 4);
        let mg = format!("{BASE}managementGroups: [{{ id: mg }}]\nsubscriptions: [{{ id: s1, managementGroup: mg }}]\n");
        let a = affected(&load(BASE), &load(&mg));
        assert!(a.hierarchy_changed);
        assert_eq!(a.subjects.len(), 4);
    }

    #[test]
    fn the_universe_holds_named_operations_and_their_types_crud() {
        let s = load(BASE);
        let u = Universe::of(&s.tenant, &s.tenant);
        let control: Vec<&str> = u.control.iter().map(|(op, _)| op.as_str()).collect();
        // Named by a role, and derived from its resource type.
        for op in [
            "Microsoft.Compute/virtualMachines/read",
            "Microsoft.Compute/virtualMachines/write",
            "Microsoft.Compute/virtualMachines/delete",
        ] {
            assert!(control.iter().any(|c| c.eq_ignore_ascii_case(op)), "{op}");
        }
        // An action's resource type is the part before its name.
        let login = "Microsoft.Compute/virtualMachines/login/action";
        assert!(u.data.iter().any(|(op, _)| op.eq_ignore_ascii_case(login)));
        assert!(!u.data.iter().any(
            |(op, _)| op.eq_ignore_ascii_case("Microsoft.Compute/virtualMachines/login/delete")
        ));
        assert!(!control.iter().any(|c| c.contains('*')));
        let blobs_delete = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete";
        assert!(u
            .data
            .iter()
            .any(|(op, _)| op.eq_ignore_ascii_case(blobs_delete)));
        let read = u.control.iter().find(|(op, _)| op.ends_with("/read"));
        assert!(read.is_some_and(|(_, read_only)| *read_only));
    }

    #[test]
    fn unmatched_keys_are_a_multiset_difference() {
        let v = |s: &str| s.chars().collect::<Vec<char>>();
        let sorted = |mut k: Vec<char>| {
            k.sort_unstable();
            k
        };
        assert!(unmatched(v("abcdef"), v("abcdef")).is_empty());
        assert_eq!(unmatched(v("abcdef"), v("abcXdef")), ['X']);
        assert_eq!(sorted(unmatched(v("abcdef"), v("abdXf"))), ['X', 'c', 'e']);
        // Order does not matter; counts do.
        assert!(unmatched(v("abc"), v("cab")).is_empty());
        assert_eq!(unmatched(v("aab"), v("ab")), ['a']);
        assert_eq!(unmatched(v(""), v("zz")), ['z']);
    }

    #[test]
    fn durations_are_written_as_the_snapshot_writes_them() {
        use std::time::Duration;
        assert_eq!(duration_text(Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration_text(Duration::from_secs(900)), "15m");
        assert_eq!(duration_text(Duration::from_secs(0)), "0s");
    }
}
