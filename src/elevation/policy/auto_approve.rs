//! The auto-approve policy (docs/agents-and-elevation.md#auto-approve) of an
//! Auto-mode agent: the first rule that matches the elevation, whose
//! `onBehalfOf` holds the operation and whose `maxPerHour` is not spent,
//! approves it on that principal's behalf.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::elevation::Elevation;
use crate::engine::Loaded;
use crate::model::{Agent, AutoApproveRule, Scope};

use super::{allows, approval};

/// The span `maxPerHour` counts over.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// When each rule approved within the last [`WINDOW`], per (agent id, rule
/// index); only rules with a `maxPerHour` are tracked.
#[derive(Debug, Default)]
pub struct Window {
    approvals: HashMap<(String, usize), VecDeque<SystemTime>>,
}

impl Window {
    /// Approvals by rule `rule` of `agent` within the window ending `now`.
    pub fn count(&self, agent: &str, rule: usize, now: SystemTime) -> usize {
        self.approvals
            .get(&(agent.to_owned(), rule))
            .map_or(0, |times| times.iter().filter(|t| recent(**t, now)).count())
    }

    /// Records an approval by rule `rule` of `agent` at `now`, forgetting
    /// the ones that left the window.
    pub fn record(&mut self, agent: &str, rule: usize, now: SystemTime) {
        let times = self.approvals.entry((agent.to_owned(), rule)).or_default();
        while times.front().is_some_and(|t| !recent(*t, now)) {
            times.pop_front();
        }
        times.push_back(now);
    }
}

fn recent(at: SystemTime, now: SystemTime) -> bool {
    now.duration_since(at).unwrap_or_default() <= WINDOW
}

/// The rule that approves, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The rule's index in the agent's `autoApprove` list.
    pub rule: usize,
    /// Whose permission the grant lends.
    pub on_behalf_of: String,
    /// The requested duration, capped by the rule's `maxDuration`.
    pub duration: Duration,
    /// Whether the rule has a `maxPerHour`: the approval must then be
    /// recorded in the [`Window`].
    pub counted: bool,
}

impl Choice {
    /// Who resolved the elevation, as `resolved_by` and the audit say it.
    pub fn resolved_by(&self, agent: &Agent) -> String {
        format!("auto-approve:{}#{}", agent.id, self.rule)
    }
}

/// A rule that matched the elevation but did not approve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// Its `onBehalfOf` does not hold the operation.
    LenderLacks { rule: usize, on_behalf_of: String },
    /// Its `maxPerHour` approvals are spent.
    HourlyLimit { rule: usize, max_per_hour: u32 },
    /// The agent's approval policy wants several human approvers for this
    /// elevation: no rule answers for them (a two-person rule is not one
    /// rule's to waive).
    SeveralApprovers { required: u32 },
}

/// What the policy decided, with the matching rules it skipped (for logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub choice: Option<Choice>,
    pub skipped: Vec<Skipped>,
}

/// Whether `rule` covers the elevation's operation, scope, plane and kind.
pub fn matches(rule: &AutoApproveRule, elevation: &Elevation, scope: &Scope) -> bool {
    rule.actions.iter().any(|p| p.matches(&elevation.action))
        && (rule.scopes.is_empty() || rule.scopes.iter().any(|s| scope.is_structurally_within(s)))
        && rule.data_action.is_none_or(|d| d == elevation.data_action)
        && rule.read_only.is_none_or(|r| r == elevation.read_only)
}

/// The first rule of `agent` that approves `elevation` at `now`, given the
/// approvals already in `window`. An elevation whose scope does not parse
/// is never auto-approved.
pub fn choose(
    loaded: &Loaded,
    agent: &Agent,
    elevation: &Elevation,
    window: &Window,
    now: SystemTime,
) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(scope) = Scope::parse(&elevation.scope) else {
        return outcome;
    };
    let required = approval::requirement_of(agent, elevation).required;
    if required > 1 {
        outcome.skipped.push(Skipped::SeveralApprovers { required });
        return outcome;
    }
    let tenant = &loaded.snapshot.tenant;
    for (i, rule) in agent.elevation.auto_approve.iter().enumerate() {
        // Shadow rules are measured (`shadow`), never applied.
        if rule.shadow || !matches(rule, elevation, &scope) {
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
            outcome.skipped.push(Skipped::LenderLacks {
                rule: i,
                on_behalf_of: on_behalf_of.clone(),
            });
            continue;
        }
        if let Some(max) = rule.max_per_hour {
            if window.count(&agent.id, i, now) >= max as usize {
                outcome.skipped.push(Skipped::HourlyLimit {
                    rule: i,
                    max_per_hour: max,
                });
                continue;
            }
        }
        let duration = rule.max_duration.map_or(elevation.requested_duration, |m| {
            m.min(elevation.requested_duration)
        });
        outcome.choice = Some(Choice {
            rule: i,
            on_behalf_of: on_behalf_of.clone(),
            duration,
            counted: rule.max_per_hour.is_some(),
        });
        return outcome;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::super::agent_by_id;
    use super::super::fixture::*;
    use super::*;

    fn auto(loaded: &Loaded) -> &Agent {
        agent_by_id(&loaded.snapshot, "auto").unwrap_or_else(|| panic!("no auto agent"))
    }

    #[test]
    fn the_first_rule_whose_lender_holds_the_operation_approves_capped_in_duration() {
        let loaded = loaded();
        let e = elevation(AGENT_A, "auto", RESTART, VM);
        let outcome = choose(
            &loaded,
            auto(&loaded),
            &e,
            &Window::default(),
            SystemTime::now(),
        );
        assert_eq!(
            outcome.choice,
            Some(Choice {
                rule: 1,
                on_behalf_of: "oncall".into(),
                duration: Duration::from_secs(30 * 60),
                counted: true,
            })
        );
        assert_eq!(
            outcome.skipped,
            [Skipped::LenderLacks {
                rule: 0,
                on_behalf_of: "viewer".into()
            }]
        );
        let choice = outcome.choice.unwrap_or_else(|| panic!("no choice"));
        assert_eq!(choice.resolved_by(auto(&loaded)), "auto-approve:auto#1");
    }

    #[test]
    fn a_shorter_request_keeps_its_duration() {
        let loaded = loaded();
        let mut e = elevation(AGENT_A, "auto", RESTART, VM);
        e.requested_duration = Duration::from_secs(60);
        let outcome = choose(
            &loaded,
            auto(&loaded),
            &e,
            &Window::default(),
            SystemTime::now(),
        );
        assert_eq!(
            outcome.choice.map(|c| c.duration),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn max_per_hour_passes_to_the_next_rule_and_frees_up_after_an_hour() {
        let loaded = loaded();
        let agent = auto(&loaded);
        let e = elevation(AGENT_A, "auto", RESTART, VM);
        let start = SystemTime::now();
        let mut window = Window::default();
        window.record("auto", 1, start);
        window.record("auto", 1, start + Duration::from_secs(60));
        let at = start + Duration::from_secs(120);
        let outcome = choose(&loaded, agent, &e, &window, at);
        // Rule 2 (outsider holds every VM operation, no limit) takes over.
        assert_eq!(
            outcome
                .choice
                .as_ref()
                .map(|c| (c.rule, c.on_behalf_of.as_str(), c.counted)),
            Some((2, "outsider", false))
        );
        assert_eq!(
            outcome.skipped[1],
            Skipped::HourlyLimit {
                rule: 1,
                max_per_hour: 2
            }
        );
        // Once the first approval is more than an hour old, rule 1 again.
        let later = start + WINDOW + Duration::from_secs(1);
        let outcome = choose(&loaded, agent, &e, &window, later);
        assert_eq!(outcome.choice.map(|c| c.rule), Some(1));
    }

    #[test]
    fn the_window_counts_per_agent_and_rule_and_forgets_old_approvals() {
        let mut window = Window::default();
        let start = SystemTime::now();
        window.record("auto", 1, start);
        assert_eq!(window.count("auto", 1, start), 1);
        assert_eq!(window.count("auto", 0, start), 0);
        assert_eq!(window.count("other", 1, start), 0);
        assert_eq!(window.count("auto", 1, start + WINDOW), 1);
        let later = start + WINDOW + Duration::from_secs(1);
        assert_eq!(window.count("auto", 1, later), 0);
        window.record("auto", 1, later);
        assert_eq!(window.approvals[&("auto".to_owned(), 1)].len(), 1);
    }

    #[test]
    fn rules_match_on_operation_scope_plane_and_kind() {
        let loaded = loaded();
        let agent = auto(&loaded);
        let chosen =
            |e: &Elevation| choose(&loaded, agent, e, &Window::default(), SystemTime::now()).choice;
        // Outside rule 1's scopes, and no other rule's lender holds the
        // operation there.
        let mut e = elevation(AGENT_A, "auto", RESTART, OTHER);
        assert_eq!(chosen(&e), None);
        // Read-only restarts do not match rule 1 (readOnly: false).
        e = elevation(AGENT_A, "auto", RESTART, VM);
        e.read_only = true;
        assert_eq!(chosen(&e).map(|c| c.rule), Some(2));
        // The data plane does not match rule 1 (dataAction: false).
        e.read_only = false;
        e.data_action = true;
        assert_eq!(chosen(&e).map(|c| c.rule), None);
        // An operation no rule names.
        let e = elevation(AGENT_A, "auto", ASSIGN, APP);
        assert_eq!(chosen(&e), None);
    }

    #[test]
    fn a_scope_that_does_not_parse_is_never_auto_approved() {
        let loaded = loaded();
        let e = elevation(AGENT_A, "auto", RESTART, "not a scope");
        let outcome = choose(
            &loaded,
            auto(&loaded),
            &e,
            &Window::default(),
            SystemTime::now(),
        );
        assert_eq!(outcome, Outcome::default());
    }

    #[test]
    fn an_agent_without_rules_approves_nothing() {
        let loaded = loaded();
        let reviewer = agent_by_id(&loaded.snapshot, "reviewer").unwrap_or_else(|| panic!());
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let outcome = choose(&loaded, reviewer, &e, &Window::default(), SystemTime::now());
        assert_eq!(outcome, Outcome::default());
    }

    #[test]
    fn no_rule_answers_for_a_policy_that_wants_several_approvers() {
        let yaml = SNAPSHOT.replace(
            "      maxDuration: 1h\n",
            "      maxDuration: 1h\n      approvalPolicies:\n        - { actions: [\"Microsoft.Compute/virtualMachines/restart/action\"], required: 2 }\n",
        );
        let loaded = loaded_from(&yaml);
        let e = elevation(AGENT_A, "auto", RESTART, VM);
        let outcome = choose(
            &loaded,
            auto(&loaded),
            &e,
            &Window::default(),
            SystemTime::now(),
        );
        assert_eq!(outcome.choice, None);
        assert_eq!(outcome.skipped, [Skipped::SeveralApprovers { required: 2 }]);
    }
}
