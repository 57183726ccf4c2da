//! The domain model: scopes, operations and their patterns, principals,
//! roles and assignments, agents, resources and conditions. Pure types and
//! parsing; nothing here knows about YAML, caches or gRPC.

pub mod action;
pub mod agent;
pub mod condition;
pub mod principal;
pub mod resource;
pub mod role;
pub mod scope;

pub use action::{check_operation, ActionPattern, OperationError, OperationInfo, PatternSet};
pub use agent::{
    duration_text, Agent, ApprovalPolicy, AutoApproveRule, ElevationSettings, ExecutionMode,
    PermissionLevel,
};
pub use condition::{Condition, ConditionError, ConditionInput, RequestAttributes};
pub use principal::{
    check_principal_id, guid_bits, is_guid, principal_key, Principal, PrincipalType,
};
pub use resource::{AccessKey, Resource};
pub use role::{DenyAssignment, PermissionBlock, RoleAssignment, RoleDefinition, RoleType};
pub use scope::{Scope, ScopeError, ScopeKind};
pub mod tenant;
pub use tenant::{Hierarchy, ManagementGroup, Subscription, Tenant};

/// Sixteen bytes as a lowercase UUID-shaped string (8-4-4-4-12).
pub fn uuid_text(bytes: &[u8; 16]) -> String {
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
