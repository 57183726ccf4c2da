//! Role definitions (docs/model.md#roles) and the role assignments and deny
//! assignments that use them (docs/model.md#role-assignments and docs/model.md#deny-assignments).

use super::action::PatternSet;
use super::condition::Condition;
use super::scope::Scope;

/// Whether a role ships with rampart or comes from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleType {
    BuiltInRole,
    CustomRole,
}

impl RoleType {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleType::BuiltInRole => "BuiltInRole",
            RoleType::CustomRole => "CustomRole",
        }
    }
}

/// One permission block of a role. `not_*` subtract only inside this block.
#[derive(Debug, Clone, Default)]
pub struct PermissionBlock {
    pub actions: PatternSet,
    pub not_actions: PatternSet,
    pub data_actions: PatternSet,
    pub not_data_actions: PatternSet,
    pub condition: Option<Condition>,
}

impl PermissionBlock {
    /// The allow and subtract lists of one plane.
    #[inline]
    pub fn plane(&self, data_action: bool) -> (&PatternSet, &PatternSet) {
        if data_action {
            (&self.data_actions, &self.not_data_actions)
        } else {
            (&self.actions, &self.not_actions)
        }
    }
}

#[derive(Debug, Clone)]
pub struct RoleDefinition {
    /// Lowercase GUID.
    pub id: String,
    pub role_name: String,
    pub aliases: Vec<String>,
    pub description: String,
    pub role_type: RoleType,
    pub permissions: Vec<PermissionBlock>,
    pub assignable_scopes: Vec<Scope>,
}

/// A role assignment; `principal` and `role` index into the snapshot's
/// principals and role definitions.
#[derive(Debug, Clone)]
pub struct RoleAssignment {
    pub id: String,
    pub principal: usize,
    pub role: usize,
    pub scope: Scope,
    pub condition: Option<Condition>,
    /// Set for the standing assignments derived from an agent's level.
    pub derived_from_agent: Option<usize>,
}

/// A deny assignment. `principals` and `exclude_principals` index into the
/// snapshot's principals; groups stand for their transitive members.
#[derive(Debug, Clone)]
pub struct DenyAssignment {
    pub id: String,
    pub principals: Vec<usize>,
    pub everyone: bool,
    pub exclude_principals: Vec<usize>,
    pub scope: Scope,
    pub do_not_apply_to_child_scopes: bool,
    pub actions: PatternSet,
    pub not_actions: PatternSet,
    pub data_actions: PatternSet,
    pub not_data_actions: PatternSet,
}

impl DenyAssignment {
    /// Whether the deny's operation lists cover `operation` on its plane.
    #[inline]
    pub fn covers(&self, operation: &str, data_action: bool) -> bool {
        let (actions, not_actions) = if data_action {
            (&self.data_actions, &self.not_data_actions)
        } else {
            (&self.actions, &self.not_actions)
        };
        actions.matches(operation) && !not_actions.matches(operation)
    }
}
