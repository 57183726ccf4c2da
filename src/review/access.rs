//! What one subject (a principal or an access key) holds at one scope of
//! one snapshot, as terms of patterns: the symbolic form a diff compares.
//!
//! The holding is read from the engine's own resolution
//! ([`effective::resolve`]: groups, ancestry, deny applicability and
//! exclusions, the agent's managed scopes, derived assignments), so the
//! diff never re-derives who holds what where. Only the last step of a
//! decision, matching one operation against the terms, is done here, in
//! [`Holding::outcome`]; a randomized test holds it to [`Loaded::decide`].
//!
//! [`Loaded::decide`]: crate::engine::Loaded::decide

use std::sync::OnceLock;

use crate::engine::{effective, Reason, Verdict};
use crate::model::{
    AccessKey, ActionPattern, DenyAssignment, ExecutionMode, PatternSet, RoleAssignment,
    RoleDefinition,
};
use crate::snapshot::{AccessKeyIx, Anchor, CompiledSnapshot, PrincipalIx};

use super::patterns::disjoint;

/// Who a request names, in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Principal(PrincipalIx),
    Key(AccessKeyIx),
    /// Neither a principal nor an access key of the snapshot.
    Unknown,
}

impl Subject {
    /// The principal or access key with this id (principals first, as in
    /// a decision).
    pub fn find(snapshot: &CompiledSnapshot, id: &str) -> Subject {
        if let Some(p) = snapshot.principal(id) {
            Subject::Principal(p)
        } else if let Some(k) = snapshot.access_key(id) {
            Subject::Key(k)
        } else {
            Subject::Unknown
        }
    }
}

/// What comes before the roles in a decision: whether they are consulted
/// at all, and how an agent's mode bends the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Not in the snapshot: everything is DENY `UNKNOWN_PRINCIPAL`.
    Unknown,
    /// An access key: data-plane operations at or below its resource,
    /// unless that resource disables local authentication.
    Key { inside: bool, disabled: bool },
    /// An agent's identity outside its managed scopes.
    OutOfAgentScope,
    /// Deny assignments and roles decide; `agent` is the mode of the agent
    /// whose identity this is.
    Open { agent: Option<ExecutionMode> },
}

/// Where a term comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'s> {
    Assignment {
        assignment: &'s RoleAssignment,
        role: &'s RoleDefinition,
        /// The group the assignment names, when not the subject itself.
        group: Option<&'s str>,
        /// The agent whose permission level derives the assignment.
        agent: Option<&'s str>,
    },
    Deny(&'s DenyAssignment),
    AccessKey(&'s AccessKey),
}

/// One allow pattern of a role block (or of a deny assignment) with the
/// block's subtract patterns that can touch it: the operations `pattern`
/// matches and no pattern of `minus` does.
#[derive(Debug, Clone)]
pub struct Term<'s> {
    pub data: bool,
    pub pattern: &'s ActionPattern,
    pub minus: Vec<&'s ActionPattern>,
    /// The block's condition, then the assignment's; all must hold.
    pub conditions: Vec<&'s str>,
    pub source: Source<'s>,
}

impl Term<'_> {
    /// Whether the term takes `operation` (conditions aside).
    pub fn covers(&self, operation: &str) -> bool {
        self.pattern.matches(operation) && !self.minus.iter().any(|m| m.matches(operation))
    }
}

/// Everything a subject holds at one scope of one snapshot.
#[derive(Debug, Clone)]
pub struct Holding<'s> {
    pub gate: Gate,
    /// Every allow term of every applicable assignment (for a key: one
    /// data-plane `*`), whatever the gate.
    pub grants: Vec<Term<'s>>,
    /// Every deny term that applies.
    pub denies: Vec<Term<'s>>,
}

/// A decision for one operation, as the terms give it: the verdict and
/// reason when no condition holds, and the conditions (each a conjunction,
/// written out) under any one of which it would be ALLOW instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: Reason,
    pub allow_if: Vec<String>,
    /// A conditioned grant takes the operation: conditions may make it
    /// ALLOW (those in `allow_if`) or, for an agent's Review-mode write,
    /// change the reason (`REVIEW_MODE_WRITE` when one holds).
    pub conditioned: bool,
}

impl Outcome {
    fn of(verdict: Verdict, reason: Reason) -> Outcome {
        Outcome {
            verdict,
            reason,
            allow_if: Vec::new(),
            conditioned: false,
        }
    }
}

/// `*`, the pattern an access key's data-plane grant stands for.
pub fn any_operation() -> &'static ActionPattern {
    static ANY: OnceLock<ActionPattern> = OnceLock::new();
    ANY.get_or_init(|| literal_pattern("*"))
}

/// `*/read`: the read-only operations.
pub fn read_operations() -> &'static ActionPattern {
    static READ: OnceLock<ActionPattern> = OnceLock::new();
    READ.get_or_init(|| literal_pattern("*/read"))
}

fn literal_pattern(text: &'static str) -> ActionPattern {
    // Constant, non-empty text without whitespace: parsing cannot fail.
    ActionPattern::parse(text).unwrap_or_else(|e| unreachable!("'{text}': {e}"))
}

impl<'s> Holding<'s> {
    /// The holding of `subject` at `anchor`, read from the engine's
    /// effective-permission resolution.
    pub fn resolve(snapshot: &'s CompiledSnapshot, subject: Subject, anchor: Anchor) -> Self {
        let tenant = &snapshot.tenant;
        match subject {
            Subject::Unknown => Holding {
                gate: Gate::Unknown,
                grants: Vec::new(),
                denies: Vec::new(),
            },
            Subject::Key(k) => {
                let key = &tenant.access_keys[k];
                let key_node = snapshot.access_key_node[k];
                let inside = snapshot.chain(anchor.node).any(|n| n == key_node);
                let disabled = snapshot
                    .resource_at
                    .get(&key_node)
                    .is_some_and(|&r| tenant.resources[r].disable_local_auth);
                let grants = if inside && !disabled {
                    vec![Term {
                        data: true,
                        pattern: any_operation(),
                        minus: Vec::new(),
                        conditions: Vec::new(),
                        source: Source::AccessKey(key),
                    }]
                } else {
                    Vec::new()
                };
                Holding {
                    gate: Gate::Key { inside, disabled },
                    grants,
                    denies: Vec::new(),
                }
            }
            Subject::Principal(p) => {
                let resolved = effective::resolve(snapshot, p, anchor);
                let gate = match resolved.agent {
                    Some(position) if !position.in_scope => Gate::OutOfAgentScope,
                    Some(position) => Gate::Open {
                        agent: Some(tenant.agents[position.agent].execution_mode),
                    },
                    None => Gate::Open { agent: None },
                };
                let mut grants = Vec::new();
                for g in resolved.sources.iter() {
                    let assignment = &tenant.role_assignments[g.assignment];
                    let role = &tenant.role_definitions[assignment.role];
                    let source = Source::Assignment {
                        assignment,
                        role,
                        group: g.via.map(|v| tenant.principals[v].id.as_str()),
                        agent: assignment
                            .derived_from_agent
                            .map(|a| tenant.agents[a].id.as_str()),
                    };
                    for block in &role.permissions {
                        let conditions: Vec<&str> = block
                            .condition
                            .iter()
                            .chain(assignment.condition.iter())
                            .map(|c| c.as_str())
                            .collect();
                        for data in [false, true] {
                            let (allow, subtract) = block.plane(data);
                            push_terms(&mut grants, data, allow, subtract, &conditions, source);
                        }
                    }
                }
                let mut denies = Vec::new();
                for &d in resolved.denies.iter() {
                    let deny = &tenant.deny_assignments[d];
                    let source = Source::Deny(deny);
                    push_terms(
                        &mut denies,
                        false,
                        &deny.actions,
                        &deny.not_actions,
                        &[],
                        source,
                    );
                    push_terms(
                        &mut denies,
                        true,
                        &deny.data_actions,
                        &deny.not_data_actions,
                        &[],
                        source,
                    );
                }
                Holding {
                    gate,
                    grants,
                    denies,
                }
            }
        }
    }

    /// The decision for one operation, in the engine's decision order:
    /// key, unknown principal, agent scope, deny assignments, roles, the
    /// agent decision table. Conditions are not evaluated; they are listed.
    pub fn outcome(&self, operation: &str, data: bool, read_only: bool) -> Outcome {
        let agent = match self.gate {
            Gate::Unknown => return Outcome::of(Verdict::Deny, Reason::UnknownPrincipal),
            Gate::Key { inside, disabled } => {
                return match (data && inside, disabled) {
                    (false, _) => Outcome::of(Verdict::Deny, Reason::NoMatchingAssignment),
                    (true, true) => Outcome::of(Verdict::Deny, Reason::LocalAuthDisabled),
                    (true, false) => Outcome::of(Verdict::Allow, Reason::KeyAccess),
                }
            }
            Gate::OutOfAgentScope => return Outcome::of(Verdict::Deny, Reason::OutOfAgentScope),
            Gate::Open { agent } => agent,
        };
        let takes = |t: &&Term<'_>| t.data == data && t.covers(operation);
        if self.denies.iter().any(|t| takes(&t)) {
            return Outcome::of(Verdict::Deny, Reason::DenyAssignment);
        }
        let has = self
            .grants
            .iter()
            .filter(takes)
            .any(|t| t.conditions.is_empty());
        let mut allow_if = Vec::new();
        if !has {
            for t in self.grants.iter().filter(takes) {
                let text = conjunction(&t.conditions);
                if !allow_if.contains(&text) {
                    allow_if.push(text);
                }
            }
            allow_if.sort_unstable();
        }
        let conditioned = !allow_if.is_empty();
        let (verdict, reason) = match agent {
            None if has => (Verdict::Allow, Reason::RoleAssignment),
            None => (Verdict::Deny, Reason::NoMatchingAssignment),
            Some(mode) if read_only || mode == ExecutionMode::Auto => {
                if has {
                    (Verdict::Allow, Reason::RoleAssignment)
                } else {
                    (Verdict::ApprovalRequired, Reason::NeedsElevation)
                }
            }
            // A Review-mode write is never ALLOW by roles, condition or not.
            Some(_) => {
                allow_if.clear();
                if has {
                    (Verdict::ApprovalRequired, Reason::ReviewModeWrite)
                } else {
                    (Verdict::ApprovalRequired, Reason::NeedsElevation)
                }
            }
        };
        Outcome {
            verdict,
            reason,
            allow_if,
            conditioned,
        }
    }
}

/// Conditions that must all hold, written as one.
pub fn conjunction(conditions: &[&str]) -> String {
    match conditions {
        [one] => (*one).to_owned(),
        many => many
            .iter()
            .map(|c| format!("({c})"))
            .collect::<Vec<_>>()
            .join(" AND "),
    }
}

/// One term per allow pattern, each with the subtract patterns that can
/// touch it.
fn push_terms<'s>(
    out: &mut Vec<Term<'s>>,
    data: bool,
    allow: &'s PatternSet,
    subtract: &'s PatternSet,
    conditions: &[&'s str],
    source: Source<'s>,
) {
    for pattern in allow.iter() {
        out.push(Term {
            data,
            pattern,
            minus: subtract.iter().filter(|m| !disjoint(pattern, m)).collect(),
            conditions: conditions.to_vec(),
            source,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Scope;

    const SNAPSHOT: &str = r#"
principals:
  - { id: alice, type: User, memberOf: [ops] }
  - { id: ops, type: Group }
  - { id: mi, type: ManagedIdentity }
roleAssignments:
  - { id: ra-ops, principal: ops, role: Contributor, scope: /subscriptions/s1/resourceGroups/rg }
  - id: ra-cond
    principal: alice
    role: Storage Blob Data Reader
    scope: /subscriptions/s1
    condition: "@Resource[env] StringEquals 'test'"
denyAssignments:
  - { id: deny-delete, principals: [ops], scope: /subscriptions/s1/resourceGroups/rg, actions: ["*/delete"] }
resources:
  - { scope: /subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st, disableLocalAuth: true }
accessKeys:
  - { id: key-st, resource: /subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st }
agents:
  - id: ag
    principal: mi
    resource: /subscriptions/s1/resourceGroups/rg/providers/Microsoft.App/agents/ag
    managedScopes: [/subscriptions/s1/resourceGroups/rg]
    permissionLevel: Privileged
    executionMode: Review
"#;

    fn holding<'s>(s: &'s CompiledSnapshot, who: &str, scope: &str) -> Holding<'s> {
        let scope = Scope::parse(scope).unwrap_or_else(|e| panic!("{e}"));
        Holding::resolve(s, Subject::find(s, who), s.anchor(&scope))
    }

    fn snapshot() -> CompiledSnapshot {
        crate::snapshot::load_str(SNAPSHOT, "test").unwrap_or_else(|e| panic!("{e}"))
    }

    const RG: &str = "/subscriptions/s1/resourceGroups/rg";

    #[test]
    fn grants_come_through_groups_and_denies_subtract() {
        let s = snapshot();
        let h = holding(&s, "alice", RG);
        assert_eq!(h.gate, Gate::Open { agent: None });
        let write = h.outcome("Microsoft.Compute/virtualMachines/write", false, false);
        assert_eq!(write.verdict, Verdict::Allow);
        let delete = h.outcome("Microsoft.Compute/virtualMachines/delete", false, false);
        assert_eq!(delete.reason, Reason::DenyAssignment);
        let via_group = h.grants.iter().any(|t| {
            matches!(
                t.source,
                Source::Assignment {
                    group: Some("ops"),
                    ..
                }
            )
        });
        assert!(via_group);
        // Contributor's notActions that cannot touch `*` are still kept;
        // those are all of them, `*` meeting everything.
        let star = h.grants.iter().find(|t| t.pattern.as_str() == "*");
        assert!(star.is_some_and(|t| !t.minus.is_empty()));
    }

    #[test]
    fn conditioned_grants_are_listed_not_evaluated() {
        let s = snapshot();
        let h = holding(&s, "alice", "/subscriptions/s1");
        let read = h.outcome(
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
            true,
            true,
        );
        assert_eq!(read.verdict, Verdict::Deny);
        assert_eq!(read.allow_if, ["@Resource[env] StringEquals 'test'"]);
    }

    #[test]
    fn agents_keys_and_strangers_have_their_gates() {
        let s = snapshot();
        let inside = holding(&s, "mi", RG);
        assert_eq!(
            inside.gate,
            Gate::Open {
                agent: Some(ExecutionMode::Review)
            }
        );
        let write = inside.outcome("Microsoft.Compute/virtualMachines/write", false, false);
        assert_eq!(write.reason, Reason::ReviewModeWrite);
        let outside = holding(&s, "mi", "/subscriptions/s1");
        assert_eq!(outside.gate, Gate::OutOfAgentScope);
        let key = holding(
            &s,
            "key-st",
            &format!("{RG}/providers/Microsoft.Storage/storageAccounts/st"),
        );
        assert_eq!(
            key.gate,
            Gate::Key {
                inside: true,
                disabled: true
            }
        );
        assert!(key.grants.is_empty());
        assert_eq!(holding(&s, "nobody", RG).gate, Gate::Unknown);
    }
}
