//! Elevation (docs/agents-and-elevation.md): the approval broker, its grants and the durable
//! state store. Agents ask; humans (or the auto-approve policy of an
//! Auto-mode agent) decide; an approval lends the approver's own permission
//! for a bounded time.

pub mod broker;
pub mod store;
pub mod types;

pub use broker::{Approval, Broker, ElevationError, ElevationRequest};
pub use store::{Store, StoreError};
pub use types::{Elevation, ElevationState, Grant, GrantState};
