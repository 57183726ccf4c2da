//! A store shared by a fleet of replicas: memory follows the store's change
//! sequence, so what any replica filed, resolved or ended is live here too.

use super::*;

impl Broker {
    /// Starts a replica of a fleet: the active grants are honoured (with
    /// no use reserved here yet), the pending elevations stay pending —
    /// their callers wait on other replicas — and following starts after
    /// the change they were read at.
    pub(super) fn restore_shared(&self, shared: &dyn SharedState) -> Result<(), StoreError> {
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

    /// [`Broker::join_or_open`] on a shared store: the store joins or
    /// files, within the limits counted across the fleet, in one
    /// transaction.
    #[allow(clippy::type_complexity)]
    pub(super) fn join_or_open_shared(
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
                    // Filed by another replica, which told its own watchers.
                    self.publish_elsewhere(&stored);
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

    /// Honours a grant another replica wrote: when callers wait here on its
    /// elevation, the agent is here, and a block of its uses is reserved
    /// before they are answered; elsewhere uses are reserved once wanted.
    pub(super) fn adopt_remote(&self, shared: &dyn SharedState, g: Grant) {
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
    pub(super) fn apply_change(&self, shared: &dyn SharedState, change: Change) {
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
                        self.publish_elsewhere(&current);
                    }
                    return;
                }
                inner.mirror((*e).clone());
                drop(inner);
                self.publish_elsewhere(&e);
            }
            Change::Elevation(e, mine) => {
                let here = self.lock().pending.contains_key(&e.id);
                if here {
                    self.apply(&e, None, mine);
                }
                if !mine {
                    self.publish_elsewhere(&e);
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

    /// [`Broker::reserve_uses`] on a shared store: a block more for each
    /// limited grant used here or wanted here (a use was refused) whose
    /// uses reserved here are running low, while any are left.
    pub(super) fn reserve_shared(&self, shared: &dyn SharedState) {
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

    /// [`Broker::sweep`]'s grant half on a shared store: uses recorded
    /// across the fleet, a grant used up when the fleet's uses reach
    /// `maxUses`.
    pub(super) fn sweep_shared(&self, shared: &dyn SharedState, now: SystemTime) {
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

    /// [`Broker::cancel_all_pending`] for a replica of a fleet: its callers
    /// leave; an elevation nobody else waits on is cancelled, one that
    /// callers on other replicas wait on stays pending for them.
    pub(super) fn leave_all_pending(
        &self,
        writer: &MutexGuard<'_, ()>,
        shared: &dyn SharedState,
        why: &str,
    ) {
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
}
