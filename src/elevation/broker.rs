//! The approval broker: elevations wait on an approval channel until a
//! human or the auto-approve policy resolves them, they expire, or their
//! callers go away; approvals become grants that the engine honours.
//!
//! The broker keeps the in-memory index, the locks, the waiting callers and
//! the subscribers; what is allowed is decided by [`super::policy`]. Every
//! state change is written to the store before it is acknowledged or
//! published, and an approval's grant is written with it, before the
//! approval returns.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use tokio::sync::{broadcast, watch};

use super::events::{AuditEvent, ElevationEvent, ElevationEventKind, GrantEnded};
use super::policy::auto_approve::{self, Skipped};
use super::policy::lifecycle::{self, EndReason};
use super::policy::request::{self, ElevationRequest, PendingKey};
use super::policy::{agent_by_id, agent_of, approver};
use super::store::{Resolved, StateStore, StoreError};
use super::types::{Approval, Elevation, ElevationState, Grant};
use super::ElevationError;
use crate::audit::AuditLog;
use crate::engine::{ActiveGrant, Engine, Loaded, Verdict};
use crate::model::{principal_key, Agent, ExecutionMode};
use crate::snapshot::CompiledSnapshot;

/// At most this many pending elevations per principal.
pub const MAX_PENDING_PER_PRINCIPAL: usize = 100;
/// Resolved elevations kept in memory for listing (all stay in the store).
const HISTORY: usize = 10_000;

struct Entry {
    elevation: Elevation,
    changed: watch::Sender<Elevation>,
}

#[derive(Default)]
struct Inner {
    elevations: HashMap<String, Entry>,
    pending: HashMap<PendingKey, String>,
    resolved_order: VecDeque<String>,
    grants: HashMap<String, Grant>,
}

pub struct Broker {
    engine: Arc<Engine>,
    store: Box<dyn StateStore>,
    inner: Mutex<Inner>,
    /// Auto-approvals per rule, for `maxPerHour`; used under `resolving`.
    auto_approvals: Mutex<auto_approve::Window>,
    /// Serialises resolutions, so two approvers cannot both approve.
    resolving: tokio::sync::Mutex<()>,
    events: broadcast::Sender<Elevation>,
    /// The JSON-lines audit file, when `--audit-log` is given.
    audit_log: OnceLock<Arc<AuditLog>>,
}

fn not_found(what: &'static str, id: &str) -> ElevationError {
    ElevationError::NotFound {
        what,
        id: id.to_owned(),
    }
}

impl Broker {
    /// Starts the broker on a store: active grants come back (minus those
    /// that expired meanwhile or the snapshot no longer supports), pending
    /// elevations become `CANCELLED` — their callers are gone.
    pub fn start(
        engine: Arc<Engine>,
        store: impl StateStore + 'static,
    ) -> Result<Arc<Broker>, StoreError> {
        let (events, _) = broadcast::channel(4096);
        let broker = Arc::new(Broker {
            engine,
            store: Box::new(store),
            inner: Mutex::new(Inner::default()),
            auto_approvals: Mutex::new(auto_approve::Window::default()),
            resolving: tokio::sync::Mutex::new(()),
            events,
            audit_log: OnceLock::new(),
        });
        broker.restore()?;
        Ok(broker)
    }

    fn restore(&self) -> Result<(), StoreError> {
        let (elevations, grants) = self.store.load()?;
        let now = SystemTime::now();
        let mut inner = self.lock();
        let loaded = self.engine.current();
        for mut g in grants {
            // What changed while rampart was down is checked as at a swap.
            if g.state.is_active() {
                if let Err(reason) = lifecycle::restored(&loaded, &g, now) {
                    self.record_end(&mut g, &reason, now)?;
                }
            }
            if g.state.is_active() {
                self.engine.grants.insert(active(&g));
            }
            inner.grants.insert(g.id.clone(), g);
        }
        drop(loaded);
        for mut e in elevations {
            if e.state.is_pending() {
                let why = "rampart restarted while the elevation was pending";
                lifecycle::resolve(
                    &mut e,
                    ElevationState::Cancelled,
                    None,
                    "rampart",
                    Some(why),
                    now,
                );
                self.store.resolve(&e, None)?;
                self.audit(ElevationEventKind::Cancelled, &e, None);
            }
            let (changed, _) = watch::channel(e.clone());
            inner.resolved_order.push_back(e.id.clone());
            inner.elevations.insert(
                e.id.clone(),
                Entry {
                    elevation: e,
                    changed,
                },
            );
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Also writes every elevation event and grant to `log`.
    pub fn set_audit_log(&self, log: Arc<AuditLog>) {
        let _ = self.audit_log.set(log);
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
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
                principal: r.principal_id.to_owned(),
            })?,
        };
        let (candidate, wait) = request::pending(&r, agent, &decision, now);
        let (id, changes, opened) = self.join_or_open(candidate)?;
        // Leaving the wait for any reason but a resolution (the caller
        // cancelled, its deadline passed) drops this guard.
        let mut guard = WaitGuard {
            broker: self.clone(),
            id: id.clone(),
            armed: true,
        };
        if let Some(elevation) = opened {
            if let Err(e) = self.store.create_elevation(&elevation) {
                self.forget(&elevation);
                guard.armed = false;
                return Err(e.into());
            }
            self.audit(ElevationEventKind::Requested, &elevation, None);
            self.publish(&elevation);
            if agent.execution_mode == ExecutionMode::Auto {
                self.try_auto_approve(&loaded, agent, &id).await?;
            }
        }
        drop(loaded);

        // This caller waits for its own timeout or the elevation's, the
        // sooner (a joiner may ask to wait less than the first caller).
        let deadline = self
            .lock()
            .elevations
            .get(&id)
            .map_or(now, |e| e.elevation.wait_deadline.min(now + wait));
        self.wait(changes, guard, deadline).await
    }

    /// Joins the pending elevation identical to `candidate`, or opens
    /// `candidate`: its id, its changes, and the elevation when it is new.
    fn join_or_open(
        &self,
        candidate: Elevation,
    ) -> Result<(String, watch::Receiver<Elevation>, Option<Elevation>), ElevationError> {
        let key = request::pending_key(&candidate);
        let mut inner = self.lock();
        if let Some(id) = inner.pending.get(&key).cloned() {
            let entry = inner
                .elevations
                .get_mut(&id)
                .ok_or(ElevationError::Lost("pending index out of step"))?;
            entry.elevation.waiters += 1;
            let changes = entry.changed.subscribe();
            return Ok((id, changes, None));
        }
        let pending = inner.pending.keys().filter(|k| k.0 == key.0).count();
        if pending >= MAX_PENDING_PER_PRINCIPAL {
            return Err(ElevationError::TooManyPending {
                principal: candidate.principal_id,
                pending,
                limit: MAX_PENDING_PER_PRINCIPAL,
            });
        }
        let (changed, changes) = watch::channel(candidate.clone());
        inner.pending.insert(key, candidate.id.clone());
        inner.elevations.insert(
            candidate.id.clone(),
            Entry {
                elevation: candidate.clone(),
                changed,
            },
        );
        Ok((candidate.id.clone(), changes, Some(candidate)))
    }

    /// Drops an elevation that could not be stored.
    fn forget(&self, e: &Elevation) {
        let mut inner = self.lock();
        inner.pending.remove(&request::pending_key(e));
        inner.elevations.remove(&e.id);
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
                        return Err(ElevationError::Lost("the elevation disappeared"));
                    }
                }
                _ = &mut timer => {
                    guard.armed = false;
                    return self.wait_expired(&guard.id);
                }
            }
        }
    }

    /// A waiter's timeout passed: the last one expires the elevation;
    /// earlier ones get it marked expired for them while it stays pending
    /// for the callers still waiting.
    fn wait_expired(&self, id: &str) -> Result<Elevation, ElevationError> {
        let (last, current) = {
            let mut inner = self.lock();
            match inner.elevations.get_mut(id) {
                Some(e) if e.elevation.state.is_pending() => {
                    e.elevation.waiters = e.elevation.waiters.saturating_sub(1);
                    (e.elevation.waiters == 0, Some(e.elevation.clone()))
                }
                Some(e) => (false, Some(e.elevation.clone())),
                None => (false, None),
            }
        };
        let current = current.ok_or_else(|| not_found("elevation", id))?;
        if last {
            return self.finish(
                id,
                ElevationState::Expired,
                "rampart",
                Some("nobody decided before the wait timeout"),
            );
        }
        if !current.state.is_pending() {
            return Ok(current);
        }
        let mut yours = current;
        yours.state = ElevationState::Expired;
        yours.comment =
            Some("your wait timed out; the elevation stays pending for the other callers".into());
        Ok(yours)
    }

    /// A waiter left without a resolution: the last one cancels.
    fn leave(&self, id: &str) {
        let last = {
            let mut inner = self.lock();
            match inner.elevations.get_mut(id) {
                Some(e) if e.elevation.state.is_pending() => {
                    e.elevation.waiters = e.elevation.waiters.saturating_sub(1);
                    e.elevation.waiters == 0
                }
                _ => false,
            }
        };
        if last {
            let _ = self.finish(
                id,
                ElevationState::Cancelled,
                "rampart",
                Some("the caller went away"),
            );
        }
    }

    /// Moves a pending elevation to a final state without a grant.
    fn finish(
        &self,
        id: &str,
        state: ElevationState,
        by: &str,
        comment: Option<&str>,
    ) -> Result<Elevation, ElevationError> {
        let elevation = {
            let mut inner = self.lock();
            let entry = inner
                .elevations
                .get_mut(id)
                .ok_or_else(|| not_found("elevation", id))?;
            if !entry.elevation.state.is_pending() {
                return Ok(entry.elevation.clone());
            }
            let now = SystemTime::now();
            lifecycle::resolve(&mut entry.elevation, state, None, by, comment, now);
            let e = entry.elevation.clone();
            inner.pending.remove(&request::pending_key(&e));
            Self::remember(&mut inner, id);
            e
        };
        self.store_resolution(&elevation, None)?;
        self.notify(&elevation);
        self.audit(ElevationEventKind::resolved(state), &elevation, Some(by));
        Ok(elevation)
    }

    /// Writes a resolution durably, refusing it when the store has the
    /// elevation resolved already.
    fn store_resolution(&self, e: &Elevation, grant: Option<&Grant>) -> Result<(), ElevationError> {
        match self.store.resolve(e, grant)? {
            Resolved::Written => Ok(()),
            Resolved::AlreadyResolved(state) => Err(ElevationError::AlreadyResolved {
                id: e.id.clone(),
                state,
            }),
        }
    }

    fn remember(inner: &mut Inner, id: &str) {
        inner.resolved_order.push_back(id.to_owned());
        while inner.resolved_order.len() > HISTORY {
            if let Some(old) = inner.resolved_order.pop_front() {
                if inner
                    .elevations
                    .get(&old)
                    .is_some_and(|e| !e.elevation.state.is_pending())
                {
                    inner.elevations.remove(&old);
                }
            }
        }
    }

    fn notify(&self, e: &Elevation) {
        if let Some(entry) = self.lock().elevations.get(&e.id) {
            entry.changed.send_replace(e.clone());
        }
        self.publish(e);
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
        let agent = agent_by_id(&loaded.snapshot, &elevation.agent_id).ok_or_else(|| {
            ElevationError::AgentGone {
                agent: elevation.agent_id.clone(),
            }
        })?;
        approver::may_approve(&loaded, caller, agent, elevation)?;
        Ok(())
    }

    /// Approves as `caller`: the approver rules (a), (b), (c)
    /// (docs/agents-and-elevation.md#approver-rules), then a durable
    /// grant, then the answer.
    pub async fn approve(
        &self,
        caller: &str,
        id: &str,
        approval: Approval<'_>,
    ) -> Result<Elevation, ElevationError> {
        let _one_at_a_time = self.resolving.lock().await;
        let elevation = self.pending(id)?;
        let duration = {
            let loaded = self.engine.current();
            let agent = agent_by_id(&loaded.snapshot, &elevation.agent_id).ok_or_else(|| {
                ElevationError::AgentGone {
                    agent: elevation.agent_id.clone(),
                }
            })?;
            approver::may_approve(&loaded, caller, agent, &elevation)?;
            lifecycle::granted_duration(elevation.requested_duration, approval.duration)?
        };
        self.grant(
            elevation,
            caller,
            caller,
            duration,
            approval.max_uses,
            approval.comment,
        )
    }

    /// Denies as `caller`: rule (a) only.
    pub async fn deny(
        &self,
        caller: &str,
        id: &str,
        comment: Option<&str>,
    ) -> Result<Elevation, ElevationError> {
        let _one_at_a_time = self.resolving.lock().await;
        let elevation = self.pending(id)?;
        approver::may_deny(&self.engine.current(), caller, &elevation.agent_id)?;
        self.finish(id, ElevationState::Denied, caller, comment)
    }

    fn pending(&self, id: &str) -> Result<Elevation, ElevationError> {
        let inner = self.lock();
        let entry = inner
            .elevations
            .get(id)
            .ok_or_else(|| not_found("elevation", id))?;
        if !entry.elevation.state.is_pending() {
            return Err(ElevationError::AlreadyResolved {
                id: id.to_owned(),
                state: entry.elevation.state,
            });
        }
        Ok(entry.elevation.clone())
    }

    /// Writes the grant and the approval durably (one transaction), then
    /// lets the engine honour the grant and answers the waiters.
    fn grant(
        &self,
        mut elevation: Elevation,
        resolved_by: &str,
        on_behalf_of: &str,
        duration: std::time::Duration,
        max_uses: u32,
        comment: Option<&str>,
    ) -> Result<Elevation, ElevationError> {
        let now = SystemTime::now();
        let grant = lifecycle::new_grant(&elevation, on_behalf_of, duration, max_uses, now);
        lifecycle::resolve(
            &mut elevation,
            ElevationState::Approved,
            Some(grant.clone()),
            resolved_by,
            comment,
            now,
        );
        self.store_resolution(&elevation, Some(&grant))?;
        self.engine.grants.insert(active(&grant));
        {
            let mut inner = self.lock();
            inner.pending.remove(&request::pending_key(&elevation));
            inner.grants.insert(grant.id.clone(), grant);
            if let Some(entry) = inner.elevations.get_mut(&elevation.id) {
                entry.elevation = elevation.clone();
            }
            Self::remember(&mut inner, &elevation.id);
        }
        self.notify(&elevation);
        self.audit(ElevationEventKind::Approved, &elevation, Some(resolved_by));
        Ok(elevation)
    }

    /// The auto-approve policy (docs/agents-and-elevation.md#auto-approve),
    /// for Auto-mode agents.
    async fn try_auto_approve(
        &self,
        loaded: &Loaded,
        agent: &Agent,
        id: &str,
    ) -> Result<(), ElevationError> {
        let _one_at_a_time = self.resolving.lock().await;
        let Ok(elevation) = self.pending(id) else {
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
            }
        }
        let Some(choice) = outcome.choice else {
            return Ok(());
        };
        self.grant(
            elevation,
            &choice.resolved_by(agent),
            &choice.on_behalf_of,
            choice.duration,
            0,
            Some("approved by the auto-approve policy"),
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<Elevation> {
        self.lock().elevations.get(id).map(|e| e.elevation.clone())
    }

    pub fn list(&self) -> Vec<Elevation> {
        let mut out: Vec<Elevation> = self
            .lock()
            .elevations
            .values()
            .map(|e| e.elevation.clone())
            .collect();
        out.sort_by_key(|e| e.created_at);
        out
    }

    pub fn grants(&self) -> Vec<Grant> {
        let mut out: Vec<Grant> = self.lock().grants.values().cloned().collect();
        out.sort_by_key(|g| g.created_at);
        out
    }

    /// Revokes a grant as `caller` (who must pass rule (a) for its agent,
    /// unless `admin`).
    pub fn revoke(
        &self,
        caller: &str,
        admin: bool,
        grant_id: &str,
        comment: Option<&str>,
    ) -> Result<Grant, ElevationError> {
        let grant = self
            .lock()
            .grants
            .get(grant_id)
            .cloned()
            .ok_or_else(|| not_found("grant", grant_id))?;
        approver::may_revoke(&self.engine.current(), caller, admin, &grant.agent_id)?;
        let reason = EndReason::revoked(caller, comment);
        self.end_grant(grant_id, &reason)?
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
        let Some(mut grant) = self.lock().grants.get(grant_id).cloned() else {
            return Ok(None);
        };
        if !grant.state.is_active() {
            return Ok(None);
        }
        if let Some(active) = self.engine.grants.remove(grant_id) {
            grant.uses = active.uses.load(std::sync::atomic::Ordering::Acquire);
        }
        self.record_end(&mut grant, reason, SystemTime::now())?;
        self.lock().grants.insert(grant.id.clone(), grant.clone());
        tracing::info!(target: "rampart::audit", grant = %grant.id, %reason, "grant ended");
        Ok(Some(grant))
    }

    /// Ends the record of a grant durably and audits it.
    fn record_end(
        &self,
        grant: &mut Grant,
        reason: &EndReason,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        lifecycle::end(grant, reason, now);
        self.store.put_grant(grant)?;
        let revision = self.engine.current().snapshot.info.revision.clone();
        self.write_audit(&GrantEnded::new(grant, reason, &revision).into())
    }

    /// Ends grants that expired or were used up, and records uses.
    pub fn sweep(&self) {
        let now = SystemTime::now();
        for active in self.engine.grants.all() {
            let uses = active.uses.load(std::sync::atomic::Ordering::Acquire);
            let changed = {
                let mut inner = self.lock();
                match inner.grants.get_mut(&*active.id) {
                    Some(g) if g.uses != uses => {
                        g.uses = uses;
                        Some(g.clone())
                    }
                    _ => None,
                }
            };
            if let Some(g) = changed {
                if let Err(e) = self.store.put_grant(&g) {
                    tracing::error!("cannot record uses of grant {}: {e}", g.id);
                }
            }
            if let Some(reason) = lifecycle::due(active.expires_at, active.is_used_up(), now) {
                if let Err(e) = self.end_grant(&active.id, &reason) {
                    tracing::error!("cannot end grant {}: {e}", active.id);
                }
            }
        }
    }

    /// Runs [`Broker::sweep`] every `every` until the broker is dropped.
    pub fn spawn_sweeper(
        self: &Arc<Self>,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                broker.sweep();
            }
        })
    }

    /// Swaps in a new snapshot and ends the grants it no longer supports
    /// (docs/agents-and-elevation.md#when-a-grant-ends).
    pub fn swap_snapshot(&self, snapshot: CompiledSnapshot) {
        self.engine.swap(snapshot);
        let loaded = self.engine.current();
        let active: Vec<Grant> = self
            .lock()
            .grants
            .values()
            .filter(|g| g.state.is_active())
            .cloned()
            .collect();
        for g in active {
            if let Err(reason) = lifecycle::still_supported(&loaded, &g) {
                if let Err(e) = self.end_grant(&g.id, &reason) {
                    tracing::error!("cannot end grant {}: {e}", g.id);
                }
            }
        }
    }

    /// Cancels every pending elevation durably (shutdown): their callers
    /// get `CANCELLED` now instead of a dropped connection.
    pub fn cancel_all_pending(&self, why: &str) {
        let ids: Vec<String> = self.lock().pending.values().cloned().collect();
        for id in ids {
            if let Err(e) = self.finish(&id, ElevationState::Cancelled, "rampart", Some(why)) {
                tracing::error!("cannot cancel elevation {id}: {e}");
            }
        }
    }

    /// The audit trail, from the store.
    pub fn audit_trail(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        self.store.audit_events()
    }
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
        on_behalf_of: g.on_behalf_of.as_str().into(),
    })
}
