//! A human or an auto-approve rule decides: who may approve what is asked
//! by [`crate::elevation::policy`]; this file takes the broker's locks and
//! stores the outcome.

use super::*;

impl Broker {
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
    pub(super) fn agent_of_elevation<'l>(
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
    pub(super) fn update_pending(&self, e: &Elevation) {
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
    pub(super) fn pending(&self, id: &str) -> Result<Elevation, ElevationError> {
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
    pub(super) fn try_auto_approve(
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
    pub(super) fn auto_outcome(
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

    pub(super) fn log_skipped(&self, agent: &Agent, outcome: &auto_approve::Outcome) {
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
}
