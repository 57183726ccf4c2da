//! Agents: identity, resource and managed scopes, elevation settings with
//! their auto-approve rules, and the standing assignments a level derives.

use std::time::Duration;

use super::fields::{duration, patterns, scope, Declared};
use super::principals::PrincipalIndex;
use super::roles::{role_assignable_at, RoleIndex, Roles};
use super::{Named, Problems};
use crate::model::{
    check_operation, Agent, ApprovalPolicy, AutoApproveRule, ElevationSettings, ExecutionMode,
    Hierarchy, PermissionLevel, Principal, PrincipalType, RoleAssignment, Scope, ScopeKind,
};
use crate::snapshot::schema::{AgentEntry, ApprovalPolicyEntry, AutoApproveEntry, ElevationEntry};

/// What an agent's checks look things up in.
pub(super) struct Context<'a> {
    pub principals: &'a [Principal],
    pub principal_index: &'a PrincipalIndex,
    pub roles: &'a RoleIndex,
}

/// The valid agents; an id or an identity used twice is reported.
pub(super) fn agents(
    entries: &[AgentEntry],
    cx: &Context<'_>,
    problems: &mut Problems,
) -> Vec<Agent> {
    let mut out = Vec::with_capacity(entries.len());
    let mut ids: Declared = Declared::with_capacity(entries.len());
    let mut identities: Declared<usize, String> = Declared::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("agents[{i}]");
        ids.declare_id(
            entry.id.clone(),
            (),
            "agent",
            &entry.id,
            format!("{path}.id"),
            problems,
        );
        let Some(agent) = agent(entry, &path, cx, problems) else {
            continue;
        };
        if let Some(other) = identities.declare(agent.principal, agent.id.clone()) {
            problems.push(
                format!("{path}.principal"),
                Some(&entry.id),
                format!(
                    "principal '{}' is already the identity of agent '{other}'",
                    entry.principal
                ),
            );
        }
        out.push(agent);
    }
    out
}

fn agent(
    entry: &AgentEntry,
    path: &str,
    cx: &Context<'_>,
    problems: &mut Problems,
) -> Option<Agent> {
    let id = Some(entry.id.as_str());
    let before = problems.len();
    if entry.id.trim().is_empty() {
        problems.push(format!("{path}.id"), id, "id is empty");
    }
    let principal = cx.principal_index.resolve(&entry.principal);
    match principal {
        None => problems.push_unknown(
            Named::Principal,
            &entry.principal,
            format!("{path}.principal"),
            id,
            format!("unknown principal '{}'", entry.principal),
        ),
        Some(p) if cx.principals[p].kind == PrincipalType::Group => problems.push(
            format!("{path}.principal"),
            id,
            "an agent's principal is its managed identity, not a Group",
        ),
        Some(_) => {}
    }
    let resource = scope(&entry.resource, &format!("{path}.resource"), id, problems);
    if entry.managed_scopes.is_empty() {
        problems.push(
            format!("{path}.managedScopes"),
            id,
            "an agent needs at least one managed scope",
        );
    }
    let mut managed_scopes = Vec::with_capacity(entry.managed_scopes.len());
    for (m, text) in entry.managed_scopes.iter().enumerate() {
        let mpath = format!("{path}.managedScopes[{m}]");
        let Some(s) = scope(text, &mpath, id, problems) else {
            continue;
        };
        if s.kind() == ScopeKind::ResourceGroup {
            managed_scopes.push(s);
        } else {
            problems.push(
                mpath,
                id,
                format!(
                    "managed scopes are resource groups; '{s}' is a {}",
                    s.kind().as_str()
                ),
            );
        }
    }
    let elevation = elevation(
        &entry.elevation,
        &format!("{path}.elevation"),
        id,
        &managed_scopes,
        principal,
        cx,
        problems,
    );
    if problems.len() != before {
        return None;
    }
    let elevation = elevation?;
    if !elevation.auto_approve.is_empty() && entry.execution_mode == ExecutionMode::Review {
        tracing::debug!(agent = %entry.id, "autoApprove rules of a Review-mode agent are never applied");
    }
    Some(Agent {
        id: entry.id.clone(),
        principal: principal?,
        resource: resource?,
        managed_scopes,
        permission_level: entry.permission_level,
        execution_mode: entry.execution_mode,
        elevation,
    })
}

/// The elevation settings, defaults filled in; `None` only when the
/// privileged role is unknown (every problem is reported either way).
fn elevation(
    e: &ElevationEntry,
    path: &str,
    id: Option<&str>,
    managed_scopes: &[Scope],
    identity: Option<usize>,
    cx: &Context<'_>,
    problems: &mut Problems,
) -> Option<ElevationSettings> {
    let mut field = |name: &str, value: &Option<String>, default: Duration| match value {
        None => default,
        Some(text) => duration(text, format!("{path}.{name}"), id, problems),
    };
    let default_duration = field(
        "defaultDuration",
        &e.default_duration,
        ElevationSettings::DEFAULT_DURATION,
    );
    let max_duration = field(
        "maxDuration",
        &e.max_duration,
        ElevationSettings::DEFAULT_MAX_DURATION,
    );
    let max_wait = field("maxWait", &e.max_wait, ElevationSettings::DEFAULT_MAX_WAIT);
    if default_duration > max_duration {
        problems.push(
            format!("{path}.defaultDuration"),
            id,
            "defaultDuration is longer than maxDuration",
        );
    }
    let interact_action = e
        .interact_action
        .clone()
        .unwrap_or_else(|| ElevationSettings::DEFAULT_INTERACT_ACTION.to_owned());
    if let Err(err) = check_operation(&interact_action) {
        problems.push(
            format!("{path}.interactAction"),
            id,
            format!("interactAction '{interact_action}' {err}"),
        );
    }
    let privileged_name = e
        .privileged_role
        .as_deref()
        .unwrap_or(ElevationSettings::DEFAULT_PRIVILEGED_ROLE);
    let privileged_role = cx.roles.resolve(privileged_name);
    if privileged_role.is_none() {
        problems.push_unknown(
            Named::Role,
            privileged_name,
            format!("{path}.privilegedRole"),
            id,
            format!(
                "unknown role '{privileged_name}'{}",
                crate::snapshot::suggest::role_hint(
                    privileged_name,
                    crate::snapshot::catalog::builtin_roles()
                        .unwrap_or_default()
                        .iter()
                        .map(|r| r.role_name.as_str())
                )
            ),
        );
    }
    let max_requests_per_minute = e
        .max_requests_per_minute
        .unwrap_or(ElevationSettings::DEFAULT_MAX_REQUESTS_PER_MINUTE);
    if !(1..=ElevationSettings::MAX_REQUESTS_PER_MINUTE).contains(&max_requests_per_minute) {
        problems.push(
            format!("{path}.maxRequestsPerMinute"),
            id,
            format!(
                "maxRequestsPerMinute must be from 1 to {}, not {max_requests_per_minute}",
                ElevationSettings::MAX_REQUESTS_PER_MINUTE
            ),
        );
    }
    let auto_approve = e
        .auto_approve
        .iter()
        .enumerate()
        .filter_map(|(r, rule)| {
            let rpath = format!("{path}.autoApprove[{r}]");
            auto_approve_rule(rule, &rpath, id, managed_scopes, max_duration, cx, problems)
        })
        .collect();
    let approval_policies = e
        .approval_policies
        .iter()
        .enumerate()
        .map(|(r, policy)| {
            let rpath = format!("{path}.approvalPolicies[{r}]");
            let scope_of = Rule {
                path: &rpath,
                id,
                managed_scopes,
                agent_max_duration: max_duration,
            };
            approval_policy(policy, &scope_of, identity, cx, problems)
        })
        .collect();
    Some(ElevationSettings {
        default_duration,
        max_duration,
        max_wait,
        interact_action,
        privileged_role: privileged_role?,
        auto_approve,
        approval_policies,
        max_requests_per_minute,
    })
}

/// One auto-approve rule; `None` when its `onBehalfOf` is unknown.
fn auto_approve_rule(
    rule: &AutoApproveEntry,
    path: &str,
    id: Option<&str>,
    managed_scopes: &[Scope],
    agent_max_duration: Duration,
    cx: &Context<'_>,
    problems: &mut Problems,
) -> Option<AutoApproveRule> {
    if rule.actions.is_empty() {
        problems.push(
            format!("{path}.actions"),
            id,
            "an auto-approve rule needs at least one action pattern",
        );
    }
    let actions = patterns(&rule.actions, &format!("{path}.actions"), id, problems)
        .iter()
        .cloned()
        .collect();
    let mut scopes = Vec::with_capacity(rule.scopes.len());
    for (s, text) in rule.scopes.iter().enumerate() {
        let spath = format!("{path}.scopes[{s}]");
        let Some(sc) = scope(text, &spath, id, problems) else {
            continue;
        };
        if !managed_scopes.iter().any(|m| sc.is_structurally_within(m)) {
            problems.push(
                spath,
                id,
                format!("scope '{sc}' is outside the agent's managed scopes"),
            );
        }
        scopes.push(sc);
    }
    let max_duration = rule
        .max_duration
        .as_ref()
        .map(|text| duration(text, format!("{path}.maxDuration"), id, problems));
    if max_duration.is_some_and(|m| m > agent_max_duration) {
        problems.push(
            format!("{path}.maxDuration"),
            id,
            "the rule's maxDuration is longer than the agent's",
        );
    }
    let on_behalf_of = cx.principal_index.resolve(&rule.on_behalf_of);
    if on_behalf_of.is_none() {
        problems.push_unknown(
            Named::Principal,
            &rule.on_behalf_of,
            format!("{path}.onBehalfOf"),
            id,
            format!("unknown principal '{}'", rule.on_behalf_of),
        );
    }
    if rule.max_per_hour == Some(0) {
        problems.push(
            format!("{path}.maxPerHour"),
            id,
            "maxPerHour must be at least 1 (remove the rule to disable it)",
        );
    }
    Some(AutoApproveRule {
        actions,
        scopes,
        data_action: rule.data_action,
        read_only: rule.read_only,
        max_duration,
        on_behalf_of: on_behalf_of?,
        max_per_hour: rule.max_per_hour,
        shadow: rule.shadow,
    })
}

/// Where a rule of an agent's elevation section sits, and what bounds it.
struct Rule<'a> {
    path: &'a str,
    id: Option<&'a str>,
    managed_scopes: &'a [Scope],
    agent_max_duration: Duration,
}

/// One approval policy; every problem is reported, unknown approvers left
/// out of the result.
fn approval_policy(
    p: &ApprovalPolicyEntry,
    rule: &Rule<'_>,
    identity: Option<usize>,
    cx: &Context<'_>,
    problems: &mut Problems,
) -> ApprovalPolicy {
    let (path, id) = (rule.path, rule.id);
    if p.actions.is_empty() {
        problems.push(
            format!("{path}.actions"),
            id,
            "an approval policy needs at least one action pattern (\"*\" for every operation)",
        );
    }
    let actions = patterns(&p.actions, &format!("{path}.actions"), id, problems)
        .iter()
        .cloned()
        .collect();
    let mut scopes = Vec::with_capacity(p.scopes.len());
    for (s, text) in p.scopes.iter().enumerate() {
        let spath = format!("{path}.scopes[{s}]");
        let Some(sc) = scope(text, &spath, id, problems) else {
            continue;
        };
        if !rule
            .managed_scopes
            .iter()
            .any(|m| sc.is_structurally_within(m))
        {
            problems.push(
                spath,
                id,
                format!("scope '{sc}' is outside the agent's managed scopes"),
            );
        }
        scopes.push(sc);
    }
    let required = p.required.unwrap_or(1);
    let most = ElevationSettings::MAX_REQUIRED_APPROVERS;
    if !(1..=most).contains(&required) {
        problems.push(
            format!("{path}.required"),
            id,
            format!("required must be from 1 to {most} distinct approvers, not {required}"),
        );
    }
    let mut approvers = Vec::with_capacity(p.approvers.len());
    for (a, text) in p.approvers.iter().enumerate() {
        let apath = format!("{path}.approvers[{a}]");
        match cx.principal_index.resolve(text) {
            None => problems.push_unknown(
                Named::Principal,
                text,
                apath,
                id,
                format!("unknown principal '{text}' (list users, service principals or groups of the snapshot)"),
            ),
            Some(i) if Some(i) == identity => problems.push(
                apath,
                id,
                format!("'{text}' is the agent's own identity, which never approves its own elevations; remove it"),
            ),
            Some(i) if approvers.contains(&i) => problems.push(
                apath,
                id,
                format!("'{text}' is listed twice; list each approver once"),
            ),
            Some(i) => approvers.push(i),
        }
    }
    let has_group = approvers
        .iter()
        .any(|&i| cx.principals[i].kind == PrincipalType::Group);
    if !approvers.is_empty() && !has_group && (approvers.len() as u32) < required {
        problems.push(
            format!("{path}.approvers"),
            id,
            format!(
                "required is {required} but only {} approvers are listed, so nothing could ever be approved; list more approvers (or a group) or lower required",
                approvers.len()
            ),
        );
    }
    let max_duration = p
        .max_duration
        .as_ref()
        .map(|text| duration(text, format!("{path}.maxDuration"), id, problems));
    if max_duration.is_some_and(|m| m > rule.agent_max_duration) {
        problems.push(
            format!("{path}.maxDuration"),
            id,
            "the policy's maxDuration is longer than the agent's; shorten it or raise elevation.maxDuration",
        );
    }
    ApprovalPolicy {
        actions,
        scopes,
        data_action: p.data_action,
        required,
        approvers,
        require_ticket: p.require_ticket,
        max_duration,
    }
}

/// The standing assignments an agent's level derives: its
/// level's role on each managed scope.
pub(super) fn derived_assignments(
    agents: &[Agent],
    roles: &Roles,
    hierarchy: &Hierarchy,
    problems: &mut Problems,
) -> Vec<RoleAssignment> {
    let mut out = Vec::new();
    for (a, agent) in agents.iter().enumerate() {
        let role = match agent.permission_level {
            PermissionLevel::Reader => roles.index.resolve(PermissionLevel::READER_ROLE),
            PermissionLevel::Privileged => Some(agent.elevation.privileged_role),
        };
        let Some(role) = role else {
            problems.push(
                format!("agents[{a}]"),
                Some(&agent.id),
                "the Reader role is missing from the catalog",
            );
            continue;
        };
        let definition = &roles.definitions[role];
        for scope in &agent.managed_scopes {
            if !role_assignable_at(definition, scope, hierarchy) {
                problems.push(
                    format!("agents[{a}].managedScopes"),
                    Some(&agent.id),
                    format!(
                        "role '{}' is not assignable at managed scope '{scope}'",
                        definition.role_name
                    ),
                );
            }
            out.push(RoleAssignment {
                id: format!("agent/{}/{}/{}", agent.id, definition.role_name, scope),
                principal: agent.principal,
                role,
                scope: scope.clone(),
                condition: None,
                derived_from_agent: Some(a),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        assert_problems, assert_same, check_with, custom_role, valid, GUID,
    };

    const AGENT_PRINCIPALS: &str =
        "principals:\n  - { id: mi, type: ManagedIdentity }\n  - { id: mi2, type: ManagedIdentity }\n  - { id: bob, type: User }\n  - { id: team, type: Group }\n";
    const AGENT_RESOURCE: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.App/agents/ag";
    const RG: &str = "/subscriptions/s1/resourceGroups/rg";

    /// One agent of `AGENT_PRINCIPALS`, with `fields` in place of the defaults
    /// it names (id, principal, resource, managedScopes, permissionLevel,
    /// executionMode) and any others (elevation).
    fn agent(fields: &[(&str, &str)]) -> String {
        let mut all = vec![
            ("id", "ag".to_owned()),
            ("principal", "mi".to_owned()),
            ("resource", AGENT_RESOURCE.to_owned()),
            ("managedScopes", format!("[{RG}]")),
            ("permissionLevel", "Reader".to_owned()),
            ("executionMode", "Review".to_owned()),
        ];
        for &(k, v) in fields {
            match all.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v.to_owned(),
                None => all.push((k, v.to_owned())),
            }
        }
        let body: Vec<String> = all.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{AGENT_PRINCIPALS}agents:\n  - {{ {} }}\n", body.join(", "))
    }

    fn elevation(fields: &str) -> String {
        agent(&[("elevation", &format!("{{ {fields} }}"))])
    }

    #[test]
    fn agent_defaults_apply() {
        let t = valid(&agent(&[]));
        let e = &t.agents[0].elevation;
        assert_eq!(e.default_duration, std::time::Duration::from_secs(15 * 60));
        assert_eq!(e.max_duration, std::time::Duration::from_secs(8 * 3600));
        assert_eq!(e.max_wait, std::time::Duration::from_secs(3600));
        assert_eq!(e.max_requests_per_minute, 60);
        assert_eq!(e.interact_action, "Microsoft.App/agents/write");
        assert_eq!(
            t.role_definitions[e.privileged_role].role_name,
            "Contributor"
        );
        // A Reader agent holds Reader on its managed scopes.
        let derived = t.role_assignments.last().unwrap_or_else(|| panic!("none"));
        assert_eq!(derived.id, format!("agent/ag/Reader/{RG}"));
        assert_eq!(derived.derived_from_agent, Some(0));
        assert_eq!(t.role_definitions[derived.role].role_name, "Reader");
    }

    #[test]
    fn a_privileged_agent_holds_its_privileged_role() {
        let t = valid(&agent(&[
            ("permissionLevel", "Privileged"),
            ("elevation", "{ privilegedRole: Owner }"),
        ]));
        let derived = t.role_assignments.last().unwrap_or_else(|| panic!("none"));
        assert_eq!(t.role_definitions[derived.role].role_name, "Owner");
        assert_eq!(derived.id, format!("agent/ag/Owner/{RG}"));
    }

    #[test]
    fn agent_ids_are_unique() {
        let yaml = format!(
            "{AGENT_PRINCIPALS}agents:\n  - {{ id: ag, principal: mi, resource: {AGENT_RESOURCE}, managedScopes: [{RG}], permissionLevel: Reader, executionMode: Review }}\n  - {{ id: ag, principal: mi2, resource: {AGENT_RESOURCE}, managedScopes: [{RG}], permissionLevel: Reader, executionMode: Review }}\n"
        );
        assert_problems(
            &yaml,
            &[("agents[1].id", Some("ag"), "duplicate agent id 'ag'")],
        );
    }

    #[test]
    fn an_identity_serves_one_agent() {
        let yaml = format!(
            "{AGENT_PRINCIPALS}agents:\n  - {{ id: a1, principal: mi, resource: {AGENT_RESOURCE}, managedScopes: [{RG}], permissionLevel: Reader, executionMode: Review }}\n  - {{ id: a2, principal: mi, resource: {AGENT_RESOURCE}, managedScopes: [{RG}], permissionLevel: Reader, executionMode: Review }}\n"
        );
        assert_problems(
            &yaml,
            &[(
                "agents[1].principal",
                Some("a2"),
                "principal 'mi' is already the identity of agent 'a1'",
            )],
        );
    }

    #[test]
    fn agent_id_must_not_be_empty() {
        assert_problems(
            &agent(&[("id", "\" \"")]),
            &[("agents[0].id", Some(" "), "id is empty")],
        );
    }

    #[test]
    fn agent_principal_must_exist() {
        assert_problems(
            &agent(&[("principal", "ghost")]),
            &[(
                "agents[0].principal",
                Some("ag"),
                "unknown principal 'ghost'",
            )],
        );
    }

    #[test]
    fn agent_principal_is_not_a_group() {
        assert_problems(
            &agent(&[("principal", "team")]),
            &[(
                "agents[0].principal",
                Some("ag"),
                "an agent's principal is its managed identity, not a Group",
            )],
        );
    }

    #[test]
    fn agent_resource_must_parse() {
        assert_problems(
            &agent(&[("resource", "/subscriptions")]),
            &[(
                "agents[0].resource",
                Some("ag"),
                "scope '/subscriptions' has 'subscriptions' without a subscription id",
            )],
        );
    }

    #[test]
    fn agent_needs_a_managed_scope() {
        assert_problems(
            &agent(&[("managedScopes", "[]")]),
            &[(
                "agents[0].managedScopes",
                Some("ag"),
                "an agent needs at least one managed scope",
            )],
        );
    }

    #[test]
    fn agent_managed_scopes_must_parse() {
        assert_problems(
            &agent(&[("managedScopes", "[/subscriptions]")]),
            &[(
                "agents[0].managedScopes[0]",
                Some("ag"),
                "scope '/subscriptions' has 'subscriptions' without a subscription id",
            )],
        );
    }

    #[test]
    fn agent_managed_scopes_are_resource_groups() {
        assert_problems(
            &agent(&[("managedScopes", "[/subscriptions/s1]")]),
            &[(
                "agents[0].managedScopes[0]",
                Some("ag"),
                "managed scopes are resource groups; '/subscriptions/s1' is a subscription",
            )],
        );
    }

    #[test]
    fn agent_durations_must_parse() {
        assert_problems(
            &elevation("defaultDuration: 1x, maxDuration: 2, maxWait: m"),
            &[
                (
                    "agents[0].elevation.defaultDuration",
                    Some("ag"),
                    "duration '1x' has unknown unit 'x' (use s, m, h or d, e.g. 15m)",
                ),
                (
                    "agents[0].elevation.maxDuration",
                    Some("ag"),
                    "duration '2' ends with a number without a unit (use s, m, h or d, e.g. 15m)",
                ),
                (
                    "agents[0].elevation.maxWait",
                    Some("ag"),
                    "duration 'm' has a unit without a number",
                ),
            ],
        );
    }

    #[test]
    fn agent_request_rate_is_bounded() {
        for bad in ["0", "10001"] {
            assert_problems(
                &elevation(&format!("maxRequestsPerMinute: {bad}")),
                &[(
                    "agents[0].elevation.maxRequestsPerMinute",
                    Some("ag"),
                    &format!("maxRequestsPerMinute must be from 1 to 10000, not {bad}"),
                )],
            );
        }
        let t = valid(&elevation("maxRequestsPerMinute: 5"));
        assert_eq!(t.agents[0].elevation.max_requests_per_minute, 5);
    }

    #[test]
    fn agent_default_duration_fits_max_duration() {
        assert_problems(
            &elevation("maxDuration: 10m"),
            &[(
                "agents[0].elevation.defaultDuration",
                Some("ag"),
                "defaultDuration is longer than maxDuration",
            )],
        );
    }

    #[test]
    fn agent_interact_action_is_an_operation() {
        assert_problems(
            &elevation("interactAction: \"Microsoft.App/*\""),
            &[("agents[0].elevation.interactAction", Some("ag"), "interactAction 'Microsoft.App/*' contains '*' at byte 14; a requested operation names one operation, wildcards belong in role definitions")],
        );
    }

    #[test]
    fn agent_privileged_role_must_exist() {
        assert_problems(
            &elevation("privilegedRole: Nope"),
            &[(
                "agents[0].elevation.privilegedRole",
                Some("ag"),
                "unknown role 'Nope'",
            )],
        );
    }

    #[test]
    fn agent_role_must_be_assignable_at_managed_scopes() {
        let yaml = format!(
            "{}{}",
            custom_role(&format!(
                r#"id: {GUID}, roleName: Narrow, permissions: [{{ actions: ["*/read"] }}], assignableScopes: [/subscriptions/s2]"#
            )),
            agent(&[
                ("permissionLevel", "Privileged"),
                ("elevation", "{ privilegedRole: Narrow }")
            ])
        );
        assert_problems(
            &yaml,
            &[("agents[0].managedScopes", Some("ag"), "role 'Narrow' is not assignable at managed scope '/subscriptions/s1/resourceGroups/rg'")],
        );
    }

    #[test]
    fn a_reader_agent_needs_the_reader_role_in_the_catalog() {
        let builtin = crate::snapshot::catalog::builtin_roles().unwrap_or_else(|e| panic!("{e}"));
        let without_reader: Vec<_> = builtin
            .iter()
            .filter(|r| r.role_name != "Reader")
            .cloned()
            .collect();
        let yaml = agent(&[]);
        let problems = check_with(&yaml, &without_reader).err().unwrap_or_default();
        assert_same(
            &problems,
            &[(
                "agents[0]",
                Some("ag"),
                "the Reader role is missing from the catalog",
            )],
            &yaml,
        );
    }

    #[test]
    fn auto_approve_rule_needs_an_action() {
        assert_problems(
            &elevation("autoApprove: [{ onBehalfOf: bob }]"),
            &[(
                "agents[0].elevation.autoApprove[0].actions",
                Some("ag"),
                "an auto-approve rule needs at least one action pattern",
            )],
        );
    }

    #[test]
    fn auto_approve_actions_must_parse() {
        assert_problems(
            &elevation("autoApprove: [{ onBehalfOf: bob, actions: [\"a b\"] }]"),
            &[(
                "agents[0].elevation.autoApprove[0].actions[0]",
                Some("ag"),
                "pattern 'a b' contains whitespace or a control character at byte 1",
            )],
        );
    }

    #[test]
    fn auto_approve_scopes_must_parse() {
        assert_problems(
            &elevation("autoApprove: [{ onBehalfOf: bob, actions: [\"*/read\"], scopes: [/subscriptions] }]"),
            &[("agents[0].elevation.autoApprove[0].scopes[0]", Some("ag"), "scope '/subscriptions' has 'subscriptions' without a subscription id")],
        );
    }

    #[test]
    fn auto_approve_scopes_lie_within_managed_scopes() {
        assert_problems(
            &elevation("autoApprove: [{ onBehalfOf: bob, actions: [\"*/read\"], scopes: [/subscriptions/s1/resourceGroups/other, /subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st] }]"),
            &[("agents[0].elevation.autoApprove[0].scopes[0]", Some("ag"), "scope '/subscriptions/s1/resourceGroups/other' is outside the agent's managed scopes")],
        );
    }

    #[test]
    fn auto_approve_max_duration_must_parse() {
        assert_problems(
            &elevation("autoApprove: [{ onBehalfOf: bob, actions: [\"*/read\"], maxDuration: 5 }]"),
            &[(
                "agents[0].elevation.autoApprove[0].maxDuration",
                Some("ag"),
                "duration '5' ends with a number without a unit (use s, m, h or d, e.g. 15m)",
            )],
        );
    }

    #[test]
    fn auto_approve_max_duration_fits_the_agents() {
        assert_problems(
            &elevation("maxDuration: 1h, autoApprove: [{ onBehalfOf: bob, actions: [\"*/read\"], maxDuration: 2h }]"),
            &[("agents[0].elevation.autoApprove[0].maxDuration", Some("ag"), "the rule's maxDuration is longer than the agent's")],
        );
    }

    #[test]
    fn auto_approve_on_behalf_of_must_exist() {
        assert_problems(
            &elevation("autoApprove: [{ onBehalfOf: ghost, actions: [\"*/read\"] }]"),
            &[(
                "agents[0].elevation.autoApprove[0].onBehalfOf",
                Some("ag"),
                "unknown principal 'ghost'",
            )],
        );
    }

    #[test]
    fn auto_approve_max_per_hour_is_positive() {
        assert_problems(
            &elevation("autoApprove: [{ onBehalfOf: bob, actions: [\"*/read\"], maxPerHour: 0 }]"),
            &[(
                "agents[0].elevation.autoApprove[0].maxPerHour",
                Some("ag"),
                "maxPerHour must be at least 1 (remove the rule to disable it)",
            )],
        );
    }

    #[test]
    fn a_valid_auto_approve_rule_is_kept() {
        let t = valid(&elevation("autoApprove: [{ onBehalfOf: bob, actions: [\"*/read\"], scopes: [/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st], maxDuration: 1h, maxPerHour: 3 }]"));
        let rule = &t.agents[0].elevation.auto_approve[0];
        assert_eq!(t.principals[rule.on_behalf_of].id, "bob");
        assert_eq!(rule.max_per_hour, Some(3));
        assert_eq!(
            rule.max_duration,
            Some(std::time::Duration::from_secs(3600))
        );
    }

    #[test]
    fn approval_policies_default_to_none_and_keep_their_fields() {
        assert!(valid(&agent(&[])).agents[0]
            .elevation
            .approval_policies
            .is_empty());
        let t = valid(&elevation("approvalPolicies: [{ actions: [\"Microsoft.Authorization/*\"], scopes: [/subscriptions/s1/resourceGroups/rg], dataAction: false, required: 2, approvers: [bob, team], requireTicket: true, maxDuration: 1h }]"));
        let p = &t.agents[0].elevation.approval_policies[0];
        assert_eq!(p.required, 2);
        let names: Vec<&str> = p
            .approvers
            .iter()
            .map(|&i| t.principals[i].id.as_str())
            .collect();
        assert_eq!(names, ["bob", "team"]);
        assert!(p.require_ticket);
        assert_eq!(p.data_action, Some(false));
        assert_eq!(p.max_duration, Some(std::time::Duration::from_secs(3600)));
        // `required` defaults to one approver.
        let t = valid(&elevation(
            "approvalPolicies: [{ actions: [\"*\"], requireTicket: true }]",
        ));
        assert_eq!(t.agents[0].elevation.approval_policies[0].required, 1);
    }

    #[test]
    fn approval_policy_fields_are_checked_with_the_fix_named() {
        assert_problems(
            &elevation("maxDuration: 1h, approvalPolicies: [{ required: 0, scopes: [/subscriptions/s1/resourceGroups/other], approvers: [ghost, mi, bob, bob], maxDuration: 2h }]"),
            &[
                ("agents[0].elevation.approvalPolicies[0].actions", Some("ag"), "an approval policy needs at least one action pattern (\"*\" for every operation)"),
                ("agents[0].elevation.approvalPolicies[0].scopes[0]", Some("ag"), "scope '/subscriptions/s1/resourceGroups/other' is outside the agent's managed scopes"),
                ("agents[0].elevation.approvalPolicies[0].required", Some("ag"), "required must be from 1 to 10 distinct approvers, not 0"),
                ("agents[0].elevation.approvalPolicies[0].approvers[0]", Some("ag"), "unknown principal 'ghost' (list users, service principals or groups of the snapshot)"),
                ("agents[0].elevation.approvalPolicies[0].approvers[1]", Some("ag"), "'mi' is the agent's own identity, which never approves its own elevations; remove it"),
                ("agents[0].elevation.approvalPolicies[0].approvers[3]", Some("ag"), "'bob' is listed twice; list each approver once"),
                ("agents[0].elevation.approvalPolicies[0].maxDuration", Some("ag"), "the policy's maxDuration is longer than the agent's; shorten it or raise elevation.maxDuration"),
            ],
        );
        assert_problems(
            &elevation("approvalPolicies: [{ actions: [\"*\"], required: 11 }]"),
            &[(
                "agents[0].elevation.approvalPolicies[0].required",
                Some("ag"),
                "required must be from 1 to 10 distinct approvers, not 11",
            )],
        );
    }

    #[test]
    fn an_approval_policy_that_could_never_be_met_is_refused() {
        assert_problems(
            &elevation("approvalPolicies: [{ actions: [\"*\"], required: 2, approvers: [bob] }]"),
            &[("agents[0].elevation.approvalPolicies[0].approvers", Some("ag"), "required is 2 but only 1 approvers are listed, so nothing could ever be approved; list more approvers (or a group) or lower required")],
        );
        // A group may hold any number of members.
        valid(&elevation(
            "approvalPolicies: [{ actions: [\"*\"], required: 3, approvers: [team] }]",
        ));
    }

    #[test]
    fn unknown_approval_policy_fields_are_refused() {
        let yaml = elevation("approvalPolicies: [{ actions: [\"*\"], requiredApprovers: 2 }]");
        let err = crate::snapshot::load_str(&yaml, "test")
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("requiredApprovers")),
            "{err:?}"
        );
    }

    #[test]
    fn an_auto_approve_rule_may_be_a_shadow() {
        let t = valid(&elevation("autoApprove: [{ onBehalfOf: bob, actions: [\"*/read\"], shadow: true }, { onBehalfOf: bob, actions: [\"*/read\"] }]"));
        let rules = &t.agents[0].elevation.auto_approve;
        assert!(rules[0].shadow);
        assert!(!rules[1].shadow);
    }
}
