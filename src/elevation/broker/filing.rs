//! An agent asks: its elevation is joined to an identical pending one or
//! filed durably, and the caller waits for the resolution, its deadline or
//! its own departure.

use super::*;

impl Broker {
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
    pub(super) fn join_or_open(
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

    /// Waits until the elevation is resolved or `deadline` passes.
    pub(super) async fn wait(
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
    pub(super) fn leave_pending(&self, id: &str) -> Option<Elevation> {
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
    pub(super) fn left(&self, id: &str) -> Result<Option<Elevation>, StoreError> {
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
    pub(super) fn wait_expired(&self, id: &str) -> Result<Elevation, ElevationError> {
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
    pub(super) fn leave(&self, id: &str) {
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
}
