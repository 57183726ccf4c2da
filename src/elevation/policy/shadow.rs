//! Shadow auto-approve (docs/agents-and-elevation.md#shadow-auto-approve):
//! auto-approve rules marked `shadow: true` are evaluated on every new
//! elevation — of Review-mode agents too — and never act. The elevation
//! records what each matching one would have done; once a human decides,
//! the verdicts are tallied as agreeing or disagreeing with the decision,
//! so a team can measure a rule before trusting it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::elevation::{Elevation, ElevationState, ShadowOutcome, ShadowVerdict};
use crate::engine::Loaded;
use crate::model::{Agent, Scope};

use super::auto_approve::{matches, Window};
use super::{allows, approval};

/// What every shadow rule of `agent` matching `elevation` would do at
/// `now`, given the approvals shadow rules would already have made in
/// `window`. An elevation whose scope does not parse matches none.
pub fn verdicts(
    loaded: &Loaded,
    agent: &Agent,
    elevation: &Elevation,
    window: &Window,
    now: SystemTime,
) -> Vec<ShadowVerdict> {
    let rules = &agent.elevation.auto_approve;
    if !rules.iter().any(|r| r.shadow) {
        return Vec::new();
    }
    let Ok(scope) = Scope::parse(&elevation.scope) else {
        return Vec::new();
    };
    let tenant = &loaded.snapshot.tenant;
    // As live, no rule answers where the approval policy wants several.
    let several = approval::requirement_of(agent, elevation).required > 1;
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if !rule.shadow || !matches(rule, elevation, &scope) {
            continue;
        }
        let on_behalf_of = &tenant.principals[rule.on_behalf_of].id;
        let holds = allows(
            loaded,
            on_behalf_of,
            &elevation.action,
            &elevation.scope,
            elevation.data_action,
            &elevation.attributes,
        );
        let spent = rule
            .max_per_hour
            .is_some_and(|max| window.count(&agent.id, i, now) >= max as usize);
        out.push(ShadowVerdict {
            rule: i,
            outcome: if holds && !spent && !several {
                ShadowOutcome::WouldApprove
            } else {
                ShadowOutcome::WouldSkip
            },
            on_behalf_of: on_behalf_of.clone(),
        });
    }
    out
}

/// The rules among `verdicts` whose would-be approval counts towards their
/// `maxPerHour`, once the elevation is filed.
pub fn counted_rules(agent: &Agent, verdicts: &[ShadowVerdict]) -> Vec<usize> {
    verdicts
        .iter()
        .filter(|v| v.outcome == ShadowOutcome::WouldApprove)
        .filter(|v| {
            agent
                .elevation
                .auto_approve
                .get(v.rule)
                .is_some_and(|rule| rule.max_per_hour.is_some())
        })
        .map(|v| v.rule)
        .collect()
}

/// A human decision a shadow verdict is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HumanDecision {
    Approved,
    Denied,
}

impl HumanDecision {
    /// The decision of an elevation resolved to `state` by `resolved_by`:
    /// none for one that expired, was cancelled or was approved by a (live)
    /// auto-approve rule.
    pub fn of(state: ElevationState, resolved_by: &str) -> Option<HumanDecision> {
        match state {
            ElevationState::Approved if !resolved_by.starts_with("auto-approve:") => {
                Some(HumanDecision::Approved)
            }
            ElevationState::Denied => Some(HumanDecision::Denied),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HumanDecision::Approved => "APPROVED",
            HumanDecision::Denied => "DENIED",
        }
    }
}

/// Whether a shadow rule would have done what the human did: approving
/// what was approved, or not approving what was denied.
pub fn agrees(outcome: ShadowOutcome, decision: HumanDecision) -> bool {
    matches!(
        (outcome, decision),
        (ShadowOutcome::WouldApprove, HumanDecision::Approved)
            | (ShadowOutcome::WouldSkip, HumanDecision::Denied)
    )
}

/// One cell of the tally: agent, rule, what the rule would have done,
/// what the human did.
pub type TallyKey = (String, usize, ShadowOutcome, HumanDecision);

/// The shadow verdicts of humanly decided elevations, counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub counts: BTreeMap<TallyKey, u64>,
}

impl Tally {
    /// Counts the verdicts of `e`, resolved; nothing for an elevation no
    /// human decided.
    pub fn record(&mut self, e: &Elevation) {
        let by = e.resolved_by.as_deref().unwrap_or_default();
        let Some(decision) = HumanDecision::of(e.state, by) else {
            return;
        };
        for v in &e.shadow {
            *self
                .counts
                .entry((e.agent_id.clone(), v.rule, v.outcome, decision))
                .or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::agent_by_id;
    use super::super::fixture::*;
    use super::*;

    /// The policy fixture with shadow rules on both agents: restarts on
    /// behalf of oncall (who holds them, at most once an hour) and on
    /// behalf of viewer (who does not).
    fn shadowed() -> Loaded {
        let yaml = SNAPSHOT.replace(
            "    executionMode: Review\n",
            "    executionMode: Review\n    elevation:\n      autoApprove:\n        - { actions: [\"Microsoft.Compute/virtualMachines/restart/action\"], onBehalfOf: oncall, maxPerHour: 1, shadow: true }\n        - { actions: [\"Microsoft.Compute/virtualMachines/restart/action\"], onBehalfOf: viewer, shadow: true }\n        - { actions: [\"Microsoft.Compute/virtualMachines/delete\"], onBehalfOf: oncall, shadow: true }\n",
        );
        loaded_from(&yaml)
    }

    #[test]
    fn every_matching_shadow_rule_says_what_it_would_do() {
        let loaded = shadowed();
        let agent = agent_by_id(&loaded.snapshot, "reviewer").unwrap_or_else(|| panic!());
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let now = SystemTime::now();
        let v = verdicts(&loaded, agent, &e, &Window::default(), now);
        // Only rule 0 has a maxPerHour to count towards.
        assert_eq!(counted_rules(agent, &v), [0]);
        assert_eq!(
            v,
            [
                ShadowVerdict {
                    rule: 0,
                    outcome: ShadowOutcome::WouldApprove,
                    on_behalf_of: "oncall".into()
                },
                ShadowVerdict {
                    rule: 1,
                    outcome: ShadowOutcome::WouldSkip,
                    on_behalf_of: "viewer".into()
                },
            ]
        );
        // Its maxPerHour spent, rule 0 would skip too.
        let mut window = Window::default();
        window.record("reviewer", 0, now);
        let v = verdicts(&loaded, agent, &e, &window, now + Duration::from_secs(1));
        assert_eq!(v[0].outcome, ShadowOutcome::WouldSkip);
        // Nothing matches an operation no shadow rule names.
        let other = elevation(AGENT_R, "reviewer", ASSIGN, APP);
        assert!(verdicts(&loaded, agent, &other, &Window::default(), now).is_empty());
    }

    #[test]
    fn live_rules_are_not_shadows_and_shadows_never_approve() {
        let loaded = loaded();
        let auto = agent_by_id(&loaded.snapshot, "auto").unwrap_or_else(|| panic!());
        let e = elevation(AGENT_A, "auto", RESTART, VM);
        assert!(verdicts(&loaded, auto, &e, &Window::default(), SystemTime::now()).is_empty());
        let shadowed = shadowed();
        let reviewer = agent_by_id(&shadowed.snapshot, "reviewer").unwrap_or_else(|| panic!());
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let outcome = super::super::auto_approve::choose(
            &shadowed,
            reviewer,
            &e,
            &Window::default(),
            SystemTime::now(),
        );
        assert_eq!(outcome.choice, None);
    }

    #[test]
    fn verdicts_agree_with_a_human_decision_or_not() {
        use HumanDecision::*;
        use ShadowOutcome::*;
        assert!(agrees(WouldApprove, Approved));
        assert!(agrees(WouldSkip, Denied));
        assert!(!agrees(WouldApprove, Denied));
        assert!(!agrees(WouldSkip, Approved));
        assert_eq!(
            HumanDecision::of(ElevationState::Approved, "oncall"),
            Some(Approved)
        );
        assert_eq!(
            HumanDecision::of(ElevationState::Approved, "auto-approve:auto#1"),
            None
        );
        assert_eq!(
            HumanDecision::of(ElevationState::Denied, "oncall"),
            Some(Denied)
        );
        assert_eq!(HumanDecision::of(ElevationState::Expired, "rampart"), None);
        assert_eq!(
            HumanDecision::of(ElevationState::Cancelled, "rampart"),
            None
        );
    }

    #[test]
    fn the_tally_counts_humanly_decided_elevations_only() {
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        e.shadow = vec![ShadowVerdict {
            rule: 0,
            outcome: ShadowOutcome::WouldApprove,
            on_behalf_of: "oncall".into(),
        }];
        let mut tally = Tally::default();
        tally.record(&e); // still pending
        e.state = ElevationState::Expired;
        e.resolved_by = Some("rampart".into());
        tally.record(&e);
        assert!(tally.counts.is_empty());
        e.state = ElevationState::Denied;
        e.resolved_by = Some("oncall".into());
        tally.record(&e);
        tally.record(&e);
        assert_eq!(
            tally.counts.get(&(
                "reviewer".to_owned(),
                0,
                ShadowOutcome::WouldApprove,
                HumanDecision::Denied
            )),
            Some(&2)
        );
    }
}
