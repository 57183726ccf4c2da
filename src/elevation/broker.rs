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

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch};

use super::error::echo;
use super::events::{AuditEvent, ElevationEvent, ElevationEventKind, GrantEnded};
use super::policy::approval::{self, Step};
use super::policy::auto_approve::{self, Skipped};
use super::policy::exact;
use super::policy::lifecycle::{self, EndReason};
use super::policy::rate::Bucket;
use super::policy::request::{self, ElevationRequest, PendingKey};
use super::policy::shadow;
use super::policy::{agent_by_id, agent_of, approver, bounded};
use super::store::{
    Cursor, ElevationQuery, GrantQuery, Page, Purged, Resolved, StateStore, StoreError,
};
use super::types::{Approval, ApprovalRecord, Elevation, ElevationState, Grant};
use super::ElevationError;
use crate::audit::AuditLog;
use crate::engine::{ActiveGrant, Engine, Loaded, Verdict};
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
    elevation: Elevation,
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
    },
    Close {
        state: ElevationState,
        by: &'a str,
        comment: Option<&'a str>,
    },
}

/// What a resolution came to: this one was stored, or another was first.
enum Settled {
    Won(Elevation),
    Lost(Elevation),
}

impl Settled {
    fn either(self) -> Elevation {
        match self {
            Settled::Won(e) | Settled::Lost(e) => e,
        }
    }

    /// The answer to an approver or a denier: losing is a refusal.
    fn or_already_resolved(self) -> Result<Elevation, ElevationError> {
        match self {
            Settled::Won(e) => Ok(e),
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
        });
        broker.restore()?;
        Ok(broker)
    }

    fn restore(&self) -> Result<(), StoreError> {
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

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
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
        let decision = loaded.decide_with(&r.question(), Some(&self.engine.grants))?;
        let now = SystemTime::now();
        let agent = agent_of(&loaded.snapshot, r.principal_id);
        let agent = match decision.verdict {
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
                    changed,
                },
            );
        }
        self.audit(ElevationEventKind::Requested, &candidate, None);
        self.publish(&candidate);
        Ok((candidate.id, changes, None))
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
        entry.elevation.waiters = entry.elevation.waiters.saturating_sub(1);
        Some(entry.elevation.clone())
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
        let Some(current) = self.leave_pending(id) else {
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
        let Some(current) = self.leave_pending(id) else {
            return;
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
        let (state, by, grant) = match resolution {
            Resolution::Approve {
                resolved_by,
                on_behalf_of,
                co_lenders,
                request_digest,
                duration,
                max_uses,
                comment,
            } => {
                let mut grant =
                    lifecycle::new_grant(pending, &on_behalf_of, duration, max_uses, now);
                grant.co_lenders = co_lenders;
                grant.request_digest = request_digest;
                lifecycle::resolve(
                    &mut e,
                    ElevationState::Approved,
                    Some(grant.clone()),
                    &resolved_by,
                    comment,
                    now,
                );
                (ElevationState::Approved, resolved_by, Some(grant))
            }
            Resolution::Close { state, by, comment } => {
                lifecycle::resolve(&mut e, state, None, by, comment, now);
                (state, by.to_owned(), None)
            }
        };
        match self.store.resolve(&e, grant.as_ref())? {
            Resolved::Written => {
                if !e.shadow.is_empty() {
                    self.shadow_tally
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&e);
                }
                self.apply(&e, grant);
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
                self.apply(&stored, grant);
                Ok(Settled::Lost(*stored))
            }
        }
    }

    /// Applies a stored resolution to memory: the grant to the engine and
    /// the broker's map, the elevation out of the pending ones, the final
    /// state to its waiters and watchers.
    fn apply(&self, e: &Elevation, grant: Option<Grant>) {
        let entry = {
            let mut inner = self.lock();
            if let Some(g) = grant {
                if !inner.grants.contains_key(&g.id) {
                    self.engine.grants.insert(active(&g));
                    inner.grants.insert(g.id.clone(), g);
                }
            }
            inner.remove_pending(&e.id)
        };
        if let Some(entry) = entry {
            entry.changed.send_replace(e.clone());
        }
        self.publish(e);
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
        let Some(elevation) = self.lock().pending.get(id).map(|e| e.elevation.clone()) else {
            return Ok(());
        };
        let now = SystemTime::now();
        let outcome = {
            let mut window = self
                .auto_approvals
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let outcome = auto_approve::choose(loaded, agent, &elevation, &window, now);
            if let Some(choice) = outcome.choice.as_ref().filter(|c| c.counted) {
                window.record(&agent.id, choice.rule, now);
            }
            outcome
        };
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
        let Some(choice) = outcome.choice else {
            return Ok(());
        };
        let approve = Resolution::Approve {
            resolved_by: choice.resolved_by(agent),
            on_behalf_of: choice.on_behalf_of.clone(),
            co_lenders: Vec::new(),
            request_digest: None,
            duration: choice.duration,
            max_uses: 0,
            comment: Some("approved by the auto-approve policy"),
        };
        self.settle(&writer, &elevation, approve)?;
        Ok(())
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
        if let Some(active) = self.engine.grants.all().iter().find(|a| &*a.id == id) {
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
        {
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
            None => {
                return Err(match self.store.grant(grant_id)? {
                    Some(g) => ElevationError::AlreadyEnded { id: g.id },
                    None => not_found("grant", grant_id),
                })
            }
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

    /// Ends grants that expired or were used up, records uses, tops up
    /// reservations, and expires pending elevations nobody waits on.
    pub fn sweep(&self) {
        let now = SystemTime::now();
        self.reserve_uses();
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
        self.engine.swap(snapshot);
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
    }

    /// Cancels every pending elevation durably (shutdown): their callers
    /// get `CANCELLED` now instead of a dropped connection.
    pub fn cancel_all_pending(&self, why: &str) {
        let writer = self.write_lock();
        let pending: Vec<Elevation> = self
            .lock()
            .pending
            .values()
            .map(|e| e.elevation.clone())
            .collect();
        for e in pending {
            let close = Resolution::Close {
                state: ElevationState::Cancelled,
                by: "rampart",
                comment: Some(why),
            };
            if let Err(err) = self.settle(&writer, &e, close) {
                tracing::error!("cannot cancel elevation {}: {err}", e.id);
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
    Arc::new(ActiveGrant {
        id: g.id.as_str().into(),
        principal_key: principal_key(&g.principal_id).into(),
        action: g.action.as_str().into(),
        scope_key: g.scope.to_ascii_lowercase().into(),
        scope: g.scope.as_str().into(),
        data_action: g.data_action,
        expires_at: g.expires_at,
        max_uses: g.max_uses,
        uses: std::sync::atomic::AtomicU32::new(g.uses),
        reserved: std::sync::atomic::AtomicU32::new(g.reserved_uses),
        on_behalf_of: g.on_behalf_of.as_str().into(),
        co_lenders: g.co_lenders.iter().map(|c| c.as_str().into()).collect(),
        request_digest: g.request_digest.as_deref().map(Into::into),
    })
}
