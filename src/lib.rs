//! rampart: a gRPC authorization sidecar with Azure RBAC semantics.
//!
//! Data flows one way: a snapshot file is parsed and validated into the
//! [`model`], compiled into an immutable [`snapshot::CompiledSnapshot`],
//! decided on by the [`engine`], and served by the gRPC [`server`]; the
//! [`daemon`] opens what the flags name and runs it all. Offline,
//! [`review`] compares two snapshots and runs policy tests against one.

pub mod audit;
pub mod cli;
pub mod daemon;
pub mod elevation;
pub mod engine;
pub mod extauthz;
pub mod model;
pub mod notifications;
pub mod proto;
pub mod review;
pub mod server;
pub mod snapshot;
pub mod ui;
