//! The decision engine: Azure RBAC evaluation in the order of docs/model.md#decision-order,
//! over a compiled snapshot held behind an atomic pointer.
//!
//! A warm decision is a few hash look-ups and pattern comparisons: the
//! request's scope string maps to its anchor node through a cache, the
//! (principal, anchor) pair maps to its resolved [`Effective`] permissions
//! through another, and only the operation is matched per request. Both
//! caches live inside [`Loaded`], next to the snapshot they describe, so a
//! reload swaps them together and never serves one snapshot's cache with
//! another's data.

pub mod decision;
pub mod effective;
pub mod grants;
pub mod view;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, Guard};
use dashmap::mapref::one::Ref;
use dashmap::DashMap;
use foldhash::fast::RandomState;

pub use decision::{
    Decision, DecisionId, Match, MatchKind, Reason, Request, RequestError, Verdict,
};
pub use effective::{AgentPosition, AssignmentSource, BlockRef, Effective};
pub use grants::{ActiveGrant, GrantTable};

use crate::model::{
    check_operation, check_principal_id, ActionPattern, Condition, ConditionInput, ExecutionMode,
    Scope,
};
use crate::snapshot::{AccessKeyIx, Anchor, CompiledSnapshot, PrincipalIx};

/// Bounds on the caches, so hostile or wide traffic cannot grow memory
/// without limit; past them decisions are computed, not cached.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub scopes: usize,
    pub effective: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            scopes: 200_000,
            effective: 1_000_000,
        }
    }
}

/// How long [`Engine::retire`] waits for the last decisions on a swapped
/// out snapshot.
const RETIRE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A compiled snapshot with the caches that belong to it.
pub struct Loaded {
    pub snapshot: CompiledSnapshot,
    limits: CacheLimits,
    anchors: DashMap<Box<str>, Anchor, RandomState>,
    anchor_count: AtomicUsize,
    effective: DashMap<u64, Effective, RandomState>,
    effective_count: AtomicUsize,
    misses: AtomicU64,
}

/// Cache statistics, for status and metrics. Hits are not counted on the
/// hot path (a shared counter would bounce between cores); the hit ratio is
/// `1 - misses / decisions`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    pub effective_entries: usize,
    pub scope_entries: usize,
    /// Effective-permission resolutions (cache misses).
    pub misses: u64,
}

enum EffectiveRef<'a> {
    Cached(Ref<'a, u64, Effective>),
    Owned(Effective),
}

impl std::ops::Deref for EffectiveRef<'_> {
    type Target = Effective;
    fn deref(&self) -> &Effective {
        match self {
            EffectiveRef::Cached(r) => r.value(),
            EffectiveRef::Owned(e) => e,
        }
    }
}

impl Loaded {
    pub fn new(snapshot: CompiledSnapshot) -> Loaded {
        Loaded::with_limits(snapshot, CacheLimits::default())
    }

    pub fn with_limits(snapshot: CompiledSnapshot, limits: CacheLimits) -> Loaded {
        Loaded {
            snapshot,
            limits,
            anchors: DashMap::with_hasher(RandomState::default()),
            anchor_count: AtomicUsize::new(0),
            effective: DashMap::with_hasher(RandomState::default()),
            effective_count: AtomicUsize::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            effective_entries: self.effective_count.load(Ordering::Relaxed),
            scope_entries: self.anchor_count.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Validates a request scope and finds its anchor; valid scopes seen
    /// before skip the parse.
    pub fn anchor(&self, scope: &str) -> Result<Anchor, RequestError> {
        if let Some(a) = self.anchors.get(scope) {
            return Ok(*a);
        }
        let parsed = Scope::parse(scope)
            .map_err(|e| RequestError::new("scope", format!("scope '{}' {e}", printable(scope))))?;
        let anchor = self.snapshot.anchor(&parsed);
        if self.anchor_count.load(Ordering::Relaxed) < self.limits.scopes
            && self.anchors.insert(scope.into(), anchor).is_none()
        {
            self.anchor_count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(anchor)
    }

    /// The effective permissions of `principal` at `anchor`, resolved once.
    fn effective(&self, principal: PrincipalIx, anchor: Anchor) -> EffectiveRef<'_> {
        let key =
            (u64::from(principal) << 33) | (u64::from(anchor.node) << 1) | u64::from(anchor.exact);
        if let Some(hit) = self.effective.get(&key) {
            return EffectiveRef::Cached(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let resolved = effective::resolve(&self.snapshot, principal, anchor);
        if self.effective_count.load(Ordering::Relaxed) >= self.limits.effective {
            return EffectiveRef::Owned(resolved);
        }
        let entry = self.effective.entry(key);
        if matches!(entry, dashmap::Entry::Vacant(_)) {
            self.effective_count.fetch_add(1, Ordering::Relaxed);
        }
        EffectiveRef::Cached(entry.or_insert(resolved).downgrade())
    }

    /// The effective permissions of a principal at a scope, for admin views.
    pub fn effective_permissions(&self, principal: PrincipalIx, scope: &Scope) -> Effective {
        effective::resolve(&self.snapshot, principal, self.snapshot.anchor(scope))
    }

    /// Decides one request (docs/model.md#decision-order).
    pub fn decide(&self, req: &Request<'_>) -> Result<Decision<'_>, RequestError> {
        self.decide_with(req, None)
    }

    /// Decides one request as the server does: with the approval channel's
    /// state (`live`: active grants, and the freeze switch for agents).
    pub fn decide_with(
        &self,
        req: &Request<'_>,
        live: Option<Live<'_>>,
    ) -> Result<Decision<'_>, RequestError> {
        // 1. Malformed input. A principal found in the snapshot passed the
        // same id check when the snapshot was validated, so only ids that
        // are not found are checked here.
        let snapshot = &self.snapshot;
        let principal = snapshot.principal(req.principal_id);
        if principal.is_none() {
            check_principal_id(req.principal_id).map_err(|e| {
                RequestError::new(
                    "principal_id",
                    format!("principal_id '{}' {e}", printable(req.principal_id)),
                )
            })?;
        }
        let operation = check_operation(req.action).map_err(|e| {
            RequestError::new("action", format!("action '{}' {e}", printable(req.action)))
        })?;
        let anchor = self.anchor(req.scope)?;
        let mut decision = Decision {
            verdict: Verdict::Deny,
            reason: Reason::NoMatchingAssignment,
            read_only: operation.read_only,
            decision_id: DecisionId::next(),
            snapshot_revision: &snapshot.info.revision,
            matches: Vec::new(),
        };

        // 2. Access keys (validation keeps key ids and principal ids apart).
        if principal.is_none() {
            if let Some(key) = snapshot.access_key(req.principal_id) {
                self.decide_key(key, anchor, req, &mut decision);
                return Ok(decision);
            }
        }

        // 3. Unknown principal.
        let Some(principal) = principal else {
            decision.reason = Reason::UnknownPrincipal;
            return Ok(decision);
        };
        let effective = self.effective(principal, anchor);

        // An agent while rampart is frozen: one relaxed load, for agents
        // only.
        if let (Some(_), Some(live)) = (effective.agent, live) {
            if live.frozen.load(Ordering::Relaxed) {
                decision.reason = Reason::Frozen;
                return Ok(decision);
            }
        }

        // 4. An agent outside its managed scopes.
        if let Some(AgentPosition {
            agent,
            in_scope: false,
        }) = effective.agent
        {
            decision.reason = Reason::OutOfAgentScope;
            if req.explain {
                let agent = &snapshot.tenant.agents[agent];
                for scope in &agent.managed_scopes {
                    decision.matches.push(Match::new(
                        MatchKind::AgentScope,
                        &agent.id,
                        scope.as_str(),
                    ));
                }
            }
            return Ok(decision);
        }

        // 5. Deny assignments.
        let tenant = &snapshot.tenant;
        let mut denied = false;
        for &d in effective.denies.iter() {
            let deny = &tenant.deny_assignments[d];
            if deny.covers(req.action, req.data_action) {
                denied = true;
                if !req.explain {
                    break;
                }
                decision.matches.push(Match::new(
                    MatchKind::DenyAssignment,
                    &deny.id,
                    deny.scope.as_str(),
                ));
            }
        }
        if denied {
            decision.reason = Reason::DenyAssignment;
            return Ok(decision);
        }

        // 6. What the roles allow.
        let has = self.allowed_by_roles(&effective, principal, anchor, req);
        if req.explain {
            if has {
                self.explain_sources(&effective, principal, anchor, req, &mut decision.matches);
            } else {
                self.explain_unmet_conditions(
                    &effective,
                    principal,
                    anchor,
                    req,
                    &mut decision.matches,
                );
            }
        }

        // 7, 8. Plain RBAC, or the agent table of docs/agents-and-elevation.md#decision-table, where an active
        // grant counts as `has` and, for a Review-mode write, is the
        // approval to act. The cache entry is released first: asking a
        // grant's lender takes another entry of the same cache, and a
        // shard's lock is not re-entrant.
        let agent = effective.agent;
        // A refusal says when a condition, not the roles, stopped it.
        let condition_unmet = !has
            && agent.is_none()
            && effective.conditional.iter().any(|g| {
                self.evaluate_blocks(g, principal, anchor, req)
                    .any(|outcome| outcome.is_err())
            });
        drop(effective);
        let (verdict, reason) = match agent {
            None if has => (Verdict::Allow, Reason::RoleAssignment),
            None if condition_unmet => (Verdict::Deny, Reason::ConditionNotMet),
            None => (Verdict::Deny, Reason::NoMatchingAssignment),
            Some(position) => {
                let mode = tenant.agents[position.agent].execution_mode;
                let by_roles = match (has, operation.read_only, mode) {
                    (false, _, _) => (Verdict::ApprovalRequired, Reason::NeedsElevation),
                    (true, true, _) | (true, false, ExecutionMode::Auto) => {
                        (Verdict::Allow, Reason::RoleAssignment)
                    }
                    (true, false, ExecutionMode::Review) => {
                        (Verdict::ApprovalRequired, Reason::ReviewModeWrite)
                    }
                };
                let grant = match (by_roles.0, live.map(|l| l.grants)) {
                    (Verdict::ApprovalRequired, Some(table)) if !table.is_empty() => {
                        let p = &tenant.principals[principal];
                        table.find(
                            &crate::model::principal_key(&p.id),
                            req,
                            SystemTime::now(),
                            |grant| self.lender_allows(grant, req),
                        )
                    }
                    _ => None,
                };
                match grant {
                    Some(grant) => {
                        if req.explain {
                            let mut m = Match::new(MatchKind::Grant, &grant.id, &grant.scope);
                            m.pattern = Some(grant.action.to_string());
                            decision.matches.push(m);
                        }
                        (Verdict::Allow, Reason::ElevationGrant)
                    }
                    None => by_roles,
                }
            }
        };
        decision.verdict = verdict;
        decision.reason = reason;
        Ok(decision)
    }

    /// Whether the principal a grant borrows from (`onBehalfOf`) would be
    /// allowed this very request — same operation, scope and attributes —
    /// by the snapshot serving now. A grant lends what its lender holds at
    /// the moment of use and nothing more: a deny assignment below the
    /// grant's scope or an ABAC condition that binds the lender binds the
    /// agent too. Grants are not consulted for the lender, so lending does
    /// not chain. A grant approved by several approvers lends only what
    /// every one of them holds.
    fn lender_allows(&self, grant: &ActiveGrant, req: &Request<'_>) -> bool {
        std::iter::once(&grant.on_behalf_of)
            .chain(grant.co_lenders.iter())
            .all(|lender| {
                let lender = Request {
                    principal_id: lender,
                    explain: false,
                    dry_run: true,
                    ..*req
                };
                self.decide_with(&lender, None)
                    .is_ok_and(|d| d.verdict == Verdict::Allow)
            })
    }

    fn decide_key(
        &self,
        key: AccessKeyIx,
        anchor: Anchor,
        req: &Request<'_>,
        decision: &mut Decision<'_>,
    ) {
        let snapshot = &self.snapshot;
        let access_key = &snapshot.tenant.access_keys[key];
        let key_node = snapshot.access_key_node[key];
        let inside = snapshot.chain(anchor.node).any(|n| n == key_node);
        let disabled = snapshot
            .resource_at
            .get(&key_node)
            .is_some_and(|&r| snapshot.tenant.resources[r].disable_local_auth);
        let (verdict, reason) = if !req.data_action || !inside {
            (Verdict::Deny, Reason::NoMatchingAssignment)
        } else if disabled {
            (Verdict::Deny, Reason::LocalAuthDisabled)
        } else {
            (Verdict::Allow, Reason::KeyAccess)
        };
        decision.verdict = verdict;
        decision.reason = reason;
        if req.explain && reason != Reason::NoMatchingAssignment {
            decision.matches.push(Match::new(
                MatchKind::AccessKey,
                &access_key.id,
                access_key.resource.as_str(),
            ));
        }
        tracing::warn!(
            key_id = %access_key.id,
            action = req.action,
            scope = req.scope,
            decision = reason.as_str(),
            decision_id = %decision.decision_id,
            "access key used"
        );
    }

    /// docs/model.md#role-assignments: some block of some applicable assignment matches the
    /// operation in its allow list and not in its own subtract list.
    #[inline]
    fn allowed_by_roles(
        &self,
        effective: &Effective,
        principal: PrincipalIx,
        anchor: Anchor,
        req: &Request<'_>,
    ) -> bool {
        let roles = &self.snapshot.tenant.role_definitions;
        let blocks = if req.data_action {
            &effective.data_blocks
        } else {
            &effective.control_blocks
        };
        for r in blocks.iter() {
            let (allow, subtract) =
                roles[r.role].permissions[r.block as usize].plane(req.data_action);
            if allow.matches(req.action) && !subtract.matches(req.action) {
                return true;
            }
        }
        effective.conditional.iter().any(|g| {
            self.evaluate_blocks(g, principal, anchor, req)
                .any(|outcome| outcome.is_ok())
        })
    }

    /// The blocks of a source's role whose patterns take the request
    /// (allowed and not subtracted), each evaluated: `Ok(pattern)` when it
    /// allows, `Err(condition)` when a condition of the block or of the
    /// assignment does not hold. Lazy, so an allowing block stops the
    /// evaluation.
    fn evaluate_blocks<'s>(
        &'s self,
        source: &AssignmentSource,
        principal: PrincipalIx,
        anchor: Anchor,
        req: &'s Request<'s>,
    ) -> impl Iterator<Item = Result<&'s ActionPattern, &'s Condition>> + 's {
        let tenant = &self.snapshot.tenant;
        let assignment = &tenant.role_assignments[source.assignment];
        let role = &tenant.role_definitions[assignment.role];
        let assignment_holds = std::cell::Cell::new(None::<bool>);
        role.permissions.iter().filter_map(move |block| {
            let (allow, subtract) = block.plane(req.data_action);
            let pattern = allow.first_match(req.action)?;
            if subtract.matches(req.action) {
                return None;
            }
            if let Some(condition) = &block.condition {
                if !condition.evaluate(&self.condition_input(principal, anchor, req)) {
                    return Some(Err(condition));
                }
            }
            if let Some(condition) = &assignment.condition {
                let holds = assignment_holds.get().unwrap_or_else(|| {
                    let holds = condition.evaluate(&self.condition_input(principal, anchor, req));
                    assignment_holds.set(Some(holds));
                    holds
                });
                if !holds {
                    return Some(Err(condition));
                }
            }
            Some(Ok(pattern))
        })
    }

    fn condition_input<'r>(
        &'r self,
        principal: PrincipalIx,
        anchor: Anchor,
        req: &'r Request<'_>,
    ) -> ConditionInput<'r> {
        let snapshot = &self.snapshot;
        let p = &snapshot.tenant.principals[principal];
        let resource_tags = snapshot
            .chain(anchor.node)
            .find_map(|n| snapshot.resource_at.get(&n))
            .map(|&r| &snapshot.tenant.resources[r].tags);
        ConditionInput {
            action: req.action,
            data_action: req.data_action,
            principal_id: &p.id,
            principal_type: p.kind,
            principal_attributes: &p.attributes,
            scope: req.scope,
            resource_tags,
            request_attributes: req.attributes,
        }
    }

    /// A role-assignment match for explanations.
    fn assignment_match(&self, source: &AssignmentSource, kind: MatchKind) -> Match {
        let tenant = &self.snapshot.tenant;
        let assignment = &tenant.role_assignments[source.assignment];
        let role = &tenant.role_definitions[assignment.role];
        Match {
            kind,
            id: assignment.id.clone(),
            role_id: role.id.clone(),
            role_name: role.role_name.clone(),
            scope: assignment.scope.as_str().to_owned(),
            via_group: source.via.map(|v| tenant.principals[v].id.clone()),
            derived_from_agent: assignment
                .derived_from_agent
                .map(|a| tenant.agents[a].id.clone()),
            pattern: None,
            condition: None,
        }
    }

    /// Explains a refusal by roles: the assignments whose patterns take the
    /// operation but whose condition does not hold.
    fn explain_unmet_conditions(
        &self,
        effective: &Effective,
        principal: PrincipalIx,
        anchor: Anchor,
        req: &Request<'_>,
        out: &mut Vec<Match>,
    ) {
        for g in effective.conditional.iter() {
            for outcome in self.evaluate_blocks(g, principal, anchor, req) {
                if let Err(condition) = outcome {
                    let mut m = self.assignment_match(g, MatchKind::ConditionNotMet);
                    m.condition = Some(condition.as_str().to_owned());
                    out.push(m);
                    break;
                }
            }
        }
    }

    /// Explains an allow by roles: the applicable assignments with a block
    /// that allows the operation.
    fn explain_sources(
        &self,
        effective: &Effective,
        principal: PrincipalIx,
        anchor: Anchor,
        req: &Request<'_>,
        out: &mut Vec<Match>,
    ) {
        for g in effective.sources.iter() {
            let allowing = self
                .evaluate_blocks(g, principal, anchor, req)
                .find_map(Result::ok);
            if let Some(pattern) = allowing {
                let mut m = self.assignment_match(g, MatchKind::RoleAssignment);
                m.pattern = Some(pattern.as_str().to_owned());
                out.push(m);
            }
        }
    }
}

/// Input echoed in an error message, cut short and with control
/// characters escaped, so a hostile value cannot flood or forge log lines.
fn printable(text: &str) -> String {
    const MAX: usize = 120;
    let mut out: String = text
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// The engine: the current [`Loaded`] snapshot behind an atomic pointer.
/// Readers never wait for a reload; a reload is a pointer swap.
pub struct Engine {
    current: ArcSwap<Loaded>,
    last_failure: Mutex<Option<LoadFailure>>,
    /// Active elevation grants; they outlive snapshot swaps.
    pub grants: GrantTable,
    /// While set, every agent decision is DENY with reason FROZEN; grants
    /// stay in the table, unused, until it is cleared. The broker owns it.
    frozen: AtomicBool,
}

/// What the approval channel adds to a snapshot's answers: the active
/// grants and the freeze switch. Borrowed from the [`Engine`].
#[derive(Clone, Copy)]
pub struct Live<'a> {
    pub grants: &'a GrantTable,
    pub frozen: &'a AtomicBool,
}

impl<'a> Live<'a> {
    /// `grants` with no freeze switch (tools, fuzzing and benches that
    /// hold a [`GrantTable`] without an [`Engine`]).
    pub fn unfrozen(grants: &'a GrantTable) -> Live<'a> {
        static NEVER: AtomicBool = AtomicBool::new(false);
        Live {
            grants,
            frozen: &NEVER,
        }
    }
}

/// A snapshot that failed to load while another kept serving.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub message: String,
    pub at: SystemTime,
}

impl Engine {
    pub fn new(snapshot: CompiledSnapshot) -> Engine {
        Engine {
            current: ArcSwap::from_pointee(Loaded::new(snapshot)),
            last_failure: Mutex::new(None),
            grants: GrantTable::default(),
            frozen: AtomicBool::new(false),
        }
    }

    /// The grants and the freeze switch, for [`Loaded::decide_with`].
    #[inline]
    pub fn live(&self) -> Live<'_> {
        Live {
            grants: &self.grants,
            frozen: &self.frozen,
        }
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Acquire)
    }

    /// Freezes or unfreezes agent decisions (the broker's freeze).
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::Release);
    }

    /// Records a failed load; the serving snapshot is untouched.
    pub fn record_failure(&self, message: String) {
        let failure = LoadFailure {
            message,
            at: SystemTime::now(),
        };
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(failure);
    }

    /// The most recent failed load, if the latest attempt failed.
    pub fn last_failure(&self) -> Option<LoadFailure> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The snapshot serving now; hold it for the length of one decision.
    #[inline]
    pub fn current(&self) -> Guard<Arc<Loaded>> {
        self.current.load()
    }

    /// The snapshot serving now, as an owned pointer that may be held across
    /// awaits.
    pub fn current_arc(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Swaps in a new snapshot, with empty caches of its own.
    pub fn swap(&self, snapshot: CompiledSnapshot) -> Arc<Loaded> {
        let previous = self.current.swap(Arc::new(Loaded::new(snapshot)));
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        previous
    }

    /// Frees a snapshot swapped out, on the calling (reloading) thread.
    /// Freeing a large one takes milliseconds; if the decision in flight
    /// that still held it dropped the last reference, that request would
    /// pay for it. Decisions hold a snapshot for microseconds, so this waits
    /// (a bounded while) for them to let go first.
    pub fn retire(previous: Arc<Loaded>) {
        let deadline = std::time::Instant::now() + RETIRE_WAIT;
        while Arc::strong_count(&previous) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(previous);
        crate::snapshot::release_free_memory();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = r#"
revision: r1
principals:
  - { id: alice, type: User }
  - { id: mi, type: ManagedIdentity }
roleAssignments:
  - { id: ra-alice, principal: alice, role: Reader, scope: /subscriptions/s1 }
agents:
  - id: ag
    principal: mi
    resource: /subscriptions/s1/resourceGroups/rg/providers/Microsoft.App/agents/ag
    managedScopes: [/subscriptions/s1/resourceGroups/rg]
    permissionLevel: Reader
    executionMode: Review
"#;

    fn decide(engine: &Engine, principal: &str, scope: &str, live: bool) -> (Verdict, Reason) {
        let loaded = engine.current();
        let none: &[(&str, &str)] = &[];
        let req = Request {
            principal_id: principal,
            action: "Microsoft.Compute/virtualMachines/read",
            scope,
            data_action: false,
            attributes: &none,
            explain: false,
            dry_run: false,
        };
        let d = loaded
            .decide_with(&req, live.then(|| engine.live()))
            .unwrap_or_else(|e| panic!("{e}"));
        (d.verdict, d.reason)
    }

    #[test]
    fn a_freeze_denies_agents_only_and_only_where_the_server_decides() {
        let engine = Engine::new(
            crate::snapshot::load_str(SNAPSHOT, "test").unwrap_or_else(|e| panic!("{e}")),
        );
        let rg = "/subscriptions/s1/resourceGroups/rg";
        let outside = "/subscriptions/s1/resourceGroups/other";
        assert_eq!(
            decide(&engine, "mi", rg, true),
            (Verdict::Allow, Reason::RoleAssignment)
        );
        engine.set_frozen(true);
        assert!(engine.is_frozen());
        assert_eq!(
            decide(&engine, "mi", rg, true),
            (Verdict::Deny, Reason::Frozen)
        );
        // Before the agent's scope check: FROZEN is the one answer.
        assert_eq!(
            decide(&engine, "mi", outside, true),
            (Verdict::Deny, Reason::Frozen)
        );
        // People, and unknown principals, are unaffected.
        assert_eq!(
            decide(&engine, "alice", rg, true),
            (Verdict::Allow, Reason::RoleAssignment)
        );
        assert_eq!(
            decide(&engine, "nobody", rg, true),
            (Verdict::Deny, Reason::UnknownPrincipal)
        );
        // Offline answers (no live state: `rampart check`, lenders) ignore it.
        assert_eq!(
            decide(&engine, "mi", rg, false),
            (Verdict::Allow, Reason::RoleAssignment)
        );
        engine.set_frozen(false);
        assert_eq!(
            decide(&engine, "mi", rg, true),
            (Verdict::Allow, Reason::RoleAssignment)
        );
    }

    #[test]
    fn frozen_has_one_spelling() {
        assert_eq!(Reason::Frozen.as_str(), "FROZEN");
        assert_eq!(
            serde_json::to_string(&Reason::Frozen).unwrap_or_default(),
            "\"FROZEN\""
        );
        assert_eq!(crate::proto::Reason::Frozen.as_str_name(), "FROZEN");
        assert!(Reason::ALL.contains(&Reason::Frozen));
    }
}
