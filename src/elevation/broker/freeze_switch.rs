//! The freeze switch: set here or seen in a shared store, it stops every
//! grant and auto-approval until lifted (docs/agents-and-elevation.md#freeze).

use super::*;

impl Broker {
    pub(super) fn freeze_lock(&self) -> MutexGuard<'_, FreezeState> {
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
    pub(super) fn apply_freeze(
        &self,
        writer: &MutexGuard<'_, ()>,
        state: FreezeState,
        record: bool,
    ) {
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
    pub(super) fn sync_freeze(&self) {
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
}
