//! Upkeep: the sweeper that expires what timed out and purges what is past
//! retention, and a new snapshot ending what it no longer supports.

use super::*;

impl Broker {
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
    pub(super) fn expire_abandoned(&self, now: SystemTime) {
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

    pub(super) fn cancel_pending_locked(&self, writer: &MutexGuard<'_, ()>, by: &str, why: &str) {
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
}
