//! The diff as data: what `rampart diff --format json` prints (schema
//! `rampart.diff/v1`, described in docs/review.md) and what the text
//! rendering reads.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{principal_key, Hierarchy, Scope};

/// The schema name and version of the JSON form.
pub const SCHEMA: &str = "rampart.diff/v1";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    pub schema: &'static str,
    pub old: SnapshotRef,
    pub new: SnapshotRef,
    /// Anything is gained: access (certain or conditional), an agent's
    /// autonomy, or an input a condition reads. Exit code 1.
    pub gained: bool,
    pub summary: Summary,
    /// Principals and access keys whose access changed, by id.
    pub principals: Vec<PrincipalDiff>,
    pub agents: Vec<AgentDiff>,
    pub condition_inputs: Vec<ConditionInputChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    pub source: String,
    pub revision: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub principals_gaining: usize,
    pub principals_losing: usize,
    /// (principal, scope, operation) triples that became ALLOW.
    pub operations_gained: usize,
    /// (principal, scope, operation) triples that stopped being ALLOW.
    pub operations_lost: usize,
    pub agents_gaining_autonomy: usize,
    /// The size of the operation universe, per plane.
    pub control_operations: usize,
    pub data_operations: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrincipalDiff {
    pub principal: String,
    /// `User`, `Group`, `ServicePrincipal`, `ManagedIdentity` or `AccessKey`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `added`, `removed` or `kept`.
    pub presence: &'static str,
    /// Groups named in `memberOf` now and not before, and the reverse.
    pub groups_joined: Vec<String>,
    pub groups_left: Vec<String>,
    pub gains: bool,
    pub losses: bool,
    pub changes: Vec<ScopeChange>,
}

/// Which scopes a [`ScopeChange`] speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Coverage {
    /// The scope and the scopes below it.
    ScopeAndBelow,
    /// The scope itself only (a deny assignment with
    /// `doNotApplyToChildScopes` makes the two differ).
    ScopeOnly,
    /// The scopes below it, not the scope itself.
    BelowOnly,
}

/// How one principal's access at one scope changed. A change holds at the
/// scopes its coverage names, down to the next change of the same
/// principal further down (see [`DiffReport::change_at`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeChange {
    pub scope: String,
    pub coverage: Coverage,
    #[serde(flatten)]
    pub delta: Delta,
}

/// What changed, as patterns and as named operations.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    pub gains: Vec<TermChange>,
    pub losses: Vec<TermChange>,
    pub operations: Vec<OperationChange>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.gains.is_empty() && self.losses.is_empty() && self.operations.is_empty()
    }

    pub fn gains(&self) -> bool {
        !self.gains.is_empty() || self.operations.iter().any(|o| o.change.is_gain())
    }

    pub fn losses(&self) -> bool {
        !self.losses.is_empty() || self.operations.iter().any(|o| o.change.is_loss())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TermKind {
    /// In gains: newly granted. In losses: no longer granted.
    Grant,
    /// In gains: a deny that no longer applies. In losses: a deny that now
    /// applies.
    Deny,
    /// An access key's data-plane access at its resource.
    AccessKey,
}

/// A set of operations: those `pattern` matches and no `minus` pattern
/// does, on one plane, granted when every condition holds (none: always),
/// and for `readOnly` only the read-only ones (an agent in Review mode:
/// its writes wait for approval).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TermChange {
    pub kind: TermKind,
    pub data_action: bool,
    pub pattern: String,
    pub minus: Vec<String>,
    pub conditions: Vec<String>,
    pub read_only: bool,
    pub via: Vec<Via>,
}

/// What a term came from: a role assignment (with its role, the group it
/// came through and the agent deriving it), a deny assignment, or an
/// access key; `scope` is where that object sits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Via {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_assignment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    pub scope: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OperationChangeKind {
    /// Not ALLOW before, ALLOW now.
    Gain,
    /// ALLOW before, not now.
    Loss,
    /// Neither ALLOW; now some condition would make it ALLOW, before none.
    ConditionalGain,
    /// Neither ALLOW; before some condition would have, now none.
    ConditionalLoss,
    /// Neither ALLOW; conditional both times, under other conditions.
    ConditionChange,
}

impl OperationChangeKind {
    pub fn is_gain(self) -> bool {
        matches!(
            self,
            OperationChangeKind::Gain
                | OperationChangeKind::ConditionalGain
                | OperationChangeKind::ConditionChange
        )
    }

    pub fn is_loss(self) -> bool {
        matches!(
            self,
            OperationChangeKind::Loss | OperationChangeKind::ConditionalLoss
        )
    }
}

/// One named operation whose allowance changed at the scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationChange {
    pub operation: String,
    pub data_action: bool,
    pub change: OperationChangeKind,
    pub old: DecisionOutcome,
    pub new: DecisionOutcome,
    /// The changed objects that take this operation.
    pub because: Vec<Via>,
}

/// A decision with no condition holding, and the conditions under any of
/// which it would be ALLOW instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionOutcome {
    pub decision: &'static str,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_if: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentDiff {
    pub agent: String,
    /// The agent's identity (in the new snapshot, else the old).
    pub principal: String,
    /// `added`, `removed` or `changed`.
    pub presence: String,
    pub changes: Vec<AgentChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    /// More autonomy or reach: exit code 1.
    Gain,
    Loss,
    /// Neither by itself (its effect on access, if any, shows in `principals`).
    Change,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentChange {
    /// The snapshot key, e.g. `executionMode`, `managedScopes`,
    /// `elevation.autoApprove`, or `agent` for one added or removed.
    pub field: String,
    pub old: Option<serde_json::Value>,
    pub new: Option<serde_json::Value>,
    pub effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionInputChange {
    /// `resourceTags` or `principalAttributes`.
    pub kind: String,
    /// The resource's scope or the principal's id.
    pub target: String,
    pub old: BTreeMap<String, String>,
    pub new: BTreeMap<String, String>,
    /// Some condition of the new snapshot reads this kind of input; counts
    /// as a gain, as the condition may now pass.
    pub may_affect: bool,
}

impl DiffReport {
    /// The change that holds for `principal` at `scope`: the change at the
    /// deepest scope at or above it whose coverage includes it, walking
    /// ancestry as the new snapshot's `hierarchy` defines it. `None`: the
    /// principal's access there did not change.
    pub fn change_at(
        &self,
        principal: &str,
        scope: &Scope,
        hierarchy: &Hierarchy,
    ) -> Option<&ScopeChange> {
        let key = principal_key(principal);
        let p = self
            .principals
            .iter()
            .find(|p| principal_key(&p.principal) == key)?;
        for (depth, ancestor) in hierarchy.ancestor_keys(scope).iter().enumerate() {
            let found = p.changes.iter().find(|c| {
                c.scope.eq_ignore_ascii_case(ancestor)
                    && match c.coverage {
                        Coverage::ScopeAndBelow => true,
                        Coverage::ScopeOnly => depth == 0,
                        Coverage::BelowOnly => depth > 0,
                    }
            });
            if found.is_some() {
                return found;
            }
        }
        None
    }
}
