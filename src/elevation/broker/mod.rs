//! The approval broker: elevations wait on an approval channel until a
//! human or the auto-approve policy resolves them, they expire, or their
//! callers go away; approvals become grants that the engine honours.
//!
//! The broker keeps what is live in memory — the pending elevations with
//! their waiting callers, and the active grants — and everything else in
//! the store, listed from there page by page. What is allowed is decided by
//! [`super::policy`].
//!
//! Every change of durable state happens under one lock, the writer: the
//! change is decided there (is the elevation still pending? may this caller
//! approve?), written to the store (a resolution conditionally, "only if
//! still `PENDING`"), and only once the write returned is memory changed,
//! the engine told, the waiters answered and the watchers sent the change —
//! all from what was stored. A write that fails changes nothing in memory,
//! so callers, watchers, `GetElevation` and the store agree, and each
//! elevation has exactly one resolution.
//!
//! On a store shared by a fleet ([`SharedState`]) memory follows the store
//! rather than only this broker's writes: [`Broker::follow`] re-reads what
//! changed after the last change seen (woken by the store, and every
//! second), so elevations filed on any replica are pending here too, a
//! resolution given anywhere answers the callers waiting here, and grants
//! approved or ended anywhere are honoured or dropped here. Waiters are
//! counted across the fleet; the uses of a limited grant are reserved in
//! blocks per replica, so together they never pass `maxUses`.
//!
//! This file holds the broker's state and its one write path
//! (`settle`, `apply`); the rest is split by what
//! happens: `filing` (an agent asks and waits), `resolution` (a human or a
//! rule decides), `grants` (revocation and uses), `upkeep` (the sweeper and
//! snapshot swaps), `freeze_switch`, `fleet` (following a shared store) and
//! `queries` (reads and listings).

mod filing;
mod fleet;
mod freeze_switch;
mod grants;
mod queries;
mod resolution;
mod upkeep;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch};

use super::error::echo;
use super::events::{AuditEvent, ElevationEvent, ElevationEventKind, FreezeEvent, GrantEnded};
use super::policy::approval::{self, Step};
use super::policy::auto_approve::{self, Skipped};
use super::policy::exact;
use super::policy::freeze::{self, FreezeState};
use super::policy::lifecycle::{self, EndReason};
use super::policy::rate::Bucket;
use super::policy::request::{self, ElevationRequest, PendingKey};
use super::policy::shadow;
use super::policy::{agent_by_id, agent_of, approver, bounded};
use super::store::{
    AutoCount, Change, Cursor, ElevationQuery, GrantQuery, OpenLimits, Opened, Page, Purged,
    Resolved, SharedState, StateStore, StoreError,
};
use super::types::{Approval, ApprovalRecord, Elevation, ElevationState, Grant};
use super::ElevationError;
use crate::audit::AuditLog;
use crate::engine::{ActiveGrant, Engine, Loaded, Reason, Verdict};
use crate::model::{principal_key, Agent, ExecutionMode};
use crate::snapshot::CompiledSnapshot;

/// At most this many pending elevations per principal.
pub const MAX_PENDING_PER_PRINCIPAL: usize = 100;
/// A listing page when the caller names no size.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest listing page; larger asks get this many.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// How long past its wait deadline a pending elevation nobody answered
/// may stay before the sweeper expires it (its waiters normally do).
const ABANDONED_AFTER: Duration = Duration::from_secs(5);
/// How often a replica of a fleet re-reads the shared store's changes when
/// no notification woke it (notifications are lost while a connection is
/// down).
const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// The bounds on what the broker keeps.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Pending elevations across every agent; more are refused.
    pub max_pending: usize,
    /// How long resolved elevations, ended grants and audit events stay in
    /// the store.
    pub retention: Duration,
}

impl Limits {
    pub const DEFAULT_MAX_PENDING: usize = 10_000;
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pending: Limits::DEFAULT_MAX_PENDING,
            retention: Limits::DEFAULT_RETENTION,
        }
    }
}

struct Entry {
    /// As stored; its `waiters` count every caller waiting on it (across
    /// the fleet, on a shared store).
    elevation: Elevation,
    /// The callers waiting on this replica.
    local: u32,
    changed: watch::Sender<Elevation>,
}

/// What is live: pending elevations (with their waiters) and active grants.
#[derive(Default)]
struct Inner {
    pending: HashMap<String, Entry>,
    by_key: HashMap<PendingKey, String>,
    /// Pending elevations per principal key.
    per_principal: HashMap<String, usize>,
    grants: HashMap<String, Grant>,
    /// New-elevation token buckets, per agent id.
    buckets: HashMap<String, Bucket>,
    /// On a shared store: the uses of each active grant this replica has
    /// recorded there.
    recorded: HashMap<String, u32>,
    /// On a shared store: limited grants with every use reserved.
    exhausted: HashSet<String>,
}

impl Inner {
    fn remove_pending(&mut self, id: &str) -> Option<Entry> {
        let entry = self.pending.remove(id)?;
        let key = request::pending_key(&entry.elevation);
        if let Some(n) = self.per_principal.get_mut(&key.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_principal.remove(&key.0);
            }
        }
        self.by_key.remove(&key);
        Some(entry)
    }

    /// Keeps a pending elevation (filed here or elsewhere) with no waiter
    /// here; false when it is kept already.
    fn mirror(&mut self, e: Elevation) -> bool {
        if self.pending.contains_key(&e.id) {
            return false;
        }
        let key = request::pending_key(&e);
        *self.per_principal.entry(key.0.clone()).or_default() += 1;
        self.by_key.insert(key, e.id.clone());
        let (changed, _) = watch::channel(e.clone());
        self.pending.insert(
            e.id.clone(),
            Entry {
                elevation: e,
                local: 0,
                changed,
            },
        );
        true
    }
}

/// How a pending elevation is to be resolved.
enum Resolution<'a> {
    Approve {
        resolved_by: String,
        on_behalf_of: String,
        /// The other approvers, when several were required.
        co_lenders: Vec<String>,
        /// The body digest the grant is bound to.
        request_digest: Option<String>,
        duration: Duration,
        max_uses: u32,
        comment: Option<&'a str>,
        /// An auto-approval by a rule with a `maxPerHour`, counted in the
        /// shared store's transaction.
        counted: Option<AutoCount>,
    },
    Close {
        state: ElevationState,
        by: &'a str,
        comment: Option<&'a str>,
    },
}

/// What a resolution came to: this one was stored, or another was first,
/// or (an auto-approval) its rule's `maxPerHour` was spent meanwhile.
enum Settled {
    Won(Elevation),
    Lost(Elevation),
    Skipped(Elevation),
}

impl Settled {
    fn either(self) -> Elevation {
        match self {
            Settled::Won(e) | Settled::Lost(e) | Settled::Skipped(e) => e,
        }
    }

    /// The answer to an approver or a denier: losing is a refusal.
    fn or_already_resolved(self) -> Result<Elevation, ElevationError> {
        match self {
            Settled::Won(e) | Settled::Skipped(e) => Ok(e),
            Settled::Lost(e) => Err(ElevationError::AlreadyResolved {
                id: e.id,
                state: e.state,
            }),
        }
    }
}

/// One page of a listing and the token of the next (empty on the last).
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

pub struct Broker {
    engine: Arc<Engine>,
    store: Box<dyn StateStore>,
    limits: Limits,
    inner: Mutex<Inner>,
    /// Held while a change of durable state is decided, written and
    /// applied; taken before `inner`, never while holding it.
    writer: Mutex<()>,
    /// Auto-approvals per rule, for `maxPerHour`; used under `writer`.
    auto_approvals: Mutex<auto_approve::Window>,
    /// What shadow auto-approve rules would have approved, for their
    /// `maxPerHour`; used under `writer`.
    shadow_approvals: Mutex<auto_approve::Window>,
    /// Shadow verdicts against human decisions, for the metrics.
    shadow_tally: Mutex<shadow::Tally>,
    events: broadcast::Sender<Elevation>,
    /// The changes this replica made, a subset of `events`.
    own_events: broadcast::Sender<Elevation>,
    /// The JSON-lines audit file, when `--audit-log` is given.
    audit_log: OnceLock<Arc<AuditLog>>,
    /// Whether the store is shared by a fleet (then memory follows it).
    fleet: bool,
    /// The last change of the shared store applied here; used under
    /// `writer`.
    seen: Mutex<i64>,
    /// The freeze switch as last set or seen in the store; the engine
    /// holds the flag decisions read. Changed under `writer`.
    freeze: Mutex<FreezeState>,
}

fn not_found(what: &'static str, id: &str) -> ElevationError {
    ElevationError::NotFound { what, id: echo(id) }
}

/// A listing's page size: the default for 0, at most [`MAX_PAGE_SIZE`].
fn page_size(asked: u32) -> usize {
    match asked {
        0 => DEFAULT_PAGE_SIZE as usize,
        n => n.min(MAX_PAGE_SIZE) as usize,
    }
}

fn cursor(token: &str) -> Result<Option<Cursor>, ElevationError> {
    if token.is_empty() {
        return Ok(None);
    }
    Cursor::parse(token)
        .map(Some)
        .ok_or_else(|| ElevationError::InvalidRequest {
            field: "page_token",
            message: "page_token is not a token this listing returned; start again without one"
                .to_owned(),
        })
}

impl Broker {
    /// Starts the broker on a store with the default [`Limits`].
    pub fn start(
        engine: Arc<Engine>,
        store: impl StateStore + 'static,
    ) -> Result<Arc<Broker>, StoreError> {
        Broker::start_with(engine, store, Limits::default())
    }

    /// Starts the broker on a store: active grants come back (minus those
    /// that expired meanwhile or the snapshot no longer supports), pending
    /// elevations become `CANCELLED` — their callers are gone. Only what is
    /// live is read; history stays in the store.
    pub fn start_with(
        engine: Arc<Engine>,
        store: impl StateStore + 'static,
        limits: Limits,
    ) -> Result<Arc<Broker>, StoreError> {
        let (events, _) = broadcast::channel(4096);
        let (own_events, _) = broadcast::channel(4096);
        let fleet = store.shared().is_some();
        let broker = Arc::new(Broker {
            engine,
            store: Box::new(store),
            limits,
            inner: Mutex::new(Inner::default()),
            writer: Mutex::new(()),
            auto_approvals: Mutex::new(auto_approve::Window::default()),
            shadow_approvals: Mutex::new(auto_approve::Window::default()),
            shadow_tally: Mutex::new(shadow::Tally::default()),
            events,
            own_events,
            audit_log: OnceLock::new(),
            fleet,
            seen: Mutex::new(0),
            freeze: Mutex::new(FreezeState::thawed()),
        });
        broker.restore()?;
        Ok(broker)
    }

    fn restore(&self) -> Result<(), StoreError> {
        // The switch first, for a fleet's shared store too.
        if let Some(state) = self.store.freeze()? {
            if state.frozen {
                tracing::warn!(by = %state.by, reason = %state.reason, "rampart is frozen: every agent is denied until an admin unfreezes it");
            }
            self.engine.set_frozen(state.frozen);
            *self.freeze_lock() = state;
        }
        if let Some(shared) = self.store.shared() {
            return self.restore_shared(shared);
        }
        let _writer = self.write_lock();
        let (elevations, grants) = self.store.load_live()?;
        let now = SystemTime::now();
        let loaded = self.engine.current_arc();
        for mut g in grants {
            // Every reserved use counts as taken: a crash may have lost the
            // record of some.
            g.uses = lifecycle::uses_after_restart(&g);
            g.reserved_uses = g.reserved_uses.max(g.uses);
            // What changed while rampart was down is checked as at a swap.
            let end = lifecycle::restored(&loaded, &g, now)
                .err()
                .or_else(|| (g.max_uses != 0 && g.uses >= g.max_uses).then_some(EndReason::UsedUp));
            if let Some(reason) = end {
                lifecycle::end(&mut g, &reason, now);
                self.store.put_grant(&g)?;
                self.audit_grant_end(&g, &reason);
                continue;
            }
            if let Some(reserved) = lifecycle::next_reservation(g.max_uses, g.uses, g.reserved_uses)
            {
                g.reserved_uses = reserved;
                self.store.put_grant(&g)?;
            }
            self.engine.grants.insert(active(&g));
            self.lock().grants.insert(g.id.clone(), g);
        }
        for mut e in elevations {
            let why = "rampart restarted while the elevation was pending";
            lifecycle::resolve(
                &mut e,
                ElevationState::Cancelled,
                None,
                "rampart",
                Some(why),
                now,
            );
            if let Resolved::Written = self.store.resolve(&e, None)? {
                self.audit(ElevationEventKind::Cancelled, &e, None);
            }
        }
        Ok(())
    }

    /// Honours a grant written by any replica, with `allowance` uses
    /// reserved here (a shared store).
    fn adopt(&self, g: Grant, allowance: u32) {
        let mut inner = self.lock();
        if inner.grants.contains_key(&g.id) {
            return;
        }
        self.engine.grants.insert(active_with(&g, 0, allowance));
        inner.recorded.insert(g.id.clone(), 0);
        inner.grants.insert(g.id.clone(), g);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer lock; while it is held elsewhere (a store call may wait
    /// on the network) an async worker hands its other tasks on before it
    /// blocks, so Authorize keeps being answered.
    fn write_lock(&self) -> MutexGuard<'_, ()> {
        match self.writer.try_lock() {
            Ok(guard) => return guard,
            Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        let wait = || self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if on_async_worker() {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        }
    }

    /// Also writes every elevation event and grant to `log`.
    pub fn set_audit_log(&self, log: Arc<AuditLog>) {
        let _ = self.audit_log.set(log);
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Every change, as it happens: made here or, on a store shared by a
    /// fleet, seen there.
    pub fn subscribe(&self) -> broadcast::Receiver<Elevation> {
        self.events.subscribe()
    }

    /// The changes this replica made (on a store only it uses, all of
    /// them): what notifications are sent for, so that a fleet whose
    /// replicas all notify tells people of each change once.
    pub fn subscribe_own(&self) -> broadcast::Receiver<Elevation> {
        self.own_events.subscribe()
    }

    /// Tells watchers of a change this replica made.
    fn publish(&self, e: &Elevation) {
        let _ = self.events.send(e.clone());
        let _ = self.own_events.send(e.clone());
    }

    /// Tells watchers of a change another replica made.
    fn publish_elsewhere(&self, e: &Elevation) {
        let _ = self.events.send(e.clone());
    }

    /// Writes an event to the audit log file and the store's trail.
    fn write_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        if let Some(log) = self.audit_log.get() {
            log.write(event);
        }
        self.store.append_audit(event)
    }

    /// Audits an elevation event; a failure to write is logged, the event
    /// itself already happened.
    fn audit(&self, kind: ElevationEventKind, e: &Elevation, by: Option<&str>) {
        let revision = self.engine.current().snapshot.info.revision.clone();
        let event = ElevationEvent::new(kind, e, by, &revision).into();
        if let Err(err) = self.write_audit(&event) {
            tracing::error!("cannot write the audit trail: {err}");
        }
        tracing::info!(target: "rampart::audit", event = kind.as_str(), elevation = %e.id, principal = %e.principal_id, action = %e.action, scope = %e.scope, state = e.state.as_str(), "elevation event");
    }

    fn audit_grant_end(&self, g: &Grant, reason: &EndReason) {
        let revision = self.engine.current().snapshot.info.revision.clone();
        if let Err(err) = self.write_audit(&GrantEnded::new(g, reason, &revision).into()) {
            tracing::error!("cannot write the audit trail: {err}");
        }
        tracing::info!(target: "rampart::audit", grant = %g.id, %reason, "grant ended");
    }

    /// Resolves `pending` (as it was in memory, under the writer lock):
    /// the store decides, conditionally, whether this resolution is the
    /// one; then memory, the engine, the waiters and the watchers follow
    /// what was stored. A failed write changes nothing.
    fn settle(
        &self,
        _writer: &MutexGuard<'_, ()>,
        pending: &Elevation,
        resolution: Resolution<'_>,
    ) -> Result<Settled, ElevationError> {
        let now = SystemTime::now();
        let mut e = pending.clone();
        let (state, by, grant, counted) = match resolution {
            Resolution::Approve {
                resolved_by,
                on_behalf_of,
                co_lenders,
                request_digest,
                duration,
                max_uses,
                comment,
                counted,
            } => {
                let mut grant =
                    lifecycle::new_grant(pending, &on_behalf_of, duration, max_uses, now);
                grant.co_lenders = co_lenders;
                grant.request_digest = request_digest;
                if self.fleet && !self.waits_here(&pending.id) {
                    // A fleet reserves uses where the agent asks: the
                    // replica its callers wait on, or one that wants them.
                    grant.reserved_uses = 0;
                }
                lifecycle::resolve(
                    &mut e,
                    ElevationState::Approved,
                    Some(grant.clone()),
                    &resolved_by,
                    comment,
                    now,
                );
                (ElevationState::Approved, resolved_by, Some(grant), counted)
            }
            Resolution::Close { state, by, comment } => {
                lifecycle::resolve(&mut e, state, None, by, comment, now);
                (state, by.to_owned(), None, None)
            }
        };
        let written = match (&counted, self.store.shared()) {
            (Some(count), Some(shared)) => shared.resolve_counted(&e, grant.as_ref(), count)?,
            _ => self.store.resolve(&e, grant.as_ref())?,
        };
        match written {
            Resolved::Written => {
                if !e.shadow.is_empty() {
                    self.shadow_tally
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&e);
                }
                self.apply(&e, grant, true);
                self.audit(ElevationEventKind::resolved(state), &e, Some(&by));
                Ok(Settled::Won(e))
            }
            Resolved::AlreadyResolved(stored) => {
                // Another resolution (another replica's) won: take it as
                // stored, its grant as it stands now.
                let grant = match &stored.grant {
                    Some(g) => self.store.grant(&g.id)?.filter(|g| g.state.is_active()),
                    None => None,
                };
                match self.store.shared() {
                    Some(shared) => {
                        // The callers here are answered now; following
                        // tells the watchers, once.
                        if let Some(g) = grant {
                            self.adopt_remote(shared, g);
                        }
                        self.apply(&stored, None, false);
                    }
                    None => self.apply(&stored, grant, true),
                }
                Ok(Settled::Lost(*stored))
            }
            Resolved::LimitReached => Ok(Settled::Skipped(pending.clone())),
        }
    }

    /// Whether callers wait on elevation `id` on this replica.
    fn waits_here(&self, id: &str) -> bool {
        self.lock().pending.get(id).is_some_and(|e| e.local > 0)
    }

    /// Applies a stored resolution to memory: the grant to the engine and
    /// the broker's map, the elevation out of the pending ones, the final
    /// state to its waiters and (when `publish`) its watchers.
    fn apply(&self, e: &Elevation, grant: Option<Grant>, publish: bool) {
        let entry = {
            let mut inner = self.lock();
            if let Some(g) = grant {
                if !inner.grants.contains_key(&g.id) {
                    self.engine.grants.insert(active(&g));
                    if self.fleet {
                        inner.recorded.insert(g.id.clone(), 0);
                    }
                    inner.grants.insert(g.id.clone(), g);
                }
            }
            inner.remove_pending(&e.id)
        };
        if let Some(entry) = entry {
            entry.changed.send_replace(e.clone());
        }
        if publish {
            self.publish(e);
        }
    }
}

/// How often state older than the retention period is purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Whether the snapshot still has the elevation's agent, with the same
/// identity.
fn still_the_agents(loaded: &Loaded, e: &Elevation) -> bool {
    agent_of(&loaded.snapshot, &e.principal_id).is_some_and(|a| a.id == e.agent_id)
}

/// Cancels the elevation when the last waiting caller goes away: armed
/// while the caller waits, disarmed once it has an answer.
struct WaitGuard {
    broker: Arc<Broker>,
    id: String,
    armed: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.armed {
            self.broker.leave(&self.id);
        }
    }
}

/// The engine's view of a grant.
fn active(g: &Grant) -> Arc<ActiveGrant> {
    active_with(g, g.uses, g.reserved_uses)
}

/// The engine's view of a grant with `uses` taken and `reserved` reserved
/// (here: a replica of a fleet counts its own).
fn active_with(g: &Grant, uses: u32, reserved: u32) -> Arc<ActiveGrant> {
    Arc::new(ActiveGrant {
        id: g.id.as_str().into(),
        principal_key: principal_key(&g.principal_id).into(),
        action: g.action.as_str().into(),
        scope_key: g.scope.to_ascii_lowercase().into(),
        scope: g.scope.as_str().into(),
        data_action: g.data_action,
        expires_at: g.expires_at,
        max_uses: g.max_uses,
        uses: std::sync::atomic::AtomicU32::new(uses),
        reserved: std::sync::atomic::AtomicU32::new(reserved),
        wanted: std::sync::atomic::AtomicBool::new(false),
        on_behalf_of: g.on_behalf_of.as_str().into(),
        co_lenders: g.co_lenders.iter().map(|c| c.as_str().into()).collect(),
        request_digest: g.request_digest.as_deref().map(Into::into),
    })
}

/// Whether this thread is an async worker of a multi-threaded runtime,
/// which may hand its tasks on (`block_in_place`) before blocking.
fn on_async_worker() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}
