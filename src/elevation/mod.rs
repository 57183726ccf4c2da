//! Elevation (docs/agents-and-elevation.md): the approval broker, its grants and the durable
//! state store. Agents ask; humans (or the auto-approve policy of an
//! Auto-mode agent) decide; an approval lends the approver's own permission
//! for a bounded time.
//!
//! The policy (who may approve, what auto-approves, when a grant ends) is
//! pure functions in [`policy`]; the [`broker`] wraps them with locking,
//! the [`store`] and publishing.

pub mod broker;
pub mod error;
pub mod events;
pub mod policy;
pub mod store;
pub mod types;

pub use broker::{Broker, Limits, Listing};
pub use error::ElevationError;
pub use events::AuditEvent;
pub use policy::approver::Refusal;
pub use policy::lifecycle::EndReason;
pub use policy::request::ElevationRequest;
pub use store::{
    Cursor, DbConfig, ElevationQuery, GrantQuery, Page, PgStore, Purged, Resolved, SharedState,
    StateStore, Store, StoreError,
};
pub use types::{
    Approval, ApprovalRecord, Elevation, ElevationState, Grant, GrantState, ShadowOutcome,
    ShadowVerdict,
};
