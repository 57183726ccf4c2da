//! The approval broker: elevations wait on an approval channel until a
//! human or the auto-approve policy resolves them, they expire, or their
//! callers go away; approvals become grants that the engine honours.
//!
//! Every state change is written to the store before it is acknowledged or
//! published, and grants are written before the approval returns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::store::{Store, StoreError};
use super::types::{new_id, Elevation, ElevationState, Grant, GrantState};
use crate::audit::AuditLog;
use crate::engine::{ActiveGrant, Engine, Loaded, Reason, Request, Verdict};
use crate::model::{principal_key, Agent, ExecutionMode, Scope};
use crate::snapshot::CompiledSnapshot;

/// The default wait for a decision (docs/agents-and-elevation.md#requestelevation).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// At most this many pending elevations per principal.
pub const MAX_PENDING_PER_PRINCIPAL: usize = 100;
/// The longest justification and comment kept.
pub const MAX_TEXT: usize = 1024;
/// Resolved elevations kept in memory for listing (all stay in the store).
const HISTORY: usize = 10_000;

/// Why the broker refused; the gRPC edge maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ElevationError {
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for ElevationError {
    fn from(e: StoreError) -> Self {
        ElevationError::Unavailable(e.to_string())
    }
}

/// What an agent asks for.
pub struct ElevationRequest<'a> {
    pub principal_id: &'a str,
    pub action: &'a str,
    pub scope: &'a str,
    pub data_action: bool,
    pub justification: &'a str,
    pub requested_duration: Option<Duration>,
    pub wait_timeout: Option<Duration>,
    /// Request attributes for ABAC conditions; bounded at the edge.
    pub attributes: BTreeMap<String, String>,
}

/// What an approver decides.
pub struct Approval<'a> {
    pub duration: Option<Duration>,
    pub max_uses: u32,
    pub comment: Option<&'a str>,
}

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
    /// Auto-approvals per (agent, rule), for `maxPerHour`.
    auto_approvals: HashMap<(String, usize), VecDeque<SystemTime>>,
}

pub struct Broker {
    engine: Arc<Engine>,
    store: Store,
    inner: Mutex<Inner>,
    /// Serialises resolutions, so two approvers cannot both approve.
    resolving: tokio::sync::Mutex<()>,
    events: broadcast::Sender<Elevation>,
    /// The JSON-lines audit file, when `--audit-log` is given.
    audit_log: std::sync::OnceLock<Arc<AuditLog>>,
}

/// What makes two requests identical, so the second joins the first:
/// (principal key, lowercase action, lowercase scope, plane, attributes).
type PendingKey = (String, String, String, bool, BTreeMap<String, String>);

fn pending_key(e: &Elevation) -> PendingKey {
    (
        principal_key(&e.principal_id).into_owned(),
        e.action.to_ascii_lowercase(),
        e.scope.to_ascii_lowercase(),
        e.data_action,
        e.attributes.clone(),
    )
}

fn bounded(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

impl Broker {
    /// Starts the broker on a store: active grants come back (minus those
    /// that expired meanwhile), pending elevations become `CANCELLED` —
    /// their callers are gone.
    pub fn start(engine: Arc<Engine>, store: Store) -> Result<Arc<Broker>, StoreError> {
        let (events, _) = broadcast::channel(4096);
        let broker = Arc::new(Broker {
            engine,
            store,
            inner: Mutex::new(Inner::default()),
            resolving: tokio::sync::Mutex::new(()),
            events,
            audit_log: std::sync::OnceLock::new(),
        });
        let (elevations, grants) = broker.store.load()?;
        let now = SystemTime::now();
        let mut inner = broker.lock();
        let loaded = broker.engine.current();
        for mut g in grants {
            if g.state.is_active() && g.expires_at <= now {
                broker.end_grant_record(&mut g, "expired", now)?;
            }
            // What changed while rampart was down is checked as at a swap.
            if g.state.is_active() {
                if let Err(reason) = still_supported(&loaded, &g) {
                    broker.end_grant_record(&mut g, &reason, now)?;
                }
            }
            if g.state.is_active() {
                broker.engine.grants.insert(active(&g));
            }
            inner.grants.insert(g.id.clone(), g);
        }
        drop(loaded);
        for mut e in elevations {
            if e.state.is_pending() {
                e.state = ElevationState::Cancelled;
                e.resolved_at = Some(now);
                e.resolved_by = Some("rampart".into());
                e.comment = Some("rampart restarted while the elevation was pending".into());
                broker.store.put_elevation(&e)?;
                broker.audit("elevation.cancelled", &e, None);
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
        drop(inner);
        Ok(broker)
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

    fn audit(&self, event: &str, e: &Elevation, by: Option<&str>) {
        let record = json!({
            "event": event,
            "elevation_id": e.id,
            "principal": e.principal_id,
            "agent": e.agent_id,
            "action": e.action,
            "scope": e.scope,
            "data_action": e.data_action,
            "state": e.state,
            "by": by,
            "grant_id": e.grant.as_ref().map(|g| g.id.clone()),
            "revision": self.engine.current().snapshot.info.revision,
        });
        if let Err(err) = self.store.audit(&record) {
            tracing::error!("cannot write the audit trail: {err}");
        }
        if let Some(log) = self.audit_log.get() {
            log.write(record);
        }
        tracing::info!(target: "rampart::audit", event, elevation = %e.id, principal = %e.principal_id, action = %e.action, scope = %e.scope, "elevation event");
    }

    /// RequestElevation (docs/agents-and-elevation.md#requestelevation): answers at once when nothing needs
    /// approving, otherwise waits for the resolution.
    pub async fn request(
        self: &Arc<Self>,
        r: ElevationRequest<'_>,
    ) -> Result<Elevation, ElevationError> {
        if r.justification.trim().is_empty() {
            return Err(ElevationError::InvalidArgument {
                field: "justification",
                message: "justification is required: say why the agent needs this".into(),
            });
        }
        if r.justification.chars().count() > MAX_TEXT {
            return Err(ElevationError::InvalidArgument {
                field: "justification",
                message: format!("justification is longer than {MAX_TEXT} characters"),
            });
        }
        let loaded = self.engine.current_arc();
        let request = Request {
            principal_id: r.principal_id,
            action: r.action,
            scope: r.scope,
            data_action: r.data_action,
            attributes: &r.attributes,
            explain: false,
            dry_run: true,
        };
        // Grants count (an active one makes the elevation unnecessary), but
        // asking takes no use of them.
        let decision = loaded
            .decide_with(&request, Some(&self.engine.grants))
            .map_err(|e| ElevationError::InvalidArgument {
                field: e.field,
                message: e.message,
            })?;
        let now = SystemTime::now();
        match decision.verdict {
            Verdict::Deny => {
                return Err(ElevationError::FailedPrecondition(format!(
                    "Authorize denies this ({}): a denial cannot be elevated",
                    decision.reason.as_str()
                )))
            }
            Verdict::Allow => return Ok(self.not_needed(&loaded, &r, decision.read_only, now)),
            Verdict::ApprovalRequired => {}
        }
        let agent = agent_of(&loaded.snapshot, r.principal_id).ok_or_else(|| {
            ElevationError::FailedPrecondition("only agents request elevation".into())
        })?;
        let wait = r
            .wait_timeout
            .unwrap_or(DEFAULT_WAIT)
            .min(agent.elevation.max_wait);
        let duration = r
            .requested_duration
            .unwrap_or(agent.elevation.default_duration)
            .min(agent.elevation.max_duration);
        let candidate = Elevation {
            id: new_id(),
            principal_id: r.principal_id.to_owned(),
            agent_id: agent.id.clone(),
            action: r.action.to_owned(),
            scope: r.scope.to_owned(),
            data_action: r.data_action,
            read_only: decision.read_only,
            justification: bounded(r.justification),
            attributes: r.attributes.clone(),
            reason: decision.reason,
            requested_duration: duration,
            state: ElevationState::Pending,
            created_at: now,
            wait_deadline: now + wait,
            resolved_at: None,
            resolved_by: None,
            comment: None,
            grant: None,
            waiters: 1,
        };
        let key = pending_key(&candidate);

        let (id, mut changes, created) = {
            let mut inner = self.lock();
            if let Some(id) = inner.pending.get(&key).cloned() {
                let entry = inner.elevations.get_mut(&id).ok_or_else(|| {
                    ElevationError::Unavailable("pending index out of step".into())
                })?;
                entry.elevation.waiters += 1;
                (id, entry.changed.subscribe(), None)
            } else {
                let waiting = inner.pending.keys().filter(|k| k.0 == key.0).count();
                if waiting >= MAX_PENDING_PER_PRINCIPAL {
                    return Err(ElevationError::ResourceExhausted(format!(
                        "{} has {waiting} pending elevations; the limit is {MAX_PENDING_PER_PRINCIPAL}",
                        r.principal_id
                    )));
                }
                let elevation = candidate;
                let (changed, rx) = watch::channel(elevation.clone());
                inner.pending.insert(key.clone(), elevation.id.clone());
                inner.elevations.insert(
                    elevation.id.clone(),
                    Entry {
                        elevation: elevation.clone(),
                        changed,
                    },
                );
                (elevation.id.clone(), rx, Some(elevation))
            }
        };
        // Leaving the wait for any reason but a resolution (the caller
        // cancelled, its deadline passed) drops this guard.
        let mut guard = WaitGuard {
            broker: self.clone(),
            id: id.clone(),
            armed: true,
        };

        if let Some(elevation) = created {
            if let Err(e) = self.store.put_elevation(&elevation) {
                let mut inner = self.lock();
                inner.pending.remove(&key);
                inner.elevations.remove(&id);
                guard.armed = false;
                return Err(e.into());
            }
            self.audit("elevation.requested", &elevation, None);
            self.publish(&elevation);
            if agent.execution_mode == ExecutionMode::Auto {
                self.try_auto_approve(&loaded, agent, &id).await?;
            }
        }
        drop(loaded);

        // This caller waits for its own timeout or the elevation's, the
        // sooner (a joiner may ask to wait less than the first caller).
        let deadline = {
            let inner = self.lock();
            inner
                .elevations
                .get(&id)
                .map_or(now, |e| e.elevation.wait_deadline.min(now + wait))
        };
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
                        return Err(ElevationError::Unavailable("the elevation disappeared".into()));
                    }
                }
                _ = &mut timer => {
                    guard.armed = false;
                    return self.wait_expired(&id);
                }
            }
        }
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
        let key = (
            principal_key(r.principal_id).into_owned(),
            r.action.to_ascii_lowercase(),
            r.scope.to_ascii_lowercase(),
            r.data_action,
            r.attributes.clone(),
        );
        let (principal, action, scope) = (
            r.principal_id.to_owned(),
            r.action.to_owned(),
            r.scope.to_owned(),
        );
        let justification = r.justification.to_owned();
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
        let id = self.lock().pending.get(&key).cloned();
        id.and_then(|id| self.get(&id)).ok_or_else(|| {
            ElevationError::Unavailable("the elevation was resolved while being filed".into())
        })
    }

    fn not_needed(
        &self,
        loaded: &Loaded,
        r: &ElevationRequest<'_>,
        read_only: bool,
        now: SystemTime,
    ) -> Elevation {
        Elevation {
            id: new_id(),
            principal_id: r.principal_id.to_owned(),
            agent_id: agent_of(&loaded.snapshot, r.principal_id)
                .map(|a| a.id.clone())
                .unwrap_or_default(),
            action: r.action.to_owned(),
            scope: r.scope.to_owned(),
            data_action: r.data_action,
            read_only,
            justification: bounded(r.justification),
            attributes: r.attributes.clone(),
            reason: Reason::RoleAssignment,
            requested_duration: Duration::ZERO,
            state: ElevationState::NotNeeded,
            created_at: now,
            wait_deadline: now,
            resolved_at: Some(now),
            resolved_by: Some("rampart".into()),
            comment: Some("Authorize already allows this".into()),
            grant: None,
            waiters: 0,
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
        let current =
            current.ok_or_else(|| ElevationError::NotFound(format!("no elevation {id}")))?;
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
                .ok_or_else(|| ElevationError::NotFound(format!("no elevation {id}")))?;
            if !entry.elevation.state.is_pending() {
                return Ok(entry.elevation.clone());
            }
            entry.elevation.state = state;
            entry.elevation.resolved_at = Some(SystemTime::now());
            entry.elevation.resolved_by = Some(by.to_owned());
            entry.elevation.comment = comment.map(bounded);
            entry.elevation.waiters = 0;
            let e = entry.elevation.clone();
            let key = pending_key(&e);
            inner.pending.remove(&key);
            Self::remember(&mut inner, id);
            e
        };
        self.store.put_elevation(&elevation)?;
        self.notify(&elevation);
        let event = match state {
            ElevationState::Denied => "elevation.denied",
            ElevationState::Expired => "elevation.expired",
            _ => "elevation.cancelled",
        };
        self.audit(event, &elevation, Some(by));
        Ok(elevation)
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
        let loaded = self.engine.current();
        agent_by_id(&loaded.snapshot, agent_id)
            .is_some_and(|agent| self.may_interact(&loaded, caller, agent))
    }

    /// May `caller` interact with the agent (rule (a))?
    pub fn may_interact(&self, loaded: &Loaded, caller: &str, agent: &Agent) -> bool {
        allows(
            loaded,
            caller,
            &agent.elevation.interact_action,
            agent.resource.as_str(),
            false,
            &BTreeMap::new(),
        )
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
        let loaded = self.engine.current();
        let agent = agent_by_id(&loaded.snapshot, &elevation.agent_id).ok_or_else(|| {
            ElevationError::FailedPrecondition(format!(
                "agent {} is no longer in the snapshot",
                elevation.agent_id
            ))
        })?;
        let agent_principal = &loaded.snapshot.tenant.principals[agent.principal].id;
        if principal_key(caller) == principal_key(agent_principal) {
            return Err(ElevationError::PermissionDenied(format!(
                "{caller} is the agent's own identity: an agent cannot approve its own elevation (rule c)"
            )));
        }
        if !self.may_interact(&loaded, caller, agent) {
            return Err(ElevationError::PermissionDenied(format!(
                "{caller} is not allowed {} at {}, so may not interact with agent {} (rule a)",
                agent.elevation.interact_action, agent.resource, agent.id
            )));
        }
        if !allows(
            &loaded,
            caller,
            &elevation.action,
            &elevation.scope,
            elevation.data_action,
            &elevation.attributes,
        ) {
            return Err(ElevationError::PermissionDenied(format!(
                "{caller} does not hold {} at {} and cannot lend what it does not hold (rule b)",
                elevation.action, elevation.scope
            )));
        }
        let mut duration = elevation.requested_duration;
        if let Some(d) = approval.duration {
            if d > duration {
                return Err(ElevationError::InvalidArgument {
                    field: "duration",
                    message: format!(
                        "duration may only shorten the requested {}s",
                        duration.as_secs()
                    ),
                });
            }
            duration = d;
        }
        drop(loaded);
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
        let loaded = self.engine.current();
        if let Some(agent) = agent_by_id(&loaded.snapshot, &elevation.agent_id) {
            if !self.may_interact(&loaded, caller, agent) {
                return Err(ElevationError::PermissionDenied(format!(
                    "{caller} is not allowed {} at {}, so may not interact with agent {} (rule a)",
                    agent.elevation.interact_action, agent.resource, agent.id
                )));
            }
        }
        drop(loaded);
        self.finish(id, ElevationState::Denied, caller, comment)
    }

    fn pending(&self, id: &str) -> Result<Elevation, ElevationError> {
        let inner = self.lock();
        let entry = inner
            .elevations
            .get(id)
            .ok_or_else(|| ElevationError::NotFound(format!("no elevation {id}")))?;
        if !entry.elevation.state.is_pending() {
            return Err(ElevationError::FailedPrecondition(format!(
                "elevation {id} is {:?} already",
                entry.elevation.state
            )));
        }
        Ok(entry.elevation.clone())
    }

    /// Writes the grant durably, then resolves the elevation with it.
    fn grant(
        &self,
        mut elevation: Elevation,
        resolved_by: &str,
        on_behalf_of: &str,
        duration: Duration,
        max_uses: u32,
        comment: Option<&str>,
    ) -> Result<Elevation, ElevationError> {
        let now = SystemTime::now();
        let grant = Grant {
            id: new_id(),
            elevation_id: elevation.id.clone(),
            principal_id: elevation.principal_id.clone(),
            agent_id: elevation.agent_id.clone(),
            action: elevation.action.clone(),
            scope: elevation.scope.clone(),
            data_action: elevation.data_action,
            on_behalf_of: on_behalf_of.to_owned(),
            attributes: elevation.attributes.clone(),
            created_at: now,
            expires_at: now + duration,
            max_uses,
            uses: 0,
            state: GrantState::Active,
            ended_reason: None,
            ended_at: None,
        };
        self.store.put_grant(&grant)?;
        elevation.state = ElevationState::Approved;
        elevation.resolved_at = Some(now);
        elevation.resolved_by = Some(resolved_by.to_owned());
        elevation.comment = comment.map(bounded);
        elevation.grant = Some(grant.clone());
        elevation.waiters = 0;
        self.store.put_elevation(&elevation)?;
        self.engine.grants.insert(active(&grant));
        {
            let mut inner = self.lock();
            inner.pending.remove(&pending_key(&elevation));
            inner.grants.insert(grant.id.clone(), grant);
            if let Some(entry) = inner.elevations.get_mut(&elevation.id) {
                entry.elevation = elevation.clone();
            }
            Self::remember(&mut inner, &elevation.id);
        }
        self.notify(&elevation);
        self.audit("elevation.approved", &elevation, Some(resolved_by));
        Ok(elevation)
    }

    /// The auto-approve policy (docs/agents-and-elevation.md#auto-approve), for Auto-mode agents: the first
    /// rule that matches and whose `onBehalfOf` holds the operation.
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
        let Ok(scope) = Scope::parse(&elevation.scope) else {
            return Ok(());
        };
        let tenant = &loaded.snapshot.tenant;
        let now = SystemTime::now();
        for (i, rule) in agent.elevation.auto_approve.iter().enumerate() {
            let matches = rule.actions.iter().any(|p| p.matches(&elevation.action))
                && (rule.scopes.is_empty()
                    || rule.scopes.iter().any(|s| scope.is_structurally_within(s)))
                && rule.data_action.is_none_or(|d| d == elevation.data_action)
                && rule.read_only.is_none_or(|r| r == elevation.read_only);
            if !matches {
                continue;
            }
            let on_behalf_of = &tenant.principals[rule.on_behalf_of].id;
            if !allows(
                loaded,
                on_behalf_of,
                &elevation.action,
                &elevation.scope,
                elevation.data_action,
                &elevation.attributes,
            ) {
                tracing::info!(agent = %agent.id, rule = i, %on_behalf_of, "auto-approve rule skipped: its onBehalfOf does not hold the operation");
                continue;
            }
            if let Some(max) = rule.max_per_hour {
                let mut inner = self.lock();
                let recent = inner
                    .auto_approvals
                    .entry((agent.id.clone(), i))
                    .or_default();
                while recent.front().is_some_and(|t| {
                    now.duration_since(*t).unwrap_or_default() > Duration::from_secs(3600)
                }) {
                    recent.pop_front();
                }
                if recent.len() >= max as usize {
                    tracing::info!(agent = %agent.id, rule = i, "auto-approve rule skipped: maxPerHour reached");
                    continue;
                }
                recent.push_back(now);
            }
            let duration = rule.max_duration.map_or(elevation.requested_duration, |m| {
                m.min(elevation.requested_duration)
            });
            let by = format!("auto-approve:{}#{i}", agent.id);
            self.grant(
                elevation,
                &by,
                on_behalf_of,
                duration,
                0,
                Some("approved by the auto-approve policy"),
            )?;
            return Ok(());
        }
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
            .ok_or_else(|| ElevationError::NotFound(format!("no grant {grant_id}")))?;
        if !admin && !self.may_interact_with(caller, &grant.agent_id) {
            return Err(ElevationError::PermissionDenied(format!(
                "{caller} may not interact with agent {} (rule a), so may not revoke its grants",
                grant.agent_id
            )));
        }
        let reason = match comment {
            Some(c) => format!("revoked by {caller}: {}", bounded(c)),
            None => format!("revoked by {caller}"),
        };
        self.end_grant(grant_id, &reason)?.ok_or_else(|| {
            ElevationError::FailedPrecondition(format!("grant {grant_id} has ended already"))
        })
    }

    /// Ends an active grant durably; `None` when it had ended already.
    pub fn end_grant(&self, grant_id: &str, reason: &str) -> Result<Option<Grant>, ElevationError> {
        let Some(mut grant) = self.lock().grants.get(grant_id).cloned() else {
            return Ok(None);
        };
        if !grant.state.is_active() {
            return Ok(None);
        }
        if let Some(active) = self.engine.grants.remove(grant_id) {
            grant.uses = active.uses.load(std::sync::atomic::Ordering::Acquire);
        }
        self.end_grant_record(&mut grant, reason, SystemTime::now())?;
        self.lock().grants.insert(grant.id.clone(), grant.clone());
        tracing::info!(target: "rampart::audit", grant = %grant.id, reason, "grant ended");
        Ok(Some(grant))
    }

    fn end_grant_record(
        &self,
        grant: &mut Grant,
        reason: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        grant.state = GrantState::Ended;
        grant.ended_reason = Some(reason.to_owned());
        grant.ended_at = Some(now);
        self.store.put_grant(grant)?;
        let record = json!({
            "event": "grant.ended",
            "grant_id": grant.id,
            "principal": grant.principal_id,
            "action": grant.action,
            "scope": grant.scope,
            "on_behalf_of": grant.on_behalf_of,
            "reason": reason,
            "revision": self.engine.current().snapshot.info.revision,
        });
        if let Some(log) = self.audit_log.get() {
            log.write(record.clone());
        }
        self.store.audit(&record)
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
            let reason = if active.expires_at <= now {
                Some("expired")
            } else if active.is_used_up() {
                Some("used up")
            } else {
                None
            };
            if let Some(reason) = reason {
                if let Err(e) = self.end_grant(&active.id, reason) {
                    tracing::error!("cannot end grant {}: {e}", active.id);
                }
            }
        }
    }

    /// Runs [`Broker::sweep`] every `every` until the broker is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
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

    /// Swaps in a new snapshot and ends the grants it no longer supports:
    /// the scope left the agent's managed scopes, or the `onBehalfOf`
    /// principal no longer holds the operation there (docs/agents-and-elevation.md#when-a-grant-ends).
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
            let reason = still_supported(&loaded, &g).err();
            if let Some(reason) = reason {
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

/// Whether the snapshot's roles (no grants) allow `principal` the operation
/// with these request attributes.
fn allows(
    loaded: &Loaded,
    principal: &str,
    action: &str,
    scope: &str,
    data_action: bool,
    attributes: &BTreeMap<String, String>,
) -> bool {
    loaded
        .decide(&Request {
            principal_id: principal,
            action,
            scope,
            data_action,
            attributes,
            explain: false,
            dry_run: true,
        })
        .is_ok_and(|d| d.verdict == Verdict::Allow)
}

/// Whether a snapshot still supports an active grant: its agent is still
/// there with the same identity, the scope is still inside the agent's
/// managed scopes, and the lender (`onBehalfOf`) still holds the operation
/// at the grant's scope with the elevation's attributes. Applied at every
/// snapshot swap and to grants restored at start. The engine also asks the
/// lender on every use, at the request's own scope and attributes, so a
/// grant never lends more than its lender holds even between swaps.
fn still_supported(loaded: &Loaded, g: &Grant) -> Result<(), String> {
    let Some(agent) = agent_by_id(&loaded.snapshot, &g.agent_id) else {
        return Err("the agent is no longer in the snapshot".to_owned());
    };
    let inside = Scope::parse(&g.scope).is_ok_and(|s| {
        agent
            .managed_scopes
            .iter()
            .any(|m| s.is_structurally_within(m))
    });
    let same_identity = principal_key(&loaded.snapshot.tenant.principals[agent.principal].id)
        == principal_key(&g.principal_id);
    if !inside || !same_identity {
        return Err("the scope was removed from the agent's managed scopes".to_owned());
    }
    if !allows(
        loaded,
        &g.on_behalf_of,
        &g.action,
        &g.scope,
        g.data_action,
        &g.attributes,
    ) {
        return Err(format!("{} no longer holds the operation", g.on_behalf_of));
    }
    Ok(())
}

fn agent_of<'s>(snapshot: &'s CompiledSnapshot, principal_id: &str) -> Option<&'s Agent> {
    let p = snapshot.principal(principal_id)?;
    let a = snapshot.agent_of[p as usize]?;
    snapshot.tenant.agents.get(a as usize)
}

fn agent_by_id<'s>(snapshot: &'s CompiledSnapshot, agent_id: &str) -> Option<&'s Agent> {
    snapshot.tenant.agents.iter().find(|a| a.id == agent_id)
}
