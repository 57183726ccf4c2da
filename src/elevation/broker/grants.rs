//! Active grants: revoked, ended, and the uses of limited ones recorded
//! and reserved.

use super::*;

impl Broker {
    /// An active grant from memory, with its uses as the engine counts them.
    pub(super) fn live_grant(&self, id: &str) -> Option<Grant> {
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
    pub(super) fn end_grant_locked(
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

    /// Adds the uses taken here since the last record to the shared store:
    /// the grant as stored after (`None`: nothing new to record).
    pub(super) fn record_uses(
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
}
