//! The durable state the broker keeps: elevations, grants and the audit
//! trail. [`StateStore`] says what the broker needs; [`Store`] (SQLite,
//! one file under `--state-dir`) is the embedded one, [`PgStore`]
//! (PostgreSQL, `--state-db`) the one a fleet of replicas shares. Both
//! keep the semantics written down on each method: most of all,
//! [`StateStore::resolve`] is one atomic, conditional write ("only if still
//! `PENDING`") that says who won, so two replicas cannot both resolve one
//! elevation. What only a shared store does — following the other
//! replicas' changes, counting limits across them — is [`SharedState`].

pub mod postgres;
mod sqlite;

pub use postgres::{AutoCount, DbConfig, PgStore, Reservation, PG_SCHEMA_VERSION};
pub use sqlite::{Store, DB_FILE, SCHEMA_VERSION};

use std::sync::Arc;
use std::time::SystemTime;

use super::events::AuditEvent;
use super::policy::freeze::FreezeState;
use super::{ApprovalRecord, Elevation, ElevationState, Grant};

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
    /// The file exists but is not a rampart state store this version can
    /// open (empty, foreign, or written by a newer rampart).
    #[error(
        "state store: {path} {problem}; restore it from a backup or move it away to start empty"
    )]
    NotRampart { path: String, problem: String },
    /// Creating an elevation whose id is stored already.
    #[error("state store: elevation {0} exists already")]
    Duplicate(String),
    /// The shared database cannot be reached (down, restarting, or the
    /// network): nothing was written, or nothing is known to have been.
    #[error("the state database is unreachable: {0}")]
    Unavailable(String),
    /// The shared database refused a statement.
    #[error("state database: {0}")]
    Database(String),
}

/// What [`StateStore::resolve`] did.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// This resolution won: the elevation's final state (and its grant, if
    /// any) are durable.
    Written,
    /// Another resolution won first: the elevation as stored, unchanged;
    /// nothing of this resolution (not its grant) was written.
    AlreadyResolved(Box<Elevation>),
    /// An auto-approval's `maxPerHour` was spent (by another replica)
    /// before it was written: nothing was written.
    LimitReached,
}

/// Which elevations a listing wants; every `Some` narrows.
#[derive(Debug, Clone, Default)]
pub struct ElevationQuery {
    pub state: Option<ElevationState>,
    pub principal_id: Option<String>,
    /// Only these agents' elevations (the caller's visible agents).
    pub agent_ids: Option<Vec<String>>,
    /// Newest first (history views); oldest first otherwise.
    pub newest_first: bool,
}

/// Which grants a listing wants.
#[derive(Debug, Clone, Default)]
pub struct GrantQuery {
    /// Active grants only.
    pub active_only: bool,
    pub principal_id: Option<String>,
    pub agent_ids: Option<Vec<String>>,
    /// Newest first (history views); oldest first otherwise.
    pub newest_first: bool,
}

/// Where a page starts: after the record with this creation time and id.
/// Listings are ordered by `(created_at, id)`, oldest first unless the
/// query asks for newest first, so a page boundary is stable while records
/// are added or purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_ms: i64,
    pub id: String,
}

impl Cursor {
    const PREFIX: &'static str = "r1.";

    /// The opaque `page_token` text (hex, so it needs no escaping).
    pub fn token(&self) -> String {
        format!(
            "{}{}",
            Cursor::PREFIX,
            hex::encode(format!("{}:{}", self.created_ms, self.id))
        )
    }

    /// Reads a `page_token`; `None` for anything this version did not write.
    pub fn parse(token: &str) -> Option<Cursor> {
        let bytes = hex::decode(token.strip_prefix(Cursor::PREFIX)?).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (ms, id) = text.split_once(':')?;
        if id.is_empty() || id.len() > 64 {
            return None;
        }
        Some(Cursor {
            created_ms: ms.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// One page of a listing; `next` is where the following page starts, `None`
/// on the last page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// What [`StateStore::purge`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub elevations: usize,
    pub grants: usize,
    pub audit: usize,
}

/// What the broker needs of a durable store. Every write returns once it is
/// durable, and a write that fails wrote nothing; the broker acknowledges
/// nothing before, and changes no memory of its own after a failure.
pub trait StateStore: Send + Sync {
    /// What the broker keeps in memory: the `PENDING` elevations and the
    /// `ACTIVE` grants. History stays in the store ([`Self::elevations`]).
    fn load_live(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError>;

    /// Records a new `PENDING` elevation; [`StoreError::Duplicate`] when
    /// the id exists (a create never overwrites).
    fn create_elevation(&self, e: &Elevation) -> Result<(), StoreError>;

    /// Resolves an elevation, conditionally and atomically: only if the
    /// stored elevation is still `PENDING` (or absent), its final state and,
    /// for an approval, the grant are written in one transaction
    /// ([`Resolved::Written`]); otherwise nothing is written and the stored
    /// winner comes back ([`Resolved::AlreadyResolved`]). Exactly one
    /// resolution of an elevation is ever written, across replicas.
    fn resolve(&self, e: &Elevation, grant: Option<&Grant>) -> Result<Resolved, StoreError>;

    /// Records a grant's uses, its reservation of uses or its end, as the
    /// grant stands. An ended grant is never made active again.
    fn put_grant(&self, g: &Grant) -> Result<(), StoreError>;

    /// Adds one approval to a `PENDING` elevation that needs several,
    /// atomically: appended unless its approver's is recorded already (an
    /// approver counts once, across replicas). The elevation as stored
    /// after — with its state, should it no longer be pending (nothing is
    /// then written) — or `None` when there is no such elevation.
    fn add_approval(
        &self,
        id: &str,
        approval: &ApprovalRecord,
    ) -> Result<Option<Elevation>, StoreError>;

    fn elevation(&self, id: &str) -> Result<Option<Elevation>, StoreError>;

    fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError>;

    /// One page of elevations, ordered by `(created_at, id)`, at most
    /// `limit`, starting after `after`.
    fn elevations(
        &self,
        query: &ElevationQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Elevation>, StoreError>;

    /// One page of grants, in the same order and with the same paging.
    fn grants(
        &self,
        query: &GrantQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Grant>, StoreError>;

    /// How many elevations are stored (every state), for bounds and tests.
    fn count_elevations(&self) -> Result<usize, StoreError>;

    /// Deletes resolved elevations resolved before `before`, ended grants
    /// that ended before it, and audit events older than it. Pending
    /// elevations and active grants are never purged.
    fn purge(&self, before: SystemTime) -> Result<Purged, StoreError>;

    /// Appends one event to the audit trail.
    fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// The audit trail, oldest first, as stored.
    fn audit_events(&self) -> Result<Vec<serde_json::Value>, StoreError>;

    /// The freeze switch as last set (`None`: never set). Read at start
    /// and every second, so a switch set through one replica reaches the
    /// others sharing the store.
    fn freeze(&self) -> Result<Option<FreezeState>, StoreError>;

    /// Sets the freeze switch durably.
    fn put_freeze(&self, state: &FreezeState) -> Result<(), StoreError>;

    /// The operations of a store other replicas write to as well; `None`
    /// for a store only this process uses.
    fn shared(&self) -> Option<&dyn SharedState> {
        None
    }
}

/// A record as it stands after a change.
#[derive(Debug, Clone)]
pub enum Change {
    /// An elevation, and whether this replica wrote the change.
    Elevation(Box<Elevation>, bool),
    Grant(Box<Grant>),
}

/// The changes after a sequence number, in order, and the number to read
/// on from.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub items: Vec<Change>,
    pub through: i64,
}

/// The bounds a new elevation must stay within, counted in the store
/// across every replica.
#[derive(Debug, Clone)]
pub struct OpenLimits {
    pub max_pending: usize,
    pub max_per_principal: usize,
    /// The agent's `elevation.maxRequestsPerMinute`.
    pub per_minute: u32,
}

/// What [`SharedState::open_elevation`] did.
#[derive(Debug, Clone)]
pub enum Opened {
    /// The elevation was filed, with one waiter.
    Created,
    /// An identical one was pending (filed by any replica): joined, one
    /// more waiter; it as it stands.
    Joined(Box<Elevation>),
    /// So many elevations are pending across the fleet.
    PendingLimit(usize),
    /// So many of this principal's are pending across the fleet.
    TooManyPending(usize),
    /// The agent's rate is spent; a new one may be filed after this long.
    RateLimited(std::time::Duration),
}

/// What a store shared by several replicas does besides [`StateStore`].
/// Every change is numbered by one sequence that grows in commit order;
/// each replica follows it ([`SharedState::changes`]) so its memory — the
/// pending elevations, the engine's grants, the watchers — follows the
/// store.
pub trait SharedState: Send + Sync {
    /// The pending elevations and active grants, and the sequence number
    /// they were read at (one snapshot).
    fn load_live_at(&self) -> Result<(Vec<Elevation>, Vec<Grant>, i64), StoreError>;

    /// The records changed after `since`, as they stand now, in sequence
    /// order (an approval's grant before its elevation).
    fn changes(&self, since: i64) -> Result<Changes, StoreError>;

    /// Woken when a change may have been written (a notification, or a
    /// reconnection after which notifications may have been lost).
    fn changed(&self) -> Arc<tokio::sync::Notify>;

    /// Files `e` (one waiter) unless an identical elevation is pending,
    /// which it joins instead; both within `limits`, counted fleet-wide, in
    /// one transaction.
    fn open_elevation(&self, e: &Elevation, limits: &OpenLimits) -> Result<Opened, StoreError>;

    /// One more waiter on a pending elevation: it as it stands, `None` when
    /// it is no longer pending.
    fn join(&self, id: &str) -> Result<Option<Elevation>, StoreError>;

    /// `n` waiters fewer: it as it stands (its waiters across the fleet),
    /// `None` when it is no longer pending.
    fn leave(&self, id: &str, n: u32) -> Result<Option<Elevation>, StoreError>;

    /// [`StateStore::resolve`] for an auto-approval by a rule with a
    /// `maxPerHour`: counted, and refused ([`Resolved::LimitReached`]) when
    /// spent, in the same transaction.
    fn resolve_counted(
        &self,
        e: &Elevation,
        grant: Option<&Grant>,
        count: &AutoCount,
    ) -> Result<Resolved, StoreError>;

    /// The auto-approvals of `agent_id` since `since`: (rule, when).
    fn auto_approvals(
        &self,
        agent_id: &str,
        since: SystemTime,
    ) -> Result<Vec<(usize, SystemTime)>, StoreError>;

    /// Reserves up to `block` more uses of a limited grant for this
    /// replica, never past `max_uses` across the fleet.
    fn reserve_uses(&self, grant_id: &str, block: u32) -> Result<Reservation, StoreError>;

    /// Adds `n` uses taken on this replica: the grant as stored after.
    fn add_uses(&self, grant_id: &str, n: u32) -> Result<Option<Grant>, StoreError>;

    /// Ends an active grant (as `g` says): whether this end was the one
    /// written (false: it had ended already).
    fn end_grant(&self, g: &Grant) -> Result<bool, StoreError>;
}

/// Implements [`StateStore`] for a pointer to one by forwarding every
/// method: a store shared behind an `Arc` (a broker and a test, say), or
/// chosen at run time behind a `Box` (`--state-dir` or `--state-db`).
macro_rules! forward_state_store {
    ($pointer:ident) => {
        impl<S: StateStore + ?Sized> StateStore for $pointer<S> {
            fn load_live(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError> {
                (**self).load_live()
            }
            fn create_elevation(&self, e: &Elevation) -> Result<(), StoreError> {
                (**self).create_elevation(e)
            }
            fn resolve(
                &self,
                e: &Elevation,
                grant: Option<&Grant>,
            ) -> Result<Resolved, StoreError> {
                (**self).resolve(e, grant)
            }
            fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
                (**self).put_grant(g)
            }
            fn add_approval(
                &self,
                id: &str,
                approval: &ApprovalRecord,
            ) -> Result<Option<Elevation>, StoreError> {
                (**self).add_approval(id, approval)
            }
            fn elevation(&self, id: &str) -> Result<Option<Elevation>, StoreError> {
                (**self).elevation(id)
            }
            fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
                (**self).grant(id)
            }
            fn elevations(
                &self,
                query: &ElevationQuery,
                after: Option<&Cursor>,
                limit: usize,
            ) -> Result<Page<Elevation>, StoreError> {
                (**self).elevations(query, after, limit)
            }
            fn grants(
                &self,
                query: &GrantQuery,
                after: Option<&Cursor>,
                limit: usize,
            ) -> Result<Page<Grant>, StoreError> {
                (**self).grants(query, after, limit)
            }
            fn count_elevations(&self) -> Result<usize, StoreError> {
                (**self).count_elevations()
            }
            fn purge(&self, before: SystemTime) -> Result<Purged, StoreError> {
                (**self).purge(before)
            }
            fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
                (**self).append_audit(event)
            }
            fn audit_events(&self) -> Result<Vec<serde_json::Value>, StoreError> {
                (**self).audit_events()
            }
            fn freeze(&self) -> Result<Option<FreezeState>, StoreError> {
                (**self).freeze()
            }
            fn put_freeze(&self, state: &FreezeState) -> Result<(), StoreError> {
                (**self).put_freeze(state)
            }
            fn shared(&self) -> Option<&dyn SharedState> {
                (**self).shared()
            }
        }
    };
}

forward_state_store!(Arc);
forward_state_store!(Box);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_anything_else() {
        let c = Cursor {
            created_ms: 1_700_000_000_123,
            id: "0b6a-ff".into(),
        };
        assert_eq!(Cursor::parse(&c.token()), Some(c));
        for bad in ["", "r1.", "r1.zz", "x", "r1.3a", "r2.31323a61"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
