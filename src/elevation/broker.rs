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

    /// Starts a replica of a fleet: the active grants are honoured (with
    /// no use reserved here yet), the pending elevations stay pending —
    /// their callers wait on other replicas — and following starts after
    /// the change they were read at.
    fn restore_shared(&self, shared: &dyn SharedState) -> Result<(), StoreError> {
        let _writer = self.write_lock();
        let (elevations, grants, seen) = shared.load_live_at()?;
        let now = SystemTime::now();
        let loaded = self.engine.current_arc();
        for mut g in grants {
            if let Err(reason) = lifecycle::restored(&loaded, &g, now) {
                lifecycle::end(&mut g, &reason, now);
                if shared.end_grant(&g)? {
                    self.audit_grant_end(&g, &reason);
                }
                continue;
            }
            self.adopt(g, 0);
        }
        let mut inner = self.lock();
        for e in elevations {
            inner.mirror(e);
        }
        drop(inner);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
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

    fn freeze_lock(&self) -> MutexGuard<'_, FreezeState> {
        self.freeze.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The freeze switch as it stands.
    pub fn freeze_state(&self) -> FreezeState {
        self.freeze_lock().clone()
    }

    /// Freezes (`frozen`) or unfreezes rampart as `by`, for `reason`
    /// (docs/agents-and-elevation.md#freeze): durable first, then the
    /// engine's switch, the audit trail, and, on a freeze, every pending
    /// elevation cancelled. Grants are left as they are: unused while
    /// frozen, counted again after, unless they expired meanwhile.
    pub fn set_freeze(
        &self,
        frozen: bool,
        by: &str,
        reason: &str,
    ) -> Result<FreezeState, ElevationError> {
        freeze::check_reason(reason)?;
        let writer = self.write_lock();
        let state = FreezeState::new(frozen, by, reason, SystemTime::now());
        self.store.put_freeze(&state)?;
        self.apply_freeze(&writer, state.clone(), true);
        Ok(state)
    }

    /// Makes `state` the one in force: the engine's switch, the audit
    /// trail (`record`: this replica set it), and the cancellations.
    fn apply_freeze(&self, writer: &MutexGuard<'_, ()>, state: FreezeState, record: bool) {
        self.engine.set_frozen(state.frozen);
        if record {
            let revision = self.engine.current().snapshot.info.revision.clone();
            let event = FreezeEvent::new(state.frozen, &state.by, &state.reason, &revision);
            if let Err(err) = self.write_audit(&event.into()) {
                tracing::error!("cannot write the audit trail: {err}");
            }
        }
        if state.frozen {
            tracing::warn!(target: "rampart::audit", by = %state.by, reason = %state.reason, "rampart frozen: every agent is denied");
            self.cancel_pending_locked(writer, &state.by, &state.cancel_comment());
        } else {
            tracing::warn!(target: "rampart::audit", by = %state.by, reason = %state.reason, "rampart unfrozen");
        }
        *self.freeze_lock() = state;
    }

    /// Follows a switch set through another replica sharing the store.
    fn sync_freeze(&self) {
        // Read under the writer, so a switch set here meanwhile is not
        // overwritten by an older read.
        let writer = self.write_lock();
        let stored = match self.store.freeze() {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("cannot read the freeze switch: {e}");
                return;
            }
        };
        if *self.freeze_lock() != stored {
            self.apply_freeze(&writer, stored, false);
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

    /// Every change, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<Elevation> {
        self.events.subscribe()
    }

    fn publish(&self, e: &Elevation) {
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

    /// RequestElevation (docs/agents-and-elevation.md#requestelevation): answers at once when nothing needs
    /// approving, otherwise waits for the resolution.
    pub async fn request(
        self: &Arc<Self>,
        r: ElevationRequest<'_>,
    ) -> Result<Elevation, ElevationError> {
        request::check_justification(r.justification)?;
        let loaded = self.engine.current_arc();
        // Grants count (an active one makes the elevation unnecessary), but
        // asking takes no use of them.
        let decision = loaded.decide_with(&r.question(), Some(self.engine.live()))?;
        let now = SystemTime::now();
        let agent = agent_of(&loaded.snapshot, r.principal_id);
        let agent = match decision.verdict {
            Verdict::Deny if decision.reason == Reason::Frozen => {
                return Err(ElevationError::Frozen);
            }
            Verdict::Deny => {
                return Err(ElevationError::CannotElevate {
                    reason: decision.reason,
                })
            }
            Verdict::Allow => {
                return Ok(request::not_needed(&r, agent, decision.read_only, now));
            }
            Verdict::ApprovalRequired => agent.ok_or_else(|| ElevationError::NotAnAgent {
                principal: echo(r.principal_id),
            })?,
        };
        let (mut candidate, wait) = request::pending(&r, agent, &decision, now)?;
        candidate.shadow = {
            let window = self
                .shadow_approvals
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            shadow::verdicts(&loaded, agent, &candidate, &window, now)
        };
        let would_approve = shadow::counted_rules(agent, &candidate.shadow);
        let (id, changes, deadline) = self.join_or_open(candidate, agent, now)?;
        if deadline.is_none() && !would_approve.is_empty() {
            // Filed (not joined): count what the shadow rules would have
            // approved, so their maxPerHour is measured too.
            let mut window = self
                .shadow_approvals
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for rule in would_approve {
                window.record(&agent.id, rule, now);
            }
        }
        // Leaving the wait for any reason but a resolution (the caller
        // cancelled, its deadline passed) drops this guard.
        let guard = WaitGuard {
            broker: self.clone(),
            id: id.clone(),
            armed: true,
        };
        if deadline.is_none() && agent.execution_mode == ExecutionMode::Auto {
            self.try_auto_approve(&loaded, agent, &id)?;
        }
        drop(loaded);

        // This caller waits for its own timeout or the elevation's, the
        // sooner (a joiner may ask to wait less than the first caller).
        let deadline = deadline.unwrap_or(now + wait).min(now + wait);
        self.wait(changes, guard, deadline).await
    }

    /// Joins the pending elevation identical to `candidate`, or files
    /// `candidate` durably (within the limits): its id, its changes, and,
    /// when joined, the elevation's wait deadline.
    #[allow(clippy::type_complexity)]
    fn join_or_open(
        &self,
        candidate: Elevation,
        agent: &Agent,
        now: SystemTime,
    ) -> Result<(String, watch::Receiver<Elevation>, Option<SystemTime>), ElevationError> {
        let _writer = self.write_lock();
        if self.engine.is_frozen() {
            return Err(ElevationError::Frozen);
        }
        if let Some(shared) = self.store.shared() {
            return self.join_or_open_shared(shared, candidate, agent);
        }
        let key = request::pending_key(&candidate);
        let per_minute = agent.elevation.max_requests_per_minute;
        {
            let mut inner = self.lock();
            if let Some(id) = inner.by_key.get(&key).cloned() {
                let entry = inner
                    .pending
                    .get_mut(&id)
                    .ok_or(ElevationError::Lost("pending index out of step"))?;
                entry.elevation.waiters += 1;
                entry.local += 1;
                let changes = entry.changed.subscribe();
                return Ok((id, changes, Some(entry.elevation.wait_deadline)));
            }
            if inner.pending.len() >= self.limits.max_pending {
                return Err(ElevationError::PendingLimit {
                    pending: inner.pending.len(),
                    limit: self.limits.max_pending,
                });
            }
            let pending = inner.per_principal.get(&key.0).copied().unwrap_or(0);
            if pending >= MAX_PENDING_PER_PRINCIPAL {
                return Err(ElevationError::TooManyPending {
                    principal: echo(&candidate.principal_id),
                    pending,
                    limit: MAX_PENDING_PER_PRINCIPAL,
                });
            }
            let bucket = inner
                .buckets
                .get(&agent.id)
                .copied()
                .unwrap_or_else(|| Bucket::full(per_minute, now));
            if let Err(retry) = bucket.check(per_minute, now) {
                return Err(ElevationError::RateLimited {
                    agent: agent.id.clone(),
                    per_minute,
                    retry_after_secs: retry.as_secs().max(1),
                });
            }
        }
        self.store.create_elevation(&candidate)?;
        let (changed, changes) = watch::channel(candidate.clone());
        {
            let mut inner = self.lock();
            inner
                .buckets
                .entry(agent.id.clone())
                .or_insert_with(|| Bucket::full(per_minute, now))
                .take(per_minute, now);
            *inner.per_principal.entry(key.0.clone()).or_default() += 1;
            inner.by_key.insert(key, candidate.id.clone());
            inner.pending.insert(
                candidate.id.clone(),
                Entry {
                    elevation: candidate.clone(),
                    local: 1,
                    changed,
                },
            );
        }
        self.audit(ElevationEventKind::Requested, &candidate, None);
        self.publish(&candidate);
        Ok((candidate.id, changes, None))
    }

    /// [`Broker::join_or_open`] on a shared store: the store joins or
    /// files, within the limits counted across the fleet, in one
    /// transaction.
    #[allow(clippy::type_complexity)]
    fn join_or_open_shared(
        &self,
        shared: &dyn SharedState,
        mut candidate: Elevation,
        agent: &Agent,
    ) -> Result<(String, watch::Receiver<Elevation>, Option<SystemTime>), ElevationError> {
        let per_minute = agent.elevation.max_requests_per_minute;
        let limits = OpenLimits {
            max_pending: self.limits.max_pending,
            max_per_principal: MAX_PENDING_PER_PRINCIPAL,
            per_minute,
        };
        match shared.open_elevation(&candidate, &limits)? {
            Opened::Created => {
                candidate.waiters = 1;
                let (changed, changes) = watch::channel(candidate.clone());
                {
                    let mut inner = self.lock();
                    let key = request::pending_key(&candidate);
                    *inner.per_principal.entry(key.0.clone()).or_default() += 1;
                    inner.by_key.insert(key, candidate.id.clone());
                    inner.pending.insert(
                        candidate.id.clone(),
                        Entry {
                            elevation: candidate.clone(),
                            local: 1,
                            changed,
                        },
                    );
                }
                self.audit(ElevationEventKind::Requested, &candidate, None);
                self.publish(&candidate);
                Ok((candidate.id, changes, None))
            }
            Opened::Joined(stored) => {
                let mut inner = self.lock();
                let new_here = inner.mirror((*stored).clone());
                let entry = inner
                    .pending
                    .get_mut(&stored.id)
                    .ok_or(ElevationError::Lost("pending index out of step"))?;
                entry.local += 1;
                entry.elevation.waiters = stored.waiters;
                let changes = entry.changed.subscribe();
                drop(inner);
                if new_here {
                    self.publish(&stored);
                }
                Ok((stored.id.clone(), changes, Some(stored.wait_deadline)))
            }
            Opened::PendingLimit(pending) => Err(ElevationError::PendingLimit {
                pending,
                limit: self.limits.max_pending,
            }),
            Opened::TooManyPending(pending) => Err(ElevationError::TooManyPending {
                principal: echo(&candidate.principal_id),
                pending,
                limit: MAX_PENDING_PER_PRINCIPAL,
            }),
            Opened::RateLimited(retry) => Err(ElevationError::RateLimited {
                agent: agent.id.clone(),
                per_minute,
                retry_after_secs: retry.as_secs().max(1),
            }),
        }
    }

    /// Waits until the elevation is resolved or `deadline` passes.
    async fn wait(
        &self,
        mut changes: watch::Receiver<Elevation>,
        mut guard: WaitGuard,
        deadline: SystemTime,
    ) -> Result<Elevation, ElevationError> {
        let sleep_for = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let timer = tokio::time::sleep(sleep_for);
        tokio::pin!(timer);
        loop {
            {
                let current = changes.borrow_and_update();
                if !current.state.is_pending() {
                    let resolved = current.clone();
                    drop(current);
                    guard.armed = false;
                    return Ok(resolved);
                }
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        guard.armed = false;
                        return self
                            .find(&guard.id)?
                            .ok_or(ElevationError::Lost("the elevation disappeared"));
                    }
                }
                _ = &mut timer => {
                    guard.armed = false;
                    return self.wait_expired(&guard.id);
                }
            }
        }
    }

    /// A waiter leaves without a resolution: the elevation's waiters, less
    /// this one, and the elevation as it stands (`None` once resolved).
    fn leave_pending(&self, id: &str) -> Option<Elevation> {
        let mut inner = self.lock();
        let entry = inner.pending.get_mut(id)?;
        entry.local = entry.local.saturating_sub(1);
        if !self.fleet {
            entry.elevation.waiters = entry.elevation.waiters.saturating_sub(1);
        }
        Some(entry.elevation.clone())
    }

    /// The elevation as it stands once a waiter left, its waiters counted
    /// across the fleet on a shared store (which is told); `None` once it
    /// is resolved.
    fn left(&self, id: &str) -> Result<Option<Elevation>, StoreError> {
        let Some(current) = self.leave_pending(id) else {
            return Ok(None);
        };
        let Some(shared) = self.store.shared() else {
            return Ok(Some(current));
        };
        let Some(stored) = shared.leave(id, 1)? else {
            // Resolved elsewhere; following brings the resolution.
            return Ok(None);
        };
        if let Some(entry) = self.lock().pending.get_mut(id) {
            entry.elevation.waiters = stored.waiters;
        }
        Ok(Some(stored))
    }

    /// Files an elevation as [`Broker::request`] does, but returns as soon
    /// as it is filed (or joined), still `PENDING`, for callers that cannot
    /// hold a request open (the ext_authz front door). A background task
    /// waits in the caller's place, so the elevation resolves or expires
    /// like any other; an answer needing no approval returns at once.
    pub async fn file(
        self: &Arc<Self>,
        r: ElevationRequest<'_>,
    ) -> Result<Elevation, ElevationError> {
        let key = request::key_of(
            r.principal_id,
            r.action,
            r.scope,
            r.data_action,
            &r.attributes,
        );
        let (principal, action, scope) = (
            r.principal_id.to_owned(),
            r.action.to_owned(),
            r.scope.to_owned(),
        );
        let justification = r.justification.to_owned();
        let ticket = r.ticket.to_owned();
        let exact = r.exact.clone();
        let (data_action, requested_duration, wait_timeout, attributes) = (
            r.data_action,
            r.requested_duration,
            r.wait_timeout,
            r.attributes,
        );
        let broker = self.clone();
        let mut waiting = Box::pin(async move {
            broker
                .request(ElevationRequest {
                    principal_id: &principal,
                    action: &action,
                    scope: &scope,
                    data_action,
                    justification: &justification,
                    requested_duration,
                    wait_timeout,
                    attributes,
                    ticket: &ticket,
                    exact,
                })
                .await
        });
        // `request` files before its first wait, so one poll files it.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(waiting.as_mut(), cx))
        })
        .await;
        if let std::task::Poll::Ready(outcome) = first {
            return outcome;
        }
        tokio::spawn(waiting);
        let inner = self.lock();
        inner
            .by_key
            .get(&key)
            .and_then(|id| inner.pending.get(id))
            .map(|entry| entry.elevation.clone())
            .ok_or(ElevationError::Lost(
                "the elevation was resolved while being filed",
            ))
    }

    /// A waiter's timeout passed: the last one expires the elevation;
    /// earlier ones get it marked expired for them while it stays pending
    /// for the callers still waiting.
    fn wait_expired(&self, id: &str) -> Result<Elevation, ElevationError> {
        let writer = self.write_lock();
        let Some(current) = self.left(id)? else {
            // Resolved meanwhile: the caller gets what was stored.
            drop(writer);
            return self.find(id)?.ok_or_else(|| not_found("elevation", id));
        };
        if current.waiters > 0 {
            let mut yours = current;
            yours.state = ElevationState::Expired;
            yours.comment = Some(
                "your wait timed out; the elevation stays pending for the other callers".into(),
            );
            return Ok(yours);
        }
        let settled = self.settle(
            &writer,
            &current,
            Resolution::Close {
                state: ElevationState::Expired,
                by: "rampart",
                comment: Some("nobody decided before the wait timeout"),
            },
        )?;
        Ok(settled.either())
    }

    /// A waiter left without a resolution (it went away): the last one
    /// cancels.
    fn leave(&self, id: &str) {
        let writer = self.write_lock();
        let current = match self.left(id) {
            Ok(Some(current)) => current,
            Ok(None) => return,
            Err(e) => {
                // The sweeper expires it once its wait deadline passed.
                tracing::error!("cannot leave elevation {id}: {e}");
                return;
            }
        };
        if current.waiters > 0 {
            return;
        }
        let close = Resolution::Close {
            state: ElevationState::Cancelled,
            by: "rampart",
            comment: Some("the caller went away"),
        };
        if let Err(e) = self.settle(&writer, &current, close) {
            tracing::error!("cannot cancel elevation {id}: {e}");
        }
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

    /// Honours a grant another replica wrote: when callers wait here on its
    /// elevation, the agent is here, and a block of its uses is reserved
    /// before they are answered; elsewhere uses are reserved once wanted.
    fn adopt_remote(&self, shared: &dyn SharedState, g: Grant) {
        if self.lock().grants.contains_key(&g.id) {
            return;
        }
        let mut allowance = 0;
        if g.max_uses != 0 && self.waits_here(&g.elevation_id) {
            match shared.reserve_uses(&g.id, lifecycle::reservation_block(g.max_uses)) {
                Ok(r) => {
                    allowance = r.reserved;
                    if r.exhausted {
                        self.lock().exhausted.insert(g.id.clone());
                    }
                }
                Err(e) => tracing::warn!("cannot reserve uses of grant {}: {e}", g.id),
            }
        }
        self.adopt(g, allowance);
    }

    /// Brings memory up to the shared store: applies every change after
    /// the last one seen (a no-op on a store only this process uses).
    /// Returns how many records changed.
    pub fn follow(&self) -> Result<usize, StoreError> {
        let Some(shared) = self.store.shared() else {
            return Ok(0);
        };
        let _writer = self.write_lock();
        let mut applied = 0;
        loop {
            let since = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let changes = shared.changes(since)?;
            if changes.through == since {
                return Ok(applied);
            }
            applied += changes.items.len();
            for change in changes.items {
                self.apply_change(shared, change);
            }
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = changes.through;
        }
    }

    /// One record as another replica (or this one) left it.
    fn apply_change(&self, shared: &dyn SharedState, change: Change) {
        match change {
            Change::Grant(g) if g.state.is_active() => {
                let known = match self.lock().grants.get_mut(&g.id) {
                    Some(known) => {
                        *known = (*g).clone();
                        true
                    }
                    None => false,
                };
                if !known {
                    self.adopt_remote(shared, *g);
                }
            }
            Change::Grant(g) => {
                let mut inner = self.lock();
                if inner.grants.remove(&g.id).is_some() {
                    self.engine.grants.remove(&g.id);
                    inner.recorded.remove(&g.id);
                    inner.exhausted.remove(&g.id);
                }
            }
            Change::Elevation(e, _) if e.state.is_pending() => {
                let mut inner = self.lock();
                if let Some(entry) = inner.pending.get_mut(&e.id) {
                    entry.elevation.waiters = e.waiters;
                    if entry.elevation.approvals != e.approvals {
                        // Another replica recorded an approval: its
                        // watchers and waiters here see it too.
                        entry.elevation.approvals = e.approvals.clone();
                        let current = entry.elevation.clone();
                        entry.changed.send_replace(current.clone());
                        drop(inner);
                        self.publish(&current);
                    }
                    return;
                }
                inner.mirror((*e).clone());
                drop(inner);
                self.publish(&e);
            }
            Change::Elevation(e, mine) => {
                let here = self.lock().pending.contains_key(&e.id);
                if here {
                    self.apply(&e, None, true);
                } else if !mine {
                    self.publish(&e);
                }
            }
        }
    }

    /// Follows the shared store in the background: whenever it says
    /// something changed, and every [`FOLLOW_POLL`] in case a notification
    /// was lost. `None` on a store only this process uses. Ends when the
    /// broker is dropped.
    pub fn spawn_follower(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let changed = self.store.shared()?.changed();
        let weak = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut failing = false;
            loop {
                let _ = tokio::time::timeout(FOLLOW_POLL, changed.notified()).await;
                let Some(broker) = weak.upgrade() else { return };
                match tokio::task::spawn_blocking(move || broker.follow()).await {
                    Ok(Ok(_)) if failing => {
                        failing = false;
                        tracing::info!("following the state database again");
                    }
                    Ok(Err(e)) if !failing => {
                        failing = true;
                        tracing::warn!("cannot follow the state database: {e}; grants known here are honoured until they end");
                    }
                    _ => {}
                }
            }
        }))
    }

    /// Shadow auto-approve verdicts of the elevations this broker saw a
    /// human decide, counted by agent, rule, verdict and decision.
    pub fn shadow_tally(&self) -> shadow::Tally {
        self.shadow_tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// May `caller` interact with the agent of this id (rule (a))? An
    /// agent no longer in the snapshot is nobody's to interact with.
    pub fn may_interact_with(&self, caller: &str, agent_id: &str) -> bool {
        approver::may_interact_with(&self.engine.current(), caller, agent_id)
    }

    /// Whether `caller` may approve `elevation` now: the approver rules (c),
    /// (a), (b) against the current snapshot, refusing with the message
    /// `approve` would give. Read-only, so a page can tell a viewer before
    /// they click; `approve` remains the decision.
    pub fn check_approver(
        &self,
        caller: &str,
        elevation: &Elevation,
    ) -> Result<(), ElevationError> {
        let loaded = self.engine.current();
        let agent = self.agent_of_elevation(&loaded, elevation)?;
        let requirement = approval::requirement_of(agent, elevation);
        approval::may_count(&loaded, agent, elevation, &requirement, caller)?;
        if approval::has_approved(elevation, caller) {
            return Err(ElevationError::AlreadyApproved {
                id: elevation.id.clone(),
                by: echo(caller),
                counted: approval::counted(&loaded, agent, elevation, &requirement).len() as u32,
                required: requirement.required,
            });
        }
        Ok(())
    }

    /// The ids of the agents `caller` may interact with.
    pub fn visible_agents(&self, caller: &str) -> Vec<String> {
        let loaded = self.engine.current();
        loaded
            .snapshot
            .tenant
            .agents
            .iter()
            .filter(|a| approver::may_interact_with(&loaded, caller, &a.id))
            .map(|a| a.id.clone())
            .collect()
    }

    /// Approves as `caller`: the approver rules (a), (b), (c)
    /// (docs/agents-and-elevation.md#approver-rules) and the agent's
    /// approval policy (#approval-policies), then either the approval is
    /// recorded and the elevation stays pending for more approvers, or the
    /// last one needed makes a durable grant naming every approver.
    pub async fn approve(
        &self,
        caller: &str,
        id: &str,
        approval: Approval<'_>,
    ) -> Result<Elevation, ElevationError> {
        let writer = self.write_lock();
        if self.engine.is_frozen() {
            return Err(ElevationError::Frozen);
        }
        let elevation = self.pending(id)?;
        let now = SystemTime::now();
        let (record, several) = {
            let loaded = self.engine.current();
            let agent = self.agent_of_elevation(&loaded, &elevation)?;
            let requirement = approval::requirement_of(agent, &elevation);
            approval::may_count(&loaded, agent, &elevation, &requirement, caller)?;
            if approval::has_approved(&elevation, caller) {
                let counted = approval::counted(&loaded, agent, &elevation, &requirement);
                return Err(ElevationError::AlreadyApproved {
                    id: elevation.id.clone(),
                    by: echo(caller),
                    counted: counted.len() as u32,
                    required: requirement.required,
                });
            }
            approval::approved_duration(&elevation, &requirement, approval.duration)?;
            exact::binds(
                approval.bind_to_request,
                elevation.request.is_some(),
                elevation.read_only,
            )?;
            let record = ApprovalRecord {
                by: caller.to_owned(),
                at: now,
                duration: approval.duration,
                max_uses: approval.max_uses,
                comment: approval.comment.map(bounded),
                bind: approval.bind_to_request,
            };
            (record, requirement.required > 1)
        };
        let mut with = elevation.clone();
        if several {
            // Recorded durably (once per approver, across replicas) before
            // counting: the stored approvals are the ones that count.
            let stored = self
                .store
                .add_approval(id, &record)?
                .ok_or_else(|| not_found("elevation", id))?;
            if !stored.state.is_pending() {
                return Err(ElevationError::AlreadyResolved {
                    id: stored.id,
                    state: stored.state,
                });
            }
            with.approvals = stored.approvals;
        } else {
            with.approvals.push(record);
        }
        let step = {
            let loaded = self.engine.current();
            let agent = self.agent_of_elevation(&loaded, &with)?;
            approval::next_step(
                &loaded,
                agent,
                &with,
                &approval::requirement_of(agent, &with),
            )
        };
        match step {
            Step::Wait { counted, required } => {
                tracing::info!(elevation = %id, approver = %caller, counted, required, "approval recorded; more approvers needed");
                self.update_pending(&with);
                self.audit(ElevationEventKind::ApprovalRecorded, &with, Some(caller));
                Ok(with)
            }
            Step::Grant(terms) => {
                let approve = Resolution::Approve {
                    resolved_by: caller.to_owned(),
                    on_behalf_of: terms.on_behalf_of,
                    co_lenders: terms.co_lenders,
                    request_digest: terms.request_digest,
                    duration: terms.duration,
                    max_uses: terms.max_uses,
                    comment: approval.comment,
                    counted: None,
                };
                self.settle(&writer, &with, approve)?.or_already_resolved()
            }
        }
    }

    /// The agent of `elevation` in the snapshot serving.
    fn agent_of_elevation<'l>(
        &self,
        loaded: &'l Loaded,
        elevation: &Elevation,
    ) -> Result<&'l Agent, ElevationError> {
        agent_by_id(&loaded.snapshot, &elevation.agent_id).ok_or_else(|| {
            ElevationError::AgentGone {
                agent: elevation.agent_id.clone(),
            }
        })
    }

    /// A pending elevation's approvals changed: memory, its waiters (who
    /// keep waiting) and the watchers follow.
    fn update_pending(&self, e: &Elevation) {
        let current = {
            let mut inner = self.lock();
            let Some(entry) = inner.pending.get_mut(&e.id) else {
                return;
            };
            entry.elevation.approvals = e.approvals.clone();
            entry.changed.send_replace(entry.elevation.clone());
            entry.elevation.clone()
        };
        self.publish(&current);
    }

    /// Denies as `caller`: rule (a) only.
    pub async fn deny(
        &self,
        caller: &str,
        id: &str,
        comment: Option<&str>,
    ) -> Result<Elevation, ElevationError> {
        let writer = self.write_lock();
        let elevation = self.pending(id)?;
        approver::may_deny(&self.engine.current(), caller, &elevation.agent_id)?;
        let deny = Resolution::Close {
            state: ElevationState::Denied,
            by: caller,
            comment,
        };
        self.settle(&writer, &elevation, deny)?
            .or_already_resolved()
    }

    /// The pending elevation `id`; a resolved one is refused with its state.
    fn pending(&self, id: &str) -> Result<Elevation, ElevationError> {
        if let Some(entry) = self.lock().pending.get(id) {
            return Ok(entry.elevation.clone());
        }
        match self.store.elevation(id)? {
            // Filed on another replica a moment ago: not followed yet.
            Some(e) if self.fleet && e.state.is_pending() => Ok(e),
            Some(e) => Err(ElevationError::AlreadyResolved {
                id: e.id,
                state: e.state,
            }),
            None => Err(not_found("elevation", id)),
        }
    }

    /// The auto-approve policy (docs/agents-and-elevation.md#auto-approve),
    /// for Auto-mode agents.
    fn try_auto_approve(
        &self,
        loaded: &Loaded,
        agent: &Agent,
        id: &str,
    ) -> Result<(), ElevationError> {
        let writer = self.write_lock();
        if self.engine.is_frozen() {
            return Ok(());
        }
        let Some(elevation) = self.lock().pending.get(id).map(|e| e.elevation.clone()) else {
            return Ok(());
        };
        // On a shared store a rule's `maxPerHour` counts every replica's
        // approvals, checked again in the approval's own transaction; one
        // spent meanwhile by another replica makes the next rule's turn.
        for _ in 0..=agent.elevation.auto_approve.len() {
            let now = SystemTime::now();
            let outcome = self.auto_outcome(loaded, agent, &elevation, now)?;
            self.log_skipped(agent, &outcome);
            let Some(choice) = outcome.choice else {
                return Ok(());
            };
            let counted = match (self.fleet, choice.counted) {
                (true, true) => Some(AutoCount {
                    agent_id: agent.id.clone(),
                    rule: i32::try_from(choice.rule).unwrap_or(i32::MAX),
                    max_per_hour: agent
                        .elevation
                        .auto_approve
                        .get(choice.rule)
                        .and_then(|r| r.max_per_hour)
                        .unwrap_or(0),
                    window: auto_approve::WINDOW,
                    now,
                }),
                _ => None,
            };
            let approve = Resolution::Approve {
                resolved_by: choice.resolved_by(agent),
                on_behalf_of: choice.on_behalf_of.clone(),
                co_lenders: Vec::new(),
                request_digest: None,
                duration: choice.duration,
                max_uses: 0,
                comment: Some("approved by the auto-approve policy"),
                counted,
            };
            if !matches!(
                self.settle(&writer, &elevation, approve)?,
                Settled::Skipped(_)
            ) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// What the auto-approve policy decides now, with the approvals that
    /// count against `maxPerHour` (this process's, or the fleet's from the
    /// shared store).
    fn auto_outcome(
        &self,
        loaded: &Loaded,
        agent: &Agent,
        elevation: &Elevation,
        now: SystemTime,
    ) -> Result<auto_approve::Outcome, ElevationError> {
        if let Some(shared) = self.store.shared() {
            let mut window = auto_approve::Window::default();
            let since = now
                .checked_sub(auto_approve::WINDOW)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            for (rule, at) in shared.auto_approvals(&agent.id, since)? {
                window.record(&agent.id, rule, at);
            }
            return Ok(auto_approve::choose(loaded, agent, elevation, &window, now));
        }
        let mut window = self
            .auto_approvals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let outcome = auto_approve::choose(loaded, agent, elevation, &window, now);
        if let Some(choice) = outcome.choice.as_ref().filter(|c| c.counted) {
            window.record(&agent.id, choice.rule, now);
        }
        Ok(outcome)
    }

    fn log_skipped(&self, agent: &Agent, outcome: &auto_approve::Outcome) {
        for skipped in &outcome.skipped {
            match skipped {
                Skipped::LenderLacks { rule, on_behalf_of } => {
                    tracing::info!(agent = %agent.id, rule = *rule, %on_behalf_of, "auto-approve rule skipped: its onBehalfOf does not hold the operation");
                }
                Skipped::HourlyLimit { rule, .. } => {
                    tracing::info!(agent = %agent.id, rule = *rule, "auto-approve rule skipped: maxPerHour reached");
                }
                Skipped::SeveralApprovers { required } => {
                    tracing::info!(agent = %agent.id, required = *required, "auto-approve not tried: the approval policy wants several approvers");
                }
            }
        }
    }

    /// The elevation `id`, pending (with its waiters) or from the store,
    /// its grant as it stands now.
    pub fn find(&self, id: &str) -> Result<Option<Elevation>, ElevationError> {
        if let Some(entry) = self.lock().pending.get(id) {
            return Ok(Some(entry.elevation.clone()));
        }
        let Some(mut e) = self.store.elevation(id)? else {
            return Ok(None);
        };
        if let Some(g) = &e.grant {
            let current = match self.live_grant(&g.id) {
                Some(g) => Some(g),
                None => self.store.grant(&g.id)?,
            };
            if current.is_some() {
                e.grant = current;
            }
        }
        Ok(Some(e))
    }

    /// [`Broker::find`], a store failure reading as absent.
    pub fn get(&self, id: &str) -> Option<Elevation> {
        self.find(id).unwrap_or_else(|e| {
            tracing::error!("cannot read elevation {id}: {e}");
            None
        })
    }

    /// An active grant from memory, with its uses as the engine counts them.
    fn live_grant(&self, id: &str) -> Option<Grant> {
        let mut g = self.lock().grants.get(id).cloned()?;
        if self.fleet {
            // Uses as recorded by every replica.
            return Some(g);
        }
        if let Some(active) = self.engine.grants.get(id) {
            g.uses = active.uses.load(Ordering::Acquire);
        }
        Some(g)
    }

    /// One page of elevations, oldest first (`page_size` 0 = 100, at most
    /// 1,000); pending ones carry their waiters.
    pub fn list_elevations(
        &self,
        query: &ElevationQuery,
        page_size_asked: u32,
        page_token: &str,
    ) -> Result<Listing<Elevation>, ElevationError> {
        let after = cursor(page_token)?;
        let Page { mut items, next } =
            self.store
                .elevations(query, after.as_ref(), page_size(page_size_asked))?;
        if !self.fleet {
            // (A shared store counts the fleet's waiters itself.)
            let inner = self.lock();
            for e in items.iter_mut().filter(|e| e.state.is_pending()) {
                if let Some(entry) = inner.pending.get(&e.id) {
                    e.waiters = entry.elevation.waiters;
                }
            }
        }
        Ok(Listing {
            items,
            next_page_token: next.map(|c| c.token()).unwrap_or_default(),
        })
    }

    /// One page of grants, oldest first; active ones with their uses as
    /// the engine counts them.
    pub fn list_grants(
        &self,
        query: &GrantQuery,
        page_size_asked: u32,
        page_token: &str,
    ) -> Result<Listing<Grant>, ElevationError> {
        let after = cursor(page_token)?;
        let Page { mut items, next } =
            self.store
                .grants(query, after.as_ref(), page_size(page_size_asked))?;
        if self.fleet {
            // Uses as recorded by every replica.
            return Ok(Listing {
                items,
                next_page_token: next.map(|c| c.token()).unwrap_or_default(),
            });
        }
        let uses: HashMap<Arc<str>, u32> = self
            .engine
            .grants
            .all()
            .iter()
            .map(|a| (a.id.clone(), a.uses.load(Ordering::Acquire)))
            .collect();
        for g in items.iter_mut().filter(|g| g.state.is_active()) {
            if let Some(&n) = uses.get(g.id.as_str()) {
                g.uses = n;
            }
        }
        Ok(Listing {
            items,
            next_page_token: next.map(|c| c.token()).unwrap_or_default(),
        })
    }

    /// The pending elevations, oldest first (bounded by
    /// [`Limits::max_pending`]).
    pub fn pending_elevations(&self) -> Vec<Elevation> {
        let mut out: Vec<Elevation> = self
            .lock()
            .pending
            .values()
            .map(|e| e.elevation.clone())
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        out
    }

    /// What the broker holds in memory: (pending elevations, active
    /// grants). History is in the store only.
    pub fn live(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.pending.len(), inner.grants.len())
    }

    /// The first page of every elevation at the largest page size, oldest
    /// first: a convenience; page with [`Broker::list_elevations`].
    pub fn list(&self) -> Vec<Elevation> {
        self.list_elevations(&ElevationQuery::default(), MAX_PAGE_SIZE, "")
            .map(|l| l.items)
            .unwrap_or_else(|e| {
                tracing::error!("cannot list elevations: {e}");
                Vec::new()
            })
    }

    /// The first page of every grant at the largest page size: a
    /// convenience; page with [`Broker::list_grants`].
    pub fn grants(&self) -> Vec<Grant> {
        self.list_grants(&GrantQuery::default(), MAX_PAGE_SIZE, "")
            .map(|l| l.items)
            .unwrap_or_else(|e| {
                tracing::error!("cannot list grants: {e}");
                Vec::new()
            })
    }

    /// Revokes a grant as `caller` (who must pass rule (a) for its agent,
    /// unless `admin`). Durable before it returns; a failed write leaves
    /// the grant active.
    pub fn revoke(
        &self,
        caller: &str,
        admin: bool,
        grant_id: &str,
        comment: Option<&str>,
    ) -> Result<Grant, ElevationError> {
        let writer = self.write_lock();
        let grant = match self.lock().grants.get(grant_id).cloned() {
            Some(g) => g,
            None => match self.store.grant(grant_id)? {
                // Approved on another replica a moment ago: not followed
                // yet, and revocable all the same.
                Some(g) if self.fleet && g.state.is_active() => {
                    self.adopt(g.clone(), 0);
                    g
                }
                Some(g) => return Err(ElevationError::AlreadyEnded { id: g.id }),
                None => return Err(not_found("grant", grant_id)),
            },
        };
        approver::may_revoke(&self.engine.current(), caller, admin, &grant.agent_id)?;
        let reason = EndReason::revoked(caller, comment);
        self.end_grant_locked(&writer, grant_id, &reason)?
            .ok_or_else(|| ElevationError::AlreadyEnded {
                id: grant_id.to_owned(),
            })
    }

    /// Ends an active grant durably; `None` when it had ended already.
    pub fn end_grant(
        &self,
        grant_id: &str,
        reason: &EndReason,
    ) -> Result<Option<Grant>, ElevationError> {
        let writer = self.write_lock();
        self.end_grant_locked(&writer, grant_id, reason)
    }

    /// Ends an active grant: the engine stops honouring it, the end is
    /// written, and only then is it gone from the broker's map; if the
    /// write fails the engine honours it again and nothing changed.
    fn end_grant_locked(
        &self,
        _writer: &MutexGuard<'_, ()>,
        grant_id: &str,
        reason: &EndReason,
    ) -> Result<Option<Grant>, ElevationError> {
        let Some(mut grant) = self.lock().grants.get(grant_id).cloned() else {
            return Ok(None);
        };
        let removed = self.engine.grants.remove(grant_id);
        if let Some(shared) = self.store.shared() {
            if let Some(active) = &removed {
                // The last uses taken here count before the end.
                if let Ok(Some(stored)) = self.record_uses(shared, active) {
                    grant = stored;
                }
            }
            lifecycle::end(&mut grant, reason, SystemTime::now());
            return match shared.end_grant(&grant) {
                Ok(won) => {
                    let mut inner = self.lock();
                    inner.grants.remove(grant_id);
                    inner.recorded.remove(grant_id);
                    inner.exhausted.remove(grant_id);
                    drop(inner);
                    // Only the replica whose end was written audits it.
                    if won {
                        self.audit_grant_end(&grant, reason);
                    }
                    Ok(won.then_some(grant))
                }
                Err(e) => {
                    if let Some(active) = removed {
                        self.engine.grants.insert(active);
                    }
                    Err(e.into())
                }
            };
        }
        if let Some(active) = &removed {
            grant.uses = active.uses.load(Ordering::Acquire);
        }
        lifecycle::end(&mut grant, reason, SystemTime::now());
        if let Err(e) = self.store.put_grant(&grant) {
            if let Some(active) = removed {
                self.engine.grants.insert(active);
            }
            return Err(e.into());
        }
        self.lock().grants.remove(grant_id);
        self.audit_grant_end(&grant, reason);
        Ok(Some(grant))
    }

    /// Tops up the reservation of every limited grant running low: the new
    /// reservation is written before the engine may count against it.
    pub fn reserve_uses(&self) {
        let writer = self.write_lock();
        if let Some(shared) = self.store.shared() {
            self.reserve_shared(shared);
            return;
        }
        for active in self.engine.grants.all() {
            let uses = active.uses.load(Ordering::Acquire);
            let reserved = active.reserved.load(Ordering::Acquire);
            let Some(next) = lifecycle::next_reservation(active.max_uses, uses, reserved) else {
                continue;
            };
            let Some(mut g) = self.lock().grants.get(&*active.id).cloned() else {
                continue;
            };
            g.uses = uses;
            g.reserved_uses = next;
            if let Err(e) = self.store.put_grant(&g) {
                tracing::error!("cannot reserve uses of grant {}: {e}", g.id);
                continue;
            }
            active.reserved.fetch_max(next, Ordering::AcqRel);
            self.lock().grants.insert(g.id.clone(), g);
        }
        drop(writer);
    }

    /// [`Broker::reserve_uses`] on a shared store: a block more for each
    /// limited grant used here or wanted here (a use was refused) whose
    /// uses reserved here are running low, while any are left.
    fn reserve_shared(&self, shared: &dyn SharedState) {
        for active in self.engine.grants.all() {
            if active.max_uses == 0 || self.lock().exhausted.contains(&*active.id) {
                continue;
            }
            let uses = active.uses.load(Ordering::Acquire);
            let reserved = active.reserved.load(Ordering::Acquire);
            let block = lifecycle::reservation_block(active.max_uses);
            let wanted = active.wanted.swap(false, Ordering::AcqRel) || uses > 0;
            if !wanted || reserved.saturating_sub(uses) > block / 2 {
                continue;
            }
            match shared.reserve_uses(&active.id, block) {
                Ok(r) => {
                    active.reserved.fetch_add(r.reserved, Ordering::AcqRel);
                    if r.exhausted {
                        self.lock().exhausted.insert(active.id.to_string());
                    }
                }
                Err(e) => {
                    // Asked again at the next sweep.
                    active.wanted.store(true, Ordering::Relaxed);
                    tracing::error!("cannot reserve uses of grant {}: {e}", active.id);
                }
            }
        }
    }

    /// Adds the uses taken here since the last record to the shared store:
    /// the grant as stored after (`None`: nothing new to record).
    fn record_uses(
        &self,
        shared: &dyn SharedState,
        active: &ActiveGrant,
    ) -> Result<Option<Grant>, StoreError> {
        let uses = active.uses.load(Ordering::Acquire);
        let recorded = self.lock().recorded.get(&*active.id).copied().unwrap_or(0);
        if uses <= recorded {
            return Ok(None);
        }
        let stored = shared.add_uses(&active.id, uses - recorded)?;
        let mut inner = self.lock();
        inner.recorded.insert(active.id.to_string(), uses);
        if let Some(g) = &stored {
            if let Some(known) = inner.grants.get_mut(&g.id) {
                *known = g.clone();
            }
        }
        Ok(stored)
    }

    /// [`Broker::sweep`]'s grant half on a shared store: uses recorded
    /// across the fleet, a grant used up when the fleet's uses reach
    /// `maxUses`.
    fn sweep_shared(&self, shared: &dyn SharedState, now: SystemTime) {
        for active in self.engine.grants.all() {
            let writer = self.write_lock();
            if let Err(e) = self.record_uses(shared, &active) {
                tracing::error!("cannot record uses of grant {}: {e}", active.id);
            }
            let used_up = active.max_uses != 0
                && self
                    .lock()
                    .grants
                    .get(&*active.id)
                    .is_some_and(|g| g.uses >= active.max_uses);
            if let Some(reason) = lifecycle::due(active.expires_at, used_up, now) {
                if let Err(e) = self.end_grant_locked(&writer, &active.id, &reason) {
                    tracing::error!("cannot end grant {}: {e}", active.id);
                }
            }
        }
    }

    /// Ends grants that expired or were used up, records uses, tops up
    /// reservations, and expires pending elevations nobody waits on.
    pub fn sweep(&self) {
        let now = SystemTime::now();
        self.sync_freeze();
        self.reserve_uses();
        if let Some(shared) = self.store.shared() {
            self.sweep_shared(shared, now);
            self.expire_abandoned(now);
            return;
        }
        for active in self.engine.grants.all() {
            let uses = active.uses.load(Ordering::Acquire);
            let writer = self.write_lock();
            let changed = {
                let inner = self.lock();
                match inner.grants.get(&*active.id) {
                    Some(g) if g.uses != uses => {
                        let mut g = g.clone();
                        g.uses = uses;
                        Some(g)
                    }
                    _ => None,
                }
            };
            if let Some(g) = changed {
                match self.store.put_grant(&g) {
                    Ok(()) => {
                        self.lock().grants.insert(g.id.clone(), g);
                    }
                    Err(e) => tracing::error!("cannot record uses of grant {}: {e}", g.id),
                }
            }
            if let Some(reason) = lifecycle::due(active.expires_at, active.is_used_up(), now) {
                if let Err(e) = self.end_grant_locked(&writer, &active.id, &reason) {
                    tracing::error!("cannot end grant {}: {e}", active.id);
                }
            }
        }
        self.expire_abandoned(now);
    }

    /// Expires pending elevations that no caller waits on any longer (a
    /// failed write left them, or their waiters overran the deadline).
    fn expire_abandoned(&self, now: SystemTime) {
        let abandoned: Vec<Elevation> = self
            .lock()
            .pending
            .values()
            .filter(|e| {
                e.elevation.waiters == 0 || e.elevation.wait_deadline + ABANDONED_AFTER < now
            })
            .map(|e| e.elevation.clone())
            .collect();
        for e in abandoned {
            let writer = self.write_lock();
            let Some(current) = self.lock().pending.get(&e.id).map(|e| e.elevation.clone()) else {
                continue;
            };
            let close = Resolution::Close {
                state: ElevationState::Expired,
                by: "rampart",
                comment: Some("nobody decided before the wait timeout"),
            };
            if let Err(err) = self.settle(&writer, &current, close) {
                tracing::error!("cannot expire elevation {}: {err}", e.id);
            }
        }
    }

    /// Deletes what is older than the retention period from the store;
    /// the audit log file keeps the history.
    pub fn purge(&self) -> Result<Purged, StoreError> {
        let before = SystemTime::now()
            .checked_sub(self.limits.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let purged = self.store.purge(before)?;
        if purged != Purged::default() {
            tracing::info!(
                elevations = purged.elevations,
                grants = purged.grants,
                audit = purged.audit,
                "purged state older than the retention period"
            );
        }
        Ok(purged)
    }

    /// Runs [`Broker::sweep`] every `every`, tops up reservations as soon
    /// as a limited grant is used, and purges every `purge_every`, until
    /// the broker is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        // A replica of a fleet follows the shared store as long as it lives.
        let _ = self.spawn_follower();
        let weak = Arc::downgrade(self);
        let purge_every = PURGE_EVERY;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut purge = tokio::time::interval(purge_every);
            loop {
                let Some(broker) = weak.upgrade() else { return };
                let engine = broker.engine.clone();
                drop(broker);
                enum Due {
                    Sweep,
                    Reserve,
                    Purge,
                }
                let due = tokio::select! {
                    _ = tick.tick() => Due::Sweep,
                    _ = engine.grants.limited_use_taken.notified() => Due::Reserve,
                    _ = purge.tick() => Due::Purge,
                };
                let Some(broker) = weak.upgrade() else { return };
                let work = tokio::task::spawn_blocking(move || match due {
                    Due::Sweep => broker.sweep(),
                    Due::Reserve => broker.reserve_uses(),
                    Due::Purge => {
                        if let Err(e) = broker.purge() {
                            tracing::error!("cannot purge old state: {e}");
                        }
                    }
                });
                let _ = work.await;
            }
        })
    }

    /// Swaps in a new snapshot, ends the grants it no longer supports
    /// (docs/agents-and-elevation.md#when-a-grant-ends) and cancels the
    /// pending elevations of agents it no longer has.
    pub fn swap_snapshot(&self, snapshot: CompiledSnapshot) {
        let previous = self.engine.swap(snapshot);
        let loaded = self.engine.current_arc();
        let writer = self.write_lock();
        let active: Vec<Grant> = self.lock().grants.values().cloned().collect();
        for g in active {
            if let Err(reason) = lifecycle::still_supported(&loaded, &g) {
                if let Err(e) = self.end_grant_locked(&writer, &g.id, &reason) {
                    tracing::error!("cannot end grant {}: {e}", g.id);
                }
            }
        }
        let orphans: Vec<Elevation> = {
            let mut inner = self.lock();
            inner
                .buckets
                .retain(|agent, _| agent_by_id(&loaded.snapshot, agent).is_some());
            inner
                .pending
                .values()
                .filter(|e| !still_the_agents(&loaded, &e.elevation))
                .map(|e| e.elevation.clone())
                .collect()
        };
        for e in orphans {
            let close = Resolution::Close {
                state: ElevationState::Cancelled,
                by: "rampart",
                comment: Some("the agent is no longer in the snapshot"),
            };
            if let Err(err) = self.settle(&writer, &e, close) {
                tracing::error!("cannot cancel elevation {}: {err}", e.id);
            }
        }
        drop(writer);
        Engine::retire(previous);
    }

    /// Cancels every pending elevation durably (shutdown): their callers
    /// get `CANCELLED` now instead of a dropped connection.
    pub fn cancel_all_pending(&self, why: &str) {
        let writer = self.write_lock();
        if let Some(shared) = self.store.shared() {
            self.leave_all_pending(&writer, shared, why);
            return;
        }
        self.cancel_pending_locked(&writer, "rampart", why);
    }

    fn cancel_pending_locked(&self, writer: &MutexGuard<'_, ()>, by: &str, why: &str) {
        let pending: Vec<Elevation> = self
            .lock()
            .pending
            .values()
            .map(|e| e.elevation.clone())
            .collect();
        for e in pending {
            let close = Resolution::Close {
                state: ElevationState::Cancelled,
                by,
                comment: Some(why),
            };
            if let Err(err) = self.settle(writer, &e, close) {
                tracing::error!("cannot cancel elevation {}: {err}", e.id);
            }
        }
    }

    /// [`Broker::cancel_all_pending`] for a replica of a fleet: its callers
    /// leave; an elevation nobody else waits on is cancelled, one that
    /// callers on other replicas wait on stays pending for them.
    fn leave_all_pending(&self, writer: &MutexGuard<'_, ()>, shared: &dyn SharedState, why: &str) {
        let here: Vec<(Elevation, u32)> = self
            .lock()
            .pending
            .values()
            .filter(|e| e.local > 0)
            .map(|e| (e.elevation.clone(), e.local))
            .collect();
        for (e, local) in here {
            match shared.leave(&e.id, local) {
                Ok(Some(stored)) if stored.waiters > 0 => {
                    let mut yours = stored;
                    yours.state = ElevationState::Cancelled;
                    yours.comment = Some(format!(
                        "{why}; the elevation stays pending for the callers on other replicas"
                    ));
                    if let Some(entry) = self.lock().pending.get_mut(&e.id) {
                        entry.local = 0;
                        entry.changed.send_replace(yours);
                    }
                }
                Ok(Some(stored)) => {
                    let close = Resolution::Close {
                        state: ElevationState::Cancelled,
                        by: "rampart",
                        comment: Some(why),
                    };
                    if let Err(err) = self.settle(writer, &stored, close) {
                        tracing::error!("cannot cancel elevation {}: {err}", e.id);
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::error!("cannot leave elevation {}: {err}", e.id),
            }
        }
    }

    /// The audit trail, from the store.
    pub fn audit_trail(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        self.store.audit_events()
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
