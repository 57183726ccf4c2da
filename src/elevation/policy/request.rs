//! What a RequestElevation becomes (docs/agents-and-elevation.md#requestelevation):
//! the checks on its text, the question put to the engine, and the
//! elevation it creates or joins.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::elevation::types::new_id;
use crate::elevation::{Elevation, ElevationError, ElevationState};
use crate::engine::{Decision, Reason, Request};
use crate::model::{principal_key, Agent};

use super::{approval, bounded, exact, MAX_TEXT};

/// The default wait for a decision (docs/agents-and-elevation.md#requestelevation).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);

/// What an agent asks for.
#[derive(Default)]
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
    /// A ticket reference (blank: none); required where the agent's
    /// approval policy says `requireTicket`.
    pub ticket: &'a str,
    /// The HTTP request this is for, when known; its digest is in
    /// `attributes` too ([`exact::DIGEST_ATTRIBUTE`]).
    pub exact: Option<exact::ExactRequest>,
}

impl ElevationRequest<'_> {
    /// The question for the engine: Authorize's answer, without taking a
    /// use of any grant (asking is not acting).
    pub fn question(&self) -> Request<'_> {
        Request {
            principal_id: self.principal_id,
            action: self.action,
            scope: self.scope,
            data_action: self.data_action,
            attributes: &self.attributes,
            explain: false,
            dry_run: true,
        }
    }
}

/// A justification is required and at most [`MAX_TEXT`] characters.
pub fn check_justification(text: &str) -> Result<(), ElevationError> {
    if text.trim().is_empty() {
        return Err(ElevationError::InvalidRequest {
            field: "justification",
            message: "justification is required: say why the agent needs this".into(),
        });
    }
    if text.chars().count() > MAX_TEXT {
        return Err(ElevationError::InvalidRequest {
            field: "justification",
            message: format!("justification is longer than {MAX_TEXT} characters"),
        });
    }
    Ok(())
}

/// The elevation `r` creates when Authorize requires approval, and how
/// long its caller waits: the agent's limits and its approval policy cap
/// the caller's wait and duration; a policy's `requireTicket` refuses a
/// request without a ticket.
pub fn pending(
    r: &ElevationRequest<'_>,
    agent: &Agent,
    decision: &Decision<'_>,
    now: SystemTime,
) -> Result<(Elevation, Duration), ElevationError> {
    let policy = approval::requirement(agent, r.action, r.scope, r.data_action);
    let ticket = approval::check_ticket(r.ticket, policy.require_ticket)?;
    let wait = r
        .wait_timeout
        .unwrap_or(DEFAULT_WAIT)
        .min(agent.elevation.max_wait);
    let mut duration = r
        .requested_duration
        .unwrap_or(agent.elevation.default_duration)
        .min(agent.elevation.max_duration);
    if let Some(max) = policy.max_duration {
        duration = duration.min(max);
    }
    let elevation = Elevation {
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
        ticket,
        required_approvals: policy.required,
        approvals: Vec::new(),
        shadow: Vec::new(),
        request: r.exact.clone(),
        waiters: 1,
    };
    Ok((elevation, wait))
}

/// The answer when Authorize already allows `r`: `NOT_NEEDED`, resolved at
/// once and neither stored nor published.
pub fn not_needed(
    r: &ElevationRequest<'_>,
    agent: Option<&Agent>,
    read_only: bool,
    now: SystemTime,
) -> Elevation {
    Elevation {
        id: new_id(),
        principal_id: r.principal_id.to_owned(),
        agent_id: agent.map(|a| a.id.clone()).unwrap_or_default(),
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
        ticket: approval::check_ticket(r.ticket, false).ok().flatten(),
        required_approvals: 0,
        approvals: Vec::new(),
        shadow: Vec::new(),
        request: None,
        waiters: 0,
    }
}

/// What makes two requests identical, so the second joins the first:
/// (principal key, lowercase action, lowercase scope, plane, attributes).
pub type PendingKey = (String, String, String, bool, BTreeMap<String, String>);

pub fn pending_key(e: &Elevation) -> PendingKey {
    key_of(
        &e.principal_id,
        &e.action,
        &e.scope,
        e.data_action,
        &e.attributes,
    )
}

/// The joining key of a request not yet an elevation.
pub fn key_of(
    principal_id: &str,
    action: &str,
    scope: &str,
    data_action: bool,
    attributes: &BTreeMap<String, String>,
) -> PendingKey {
    (
        principal_key(principal_id).into_owned(),
        action.to_ascii_lowercase(),
        scope.to_ascii_lowercase(),
        data_action,
        attributes.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use super::super::{agent_by_id, agent_of};
    use super::*;
    use crate::engine::Verdict;

    fn ask<'a>(principal: &'a str, justification: &'a str) -> ElevationRequest<'a> {
        ElevationRequest {
            principal_id: principal,
            action: RESTART,
            scope: VM,
            data_action: false,
            justification,
            requested_duration: None,
            wait_timeout: None,
            attributes: BTreeMap::new(),
            ticket: "",
            exact: None,
        }
    }

    #[test]
    fn a_justification_is_required_and_bounded() {
        let blank = check_justification(" \n\t").err().map(|e| e.to_string());
        assert_eq!(
            blank.as_deref(),
            Some("justification: justification is required: say why the agent needs this")
        );
        assert!(check_justification(&"é".repeat(MAX_TEXT)).is_ok());
        let long = check_justification(&"é".repeat(MAX_TEXT + 1));
        assert!(matches!(
            long,
            Err(ElevationError::InvalidRequest {
                field: "justification",
                ..
            })
        ));
    }

    #[test]
    fn the_question_is_a_dry_run_that_explains_nothing() {
        let r = ask(AGENT_R, "why");
        let q = r.question();
        assert!(q.dry_run && !q.explain && !q.consumes_grants());
        assert_eq!((q.principal_id, q.action, q.scope), (AGENT_R, RESTART, VM));
    }

    #[test]
    fn a_pending_elevation_takes_the_agents_limits() {
        let loaded = loaded();
        let agent = agent_by_id(&loaded.snapshot, "auto").unwrap_or_else(|| panic!());
        let mut r = ask(AGENT_A, "disk pressure");
        r.requested_duration = Some(Duration::from_secs(10 * 3600));
        r.wait_timeout = Some(Duration::from_secs(24 * 3600));
        let decision = loaded
            .decide(&r.question())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decision.verdict, Verdict::ApprovalRequired);
        let now = SystemTime::now();
        let (e, wait) = pending(&r, agent, &decision, now).unwrap_or_else(|e| panic!("{e}"));
        // maxDuration: 1h in the fixture; the wait is capped by max_wait.
        assert_eq!(e.requested_duration, Duration::from_secs(3600));
        assert_eq!(wait, agent.elevation.max_wait);
        assert_eq!(e.wait_deadline, now + wait);
        assert_eq!(
            (e.state, e.waiters, e.reason),
            (ElevationState::Pending, 1, Reason::NeedsElevation)
        );
        assert_eq!(e.agent_id, "auto");
        // Silent on duration and wait: the defaults.
        let r = ask(AGENT_A, "disk pressure");
        let (e, wait) = pending(&r, agent, &decision, now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.requested_duration, agent.elevation.default_duration);
        assert_eq!(wait, DEFAULT_WAIT.min(agent.elevation.max_wait));
    }

    #[test]
    fn an_approval_policy_caps_the_duration_records_the_bar_and_may_require_a_ticket() {
        let yaml = SNAPSHOT.replace(
            "      maxDuration: 1h\n",
            "      maxDuration: 1h\n      approvalPolicies:\n        - { actions: [\"Microsoft.Compute/*\"], required: 2, requireTicket: true, maxDuration: 20m }\n",
        );
        let loaded = loaded_from(&yaml);
        let agent = agent_by_id(&loaded.snapshot, "auto").unwrap_or_else(|| panic!());
        let mut r = ask(AGENT_A, "disk pressure");
        let decision = loaded
            .decide(&r.question())
            .unwrap_or_else(|e| panic!("{e}"));
        let now = SystemTime::now();
        let refused = pending(&r, agent, &decision, now).err();
        assert!(matches!(
            refused,
            Some(ElevationError::InvalidRequest {
                field: "ticket",
                ..
            })
        ));
        r.ticket = "INC-7";
        r.requested_duration = Some(Duration::from_secs(3600));
        let (e, _) = pending(&r, agent, &decision, now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.ticket.as_deref(), Some("INC-7"));
        assert_eq!(e.required_approvals, 2);
        assert_eq!(e.requested_duration, Duration::from_secs(20 * 60));
    }

    #[test]
    fn not_needed_is_resolved_at_once_by_rampart() {
        let loaded = loaded();
        let r = ask("oncall", "just checking");
        let e = not_needed(
            &r,
            agent_of(&loaded.snapshot, "oncall"),
            false,
            SystemTime::now(),
        );
        assert_eq!(e.state, ElevationState::NotNeeded);
        assert_eq!(e.agent_id, "");
        assert_eq!(e.resolved_by.as_deref(), Some("rampart"));
        assert_eq!(e.waiters, 0);
    }

    #[test]
    fn identical_requests_share_a_key_ignoring_case_of_operation_scope_and_guids() {
        let a = elevation(AGENT_R, "reviewer", RESTART, VM);
        let mut b = elevation(
            &AGENT_R.to_ascii_uppercase(),
            "reviewer",
            &RESTART.to_ascii_uppercase(),
            &VM.to_ascii_lowercase(),
        );
        assert_eq!(pending_key(&a), pending_key(&b));
        b.data_action = true;
        assert_ne!(pending_key(&a), pending_key(&b));
        b.data_action = false;
        b.attributes.insert("k".into(), "v".into());
        assert_ne!(pending_key(&a), pending_key(&b));
        let other = elevation("Agent-A", "auto", RESTART, VM);
        assert_ne!(
            pending_key(&other),
            pending_key(&elevation("agent-a", "auto", RESTART, VM))
        );
    }
}
