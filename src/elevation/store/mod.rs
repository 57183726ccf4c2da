//! The durable state the broker keeps: elevations, grants and the audit
//! trail. [`StateStore`] says what the broker needs; [`Store`] (SQLite,
//! one file under `--state-dir`) is the implementation today. A store
//! shared by several replicas implements the same trait: [`StateStore::resolve`]
//! is one atomic, conditional write, so two replicas cannot both resolve
//! one elevation.

mod sqlite;

pub use sqlite::{Store, DB_FILE};

use std::sync::Arc;

use super::events::AuditEvent;
use super::{Elevation, ElevationState, Grant};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state store: cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("state store: a stored record does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// What [`StateStore::resolve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// The elevation's final state (and its grant, if any) are durable.
    Written,
    /// The stored elevation had left `PENDING` already (in this state);
    /// nothing was written.
    AlreadyResolved(ElevationState),
}

/// What the broker needs of a durable store. Every method returns once the
/// write is durable; the broker acknowledges nothing before.
pub trait StateStore: Send + Sync {
    /// Every stored elevation (oldest change first) and grant.
    fn load(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError>;

    /// Records a new `PENDING` elevation.
    fn create_elevation(&self, e: &Elevation) -> Result<(), StoreError>;

    /// Resolves an elevation: its final state and, for an approval, the
    /// grant, in one transaction, and only if the stored elevation is still
    /// `PENDING` (or absent).
    fn resolve(&self, e: &Elevation, grant: Option<&Grant>) -> Result<Resolved, StoreError>;

    /// Records a grant's uses or its end.
    fn put_grant(&self, g: &Grant) -> Result<(), StoreError>;

    /// Appends one event to the audit trail.
    fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// The audit trail, oldest first, as stored.
    fn audit_events(&self) -> Result<Vec<serde_json::Value>, StoreError>;
}

/// A store shared behind an `Arc` (a broker and a test, say).
impl<S: StateStore + ?Sized> StateStore for Arc<S> {
    fn load(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError> {
        (**self).load()
    }
    fn create_elevation(&self, e: &Elevation) -> Result<(), StoreError> {
        (**self).create_elevation(e)
    }
    fn resolve(&self, e: &Elevation, grant: Option<&Grant>) -> Result<Resolved, StoreError> {
        (**self).resolve(e, grant)
    }
    fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        (**self).put_grant(g)
    }
    fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        (**self).append_audit(event)
    }
    fn audit_events(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        (**self).audit_events()
    }
}
