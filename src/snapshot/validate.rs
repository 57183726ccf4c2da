//! Validation: the snapshot file as written becomes a [`Tenant`], or every
//! problem in it is reported at once (SPEC §5).

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::error::Problem;
use super::locate::SourceMap;
use super::schema::{
    AgentEntry, DenyAssignmentEntry, PermissionEntry, RoleAssignmentEntry, RoleDefinitionEntry,
    SnapshotFile,
};
use crate::model::agent::parse_duration;
use crate::model::condition::CONDITION_VERSION;
use crate::model::{
    check_operation, check_principal_id, is_guid, principal_key, AccessKey, ActionPattern, Agent,
    AutoApproveRule, Condition, DenyAssignment, ElevationSettings, ExecutionMode, Hierarchy,
    ManagementGroup, PatternSet, PermissionBlock, PermissionLevel, Principal, PrincipalType,
    Resource, RoleAssignment, RoleDefinition, RoleType, Scope, ScopeKind, Subscription, Tenant,
};

/// Collects problems and finds where they are in the file.
pub struct Problems<'a> {
    map: &'a SourceMap,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub fn new(map: &'a SourceMap) -> Self {
        Problems {
            map,
            list: Vec::new(),
        }
    }

    pub fn push(&mut self, path: impl Into<String>, id: Option<&str>, message: impl Into<String>) {
        let path = path.into();
        let location = self.locate(&path);
        self.list.push(Problem {
            path,
            id: id.map(str::to_owned),
            message: message.into(),
            location,
        });
    }

    /// The position of `path`, or of its nearest located parent.
    fn locate(&self, path: &str) -> Option<super::locate::Location> {
        let mut p = path;
        loop {
            if let Some(loc) = self.map.get(p) {
                return Some(loc);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.list
    }
}

/// Role look-up by id, name or alias, case-insensitively (SPEC §1.4).
struct RoleIndex {
    by_key: HashMap<String, usize>,
}

impl RoleIndex {
    fn resolve(&self, reference: &str) -> Option<usize> {
        let key = reference.trim().to_ascii_lowercase();
        // Azure's CLI prints roleDefinitionId as a full resource id.
        let key = key
            .rsplit_once("/roledefinitions/")
            .map_or(key.as_str(), |(_, id)| id);
        self.by_key.get(key).copied()
    }
}

/// Validates role definitions (the catalog's or a snapshot's custom ones).
pub fn role_definitions(
    entries: &[RoleDefinitionEntry],
    role_type: RoleType,
    section: &str,
    problems: &mut Problems<'_>,
) -> Vec<RoleDefinition> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("{section}[{i}]");
        let id = Some(entry.id.as_str());
        let before = problems.list.len();
        if !is_guid(&entry.id) {
            problems.push(
                format!("{path}.id"),
                id,
                "a role definition id must be a GUID",
            );
        }
        if entry.role_name.trim().is_empty() {
            problems.push(format!("{path}.roleName"), id, "roleName is empty");
        }
        if let Some(declared) = &entry.role_type {
            if declared != role_type.as_str() {
                problems.push(
                    format!("{path}.roleType"),
                    id,
                    format!(
                        "roleType is '{declared}' but roles here are {}",
                        role_type.as_str()
                    ),
                );
            }
        }
        if entry.permissions.is_empty() {
            problems.push(
                format!("{path}.permissions"),
                id,
                "a role needs at least one permission block",
            );
        }
        let permissions: Vec<PermissionBlock> = entry
            .permissions
            .iter()
            .enumerate()
            .map(|(b, block)| {
                permission_block(block, &format!("{path}.permissions[{b}]"), id, problems)
            })
            .collect();
        if entry.assignable_scopes.is_empty() {
            problems.push(
                format!("{path}.assignableScopes"),
                id,
                "a role needs at least one assignable scope",
            );
        }
        let assignable_scopes = entry
            .assignable_scopes
            .iter()
            .enumerate()
            .filter_map(|(s, text)| {
                scope(text, &format!("{path}.assignableScopes[{s}]"), id, problems)
            })
            .collect();
        if problems.list.len() == before {
            out.push(RoleDefinition {
                id: entry.id.to_ascii_lowercase(),
                role_name: entry.role_name.clone(),
                aliases: entry.aliases.clone(),
                description: entry.description.clone().unwrap_or_default(),
                role_type,
                permissions,
                assignable_scopes,
            });
        }
    }
    out
}

fn permission_block(
    block: &PermissionEntry,
    path: &str,
    id: Option<&str>,
    problems: &mut Problems<'_>,
) -> PermissionBlock {
    let condition = condition(
        block.condition.as_deref(),
        block.condition_version.as_deref(),
        path,
        id,
        problems,
    );
    PermissionBlock {
        actions: patterns(&block.actions, &format!("{path}.actions"), id, problems),
        not_actions: patterns(
            &block.not_actions,
            &format!("{path}.notActions"),
            id,
            problems,
        ),
        data_actions: patterns(
            &block.data_actions,
            &format!("{path}.dataActions"),
            id,
            problems,
        ),
        not_data_actions: patterns(
            &block.not_data_actions,
            &format!("{path}.notDataActions"),
            id,
            problems,
        ),
        condition,
    }
}

fn patterns(
    list: &[String],
    path: &str,
    id: Option<&str>,
    problems: &mut Problems<'_>,
) -> PatternSet {
    let mut out = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        match ActionPattern::parse(text) {
            Ok(p) => out.push(p),
            Err(e) => problems.push(format!("{path}[{i}]"), id, format!("pattern '{text}' {e}")),
        }
    }
    PatternSet::new(out)
}

fn condition(
    text: Option<&str>,
    version: Option<&str>,
    path: &str,
    id: Option<&str>,
    problems: &mut Problems<'_>,
) -> Option<Condition> {
    if let Some(v) = version {
        if v != CONDITION_VERSION {
            problems.push(
                format!("{path}.conditionVersion"),
                id,
                format!("conditionVersion '{v}' is not supported; only {CONDITION_VERSION} is"),
            );
        }
    }
    let text = text?;
    match Condition::parse(text) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(
                format!("{path}.condition"),
                id,
                format!("condition does not parse: {e}"),
            );
            None
        }
    }
}

fn scope(text: &str, path: &str, id: Option<&str>, problems: &mut Problems<'_>) -> Option<Scope> {
    match Scope::parse(text) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(path, id, format!("scope '{text}' {e}"));
            None
        }
    }
}

/// Validates a whole snapshot against the built-in roles.
pub fn tenant(
    file: SnapshotFile,
    map: &SourceMap,
    builtin_roles: &[RoleDefinition],
    default_revision: String,
) -> Result<Tenant, Vec<Problem>> {
    let mut problems = Problems::new(map);
    let hierarchy = hierarchy(&file, &mut problems);
    let (principals, principal_index) = principals(&file, &mut problems);

    let mut roles: Vec<RoleDefinition> = builtin_roles.to_vec();
    let builtin_role_count = roles.len();
    let custom = role_definitions(
        &file.role_definitions,
        RoleType::CustomRole,
        "roleDefinitions",
        &mut problems,
    );
    let role_index = role_index(
        &mut roles,
        custom,
        &file.role_definitions,
        builtin_role_count,
        &mut problems,
    );

    let lookup_principal = |id: &str| principal_index.get(principal_key(id).as_ref()).copied();

    let mut role_assignments = Vec::with_capacity(file.role_assignments.len());
    let mut assignment_ids = HashSet::new();
    for (i, entry) in file.role_assignments.iter().enumerate() {
        if let Some(id) = &entry.id {
            if !assignment_ids.insert(id.to_ascii_lowercase()) {
                problems.push(
                    format!("roleAssignments[{i}]"),
                    Some(id),
                    format!("duplicate role assignment id '{id}'"),
                );
            }
        }
        if let Some(a) = role_assignment(
            entry,
            i,
            &hierarchy,
            &roles,
            &role_index,
            &lookup_principal,
            &mut problems,
        ) {
            if entry.id.is_none() && !assignment_ids.insert(a.id.to_ascii_lowercase()) {
                problems.push(
                    format!("roleAssignments[{i}]"),
                    Some(&a.id),
                    "the same principal, role and scope are assigned twice",
                );
            }
            role_assignments.push(a);
        }
    }

    let mut deny_assignments = Vec::with_capacity(file.deny_assignments.len());
    let mut deny_ids = HashSet::new();
    for (i, entry) in file.deny_assignments.iter().enumerate() {
        if !deny_ids.insert(entry.id.to_ascii_lowercase()) {
            problems.push(
                format!("denyAssignments[{i}].id"),
                Some(&entry.id),
                format!("duplicate deny assignment id '{}'", entry.id),
            );
        }
        if let Some(d) = deny_assignment(entry, i, &lookup_principal, &mut problems) {
            deny_assignments.push(d);
        }
    }

    let mut resources = Vec::with_capacity(file.resources.len());
    let mut resource_keys = HashSet::new();
    for (i, entry) in file.resources.iter().enumerate() {
        let path = format!("resources[{i}]");
        let Some(s) = scope(&entry.scope, &format!("{path}.scope"), None, &mut problems) else {
            continue;
        };
        if !resource_keys.insert(s.key().to_owned()) {
            problems.push(
                format!("{path}.scope"),
                Some(&entry.scope),
                "this resource is declared twice",
            );
        }
        resources.push(Resource {
            scope: s,
            tags: entry.tags.clone(),
            disable_local_auth: entry.disable_local_auth,
        });
    }

    let mut access_keys = Vec::with_capacity(file.access_keys.len());
    let mut key_ids = HashSet::new();
    for (i, entry) in file.access_keys.iter().enumerate() {
        let path = format!("accessKeys[{i}]");
        let id = Some(entry.id.as_str());
        if let Err(e) = check_principal_id(&entry.id) {
            problems.push(format!("{path}.id"), id, format!("id {e}"));
        }
        if !key_ids.insert(principal_key(&entry.id).into_owned()) {
            problems.push(
                format!("{path}.id"),
                id,
                format!("duplicate access key id '{}'", entry.id),
            );
        }
        if lookup_principal(&entry.id).is_some() {
            problems.push(
                format!("{path}.id"),
                id,
                "an access key id must not be a principal id too",
            );
        }
        if let Some(s) = scope(
            &entry.resource,
            &format!("{path}.resource"),
            id,
            &mut problems,
        ) {
            if !matches!(s.kind(), ScopeKind::Resource) {
                problems.push(
                    format!("{path}.resource"),
                    id,
                    format!(
                        "an access key is bound to a resource, not a {}",
                        s.kind().as_str()
                    ),
                );
            }
            access_keys.push(AccessKey {
                id: entry.id.clone(),
                resource: s,
            });
        }
    }

    let mut agents = Vec::with_capacity(file.agents.len());
    let mut agent_ids = HashSet::new();
    let mut agent_principals = HashMap::new();
    for (i, entry) in file.agents.iter().enumerate() {
        if !agent_ids.insert(entry.id.clone()) {
            problems.push(
                format!("agents[{i}].id"),
                Some(&entry.id),
                format!("duplicate agent id '{}'", entry.id),
            );
        }
        if let Some(agent) = agent(
            entry,
            i,
            &principals,
            &role_index,
            &lookup_principal,
            &mut problems,
        ) {
            if let Some(other) = agent_principals.insert(agent.principal, agent.id.clone()) {
                problems.push(
                    format!("agents[{i}].principal"),
                    Some(&entry.id),
                    format!(
                        "principal '{}' is already the identity of agent '{other}'",
                        entry.principal
                    ),
                );
            }
            agents.push(agent);
        }
    }

    // The standing assignments an agent's level derives (SPEC §2).
    for (a, agent) in agents.iter().enumerate() {
        let role = match agent.permission_level {
            PermissionLevel::Reader => role_index.resolve("Reader"),
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
        for scope in &agent.managed_scopes {
            if !role_assignable_at(&roles[role], scope, &hierarchy) {
                problems.push(
                    format!("agents[{a}].managedScopes"),
                    Some(&agent.id),
                    format!(
                        "role '{}' is not assignable at managed scope '{scope}'",
                        roles[role].role_name
                    ),
                );
            }
            role_assignments.push(RoleAssignment {
                id: format!("agent/{}/{}/{}", agent.id, roles[role].role_name, scope),
                principal: agent.principal,
                role,
                scope: scope.clone(),
                condition: None,
                derived_from_agent: Some(a),
            });
        }
    }

    if !problems.is_empty() {
        let mut list = problems.into_vec();
        // In file order; problems without a position (none today) last.
        list.sort_by_key(|p| p.location.map_or((usize::MAX, 0), |l| (l.line, l.column)));
        return Err(list);
    }
    Ok(Tenant {
        revision: file.revision.unwrap_or(default_revision),
        hierarchy,
        principals,
        role_definitions: roles,
        builtin_role_count,
        role_assignments,
        deny_assignments,
        resources,
        access_keys,
        agents,
    })
}

fn hierarchy(file: &SnapshotFile, problems: &mut Problems<'_>) -> Hierarchy {
    let mut mg_index: HashMap<String, usize> = HashMap::new();
    for (i, mg) in file.management_groups.iter().enumerate() {
        let path = format!("managementGroups[{i}].id");
        if mg.id.is_empty() || mg.id.contains(['/', ' ']) || mg.id.chars().any(char::is_control) {
            problems.push(
                &path,
                Some(&mg.id),
                "a management group id must be non-empty without '/', spaces or control characters",
            );
        }
        if mg_index.insert(mg.id.to_ascii_lowercase(), i).is_some() {
            problems.push(
                &path,
                Some(&mg.id),
                format!("duplicate management group id '{}'", mg.id),
            );
        }
    }
    let mut groups = Vec::with_capacity(file.management_groups.len());
    for (i, mg) in file.management_groups.iter().enumerate() {
        let parent = mg.parent.as_ref().and_then(|p| {
            let found = mg_index.get(&p.to_ascii_lowercase()).copied();
            if found.is_none() {
                problems.push(
                    format!("managementGroups[{i}].parent"),
                    Some(&mg.id),
                    format!("unknown parent management group '{p}'"),
                );
            }
            found
        });
        groups.push(ManagementGroup {
            id: mg.id.clone(),
            parent,
            display_name: mg.display_name.clone(),
        });
    }
    // Cycles: follow parents; more steps than groups means a loop.
    for (i, mg) in groups.iter().enumerate() {
        let mut next = mg.parent;
        let mut steps = 0;
        while let Some(p) = next {
            if p == i || steps > groups.len() {
                problems.push(
                    format!("managementGroups[{i}].parent"),
                    Some(&mg.id),
                    "management group parents form a cycle",
                );
                break;
            }
            steps += 1;
            next = groups[p].parent;
        }
    }
    let mut subs = Vec::with_capacity(file.subscriptions.len());
    let mut sub_ids = HashSet::new();
    for (i, s) in file.subscriptions.iter().enumerate() {
        let path = format!("subscriptions[{i}]");
        if Scope::parse(&format!("/subscriptions/{}", s.id)).map(|sc| sc.kind())
            != Ok(ScopeKind::Subscription)
        {
            problems.push(
                format!("{path}.id"),
                Some(&s.id),
                "a subscription id must be a single non-empty segment",
            );
        }
        if !sub_ids.insert(s.id.to_ascii_lowercase()) {
            problems.push(
                format!("{path}.id"),
                Some(&s.id),
                format!("duplicate subscription id '{}'", s.id),
            );
        }
        let management_group = s.management_group.as_ref().and_then(|m| {
            let found = mg_index.get(&m.to_ascii_lowercase()).copied();
            if found.is_none() {
                problems.push(
                    format!("{path}.managementGroup"),
                    Some(&s.id),
                    format!("unknown management group '{m}'"),
                );
            }
            found
        });
        subs.push(Subscription {
            id: s.id.clone(),
            management_group,
            display_name: s.display_name.clone(),
        });
    }
    Hierarchy::new(groups, subs)
}

fn principals(
    file: &SnapshotFile,
    problems: &mut Problems<'_>,
) -> (Vec<Principal>, HashMap<String, usize>) {
    let mut index = HashMap::with_capacity(file.principals.len());
    for (i, p) in file.principals.iter().enumerate() {
        let path = format!("principals[{i}].id");
        if let Err(e) = check_principal_id(&p.id) {
            problems.push(&path, Some(&p.id), format!("id {e}"));
        }
        if index.insert(principal_key(&p.id).into_owned(), i).is_some() {
            problems.push(
                &path,
                Some(&p.id),
                format!("duplicate principal id '{}'", p.id),
            );
        }
    }
    let mut out = Vec::with_capacity(file.principals.len());
    for (i, p) in file.principals.iter().enumerate() {
        let mut member_of = Vec::with_capacity(p.member_of.len());
        for (g, group) in p.member_of.iter().enumerate() {
            let path = format!("principals[{i}].memberOf[{g}]");
            match index.get(principal_key(group).as_ref()) {
                None => problems.push(path, Some(&p.id), format!("unknown group '{group}'")),
                Some(&gi) if file.principals[gi].kind != PrincipalType::Group => problems.push(
                    path,
                    Some(&p.id),
                    format!("'{group}' is a {}, not a Group", file.principals[gi].kind),
                ),
                Some(&gi) => member_of.push(gi),
            }
        }
        out.push(Principal {
            id: p.id.clone(),
            kind: p.kind,
            display_name: p.display_name.clone(),
            member_of,
            attributes: p.attributes.clone(),
        });
    }
    for cycle in membership_cycles(&out) {
        let names: Vec<&str> = cycle.iter().map(|&i| out[i].id.as_str()).collect();
        let first = cycle[0];
        problems.push(
            format!("principals[{first}].memberOf"),
            Some(&out[first].id),
            format!(
                "group membership forms a cycle: {} -> {}",
                names.join(" -> "),
                names[0]
            ),
        );
    }
    (out, index)
}

/// Every membership cycle, each reported once (by iterative DFS colouring).
fn membership_cycles(principals: &[Principal]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let mut colour = vec![Colour::White; principals.len()];
    let mut cycles = Vec::new();
    for start in 0..principals.len() {
        if colour[start] != Colour::White {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = Colour::Grey;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&group) = principals[node].member_of.get(*next) {
                *next += 1;
                match colour[group] {
                    Colour::White => {
                        colour[group] = Colour::Grey;
                        stack.push((group, 0));
                    }
                    Colour::Grey => {
                        let from = stack.iter().position(|&(n, _)| n == group).unwrap_or(0);
                        cycles.push(stack[from..].iter().map(|&(n, _)| n).collect());
                    }
                    Colour::Black => {}
                }
            } else {
                colour[node] = Colour::Black;
                stack.pop();
            }
        }
    }
    cycles
}

/// Adds the custom roles and builds the look-up by id, name and alias,
/// reporting redefinitions and ambiguous names.
fn role_index(
    roles: &mut Vec<RoleDefinition>,
    custom: Vec<RoleDefinition>,
    entries: &[RoleDefinitionEntry],
    builtin_count: usize,
    problems: &mut Problems<'_>,
) -> RoleIndex {
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for (i, role) in roles.iter().enumerate() {
        by_key.insert(role.id.clone(), i);
        by_key.insert(role.role_name.to_ascii_lowercase(), i);
        for alias in &role.aliases {
            by_key.entry(alias.to_ascii_lowercase()).or_insert(i);
        }
    }
    for role in custom {
        let at = entries
            .iter()
            .position(|e| e.id.eq_ignore_ascii_case(&role.id))
            .unwrap_or(0);
        let path = format!("roleDefinitions[{at}]");
        let id = Some(role.id.as_str());
        match by_key.get(&role.id) {
            Some(&other) if other < builtin_count => {
                problems.push(
                    format!("{path}.id"),
                    id,
                    format!(
                        "id {} is the built-in role '{}' and may not be redefined",
                        role.id, roles[other].role_name
                    ),
                );
                continue;
            }
            Some(_) => {
                problems.push(
                    format!("{path}.id"),
                    id,
                    format!("duplicate role definition id '{}'", role.id),
                );
                continue;
            }
            None => {}
        }
        let index = roles.len();
        for name in std::iter::once(&role.role_name).chain(&role.aliases) {
            if let Some(&other) = by_key.get(&name.to_ascii_lowercase()) {
                problems.push(
                    format!("{path}.roleName"),
                    id,
                    format!(
                        "name '{name}' already names role {} ('{}')",
                        roles[other].id, roles[other].role_name
                    ),
                );
            }
        }
        by_key.insert(role.id.clone(), index);
        for name in std::iter::once(&role.role_name).chain(&role.aliases) {
            by_key.entry(name.to_ascii_lowercase()).or_insert(index);
        }
        roles.push(role);
    }
    RoleIndex { by_key }
}

fn role_assignable_at(role: &RoleDefinition, scope: &Scope, hierarchy: &Hierarchy) -> bool {
    role.assignable_scopes
        .iter()
        .any(|a| hierarchy.contains(a, scope))
}

/// A deterministic id for an assignment written without one, so that
/// explanations stay the same across reloads of the same content.
fn generated_assignment_id(principal: &str, role: &str, scope: &Scope) -> String {
    let digest = Sha256::digest(format!(
        "{}\n{}\n{}",
        principal_key(principal),
        role,
        scope.key()
    ));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    crate::model::uuid_text(&bytes)
}

fn role_assignment(
    entry: &RoleAssignmentEntry,
    i: usize,
    hierarchy: &Hierarchy,
    roles: &[RoleDefinition],
    role_index: &RoleIndex,
    lookup_principal: &dyn Fn(&str) -> Option<usize>,
    problems: &mut Problems<'_>,
) -> Option<RoleAssignment> {
    let path = format!("roleAssignments[{i}]");
    let id = entry.id.as_deref();
    let before = problems.list.len();
    if let Some(given) = id {
        if given.trim().is_empty() {
            problems.push(format!("{path}.id"), id, "id is empty");
        }
    }
    let principal = lookup_principal(&entry.principal);
    if principal.is_none() {
        problems.push(
            format!("{path}.principal"),
            id,
            format!("unknown principal '{}'", entry.principal),
        );
    }
    let role = role_index.resolve(&entry.role);
    if role.is_none() {
        problems.push(
            format!("{path}.role"),
            id,
            format!(
                "unknown role '{}' (give a role id, name or earlier name)",
                entry.role
            ),
        );
    }
    let scope = scope(&entry.scope, &format!("{path}.scope"), id, problems);
    if let (Some(r), Some(s)) = (role, &scope) {
        if !role_assignable_at(&roles[r], s, hierarchy) {
            let allowed: Vec<&str> = roles[r]
                .assignable_scopes
                .iter()
                .map(Scope::as_str)
                .collect();
            problems.push(
                format!("{path}.scope"),
                id,
                format!(
                    "role '{}' is not assignable at '{s}'; its assignableScopes are {allowed:?}",
                    roles[r].role_name
                ),
            );
        }
    }
    let condition = condition(
        entry.condition.as_deref(),
        entry.condition_version.as_deref(),
        &path,
        id,
        problems,
    );
    if problems.list.len() != before {
        return None;
    }
    let (principal, role, scope) = (principal?, role?, scope?);
    Some(RoleAssignment {
        id: entry
            .id
            .clone()
            .unwrap_or_else(|| generated_assignment_id(&entry.principal, &roles[role].id, &scope)),
        principal,
        role,
        scope,
        condition,
        derived_from_agent: None,
    })
}

fn deny_assignment(
    entry: &DenyAssignmentEntry,
    i: usize,
    lookup_principal: &dyn Fn(&str) -> Option<usize>,
    problems: &mut Problems<'_>,
) -> Option<DenyAssignment> {
    let path = format!("denyAssignments[{i}]");
    let id = Some(entry.id.as_str());
    let before = problems.list.len();
    if entry.id.trim().is_empty() {
        problems.push(format!("{path}.id"), id, "id is empty");
    }
    let mut resolve_all = |list: &[String], field: &str| -> Vec<usize> {
        list.iter()
            .enumerate()
            .filter_map(|(p, pid)| {
                let found = lookup_principal(pid);
                if found.is_none() {
                    problems.push(
                        format!("{path}.{field}[{p}]"),
                        id,
                        format!("unknown principal '{pid}'"),
                    );
                }
                found
            })
            .collect()
    };
    let principals = resolve_all(&entry.principals, "principals");
    let exclude_principals = resolve_all(&entry.exclude_principals, "excludePrincipals");
    if entry.everyone && !entry.principals.is_empty() {
        problems.push(
            format!("{path}.principals"),
            id,
            "give either everyone: true or principals, not both",
        );
    }
    if !entry.everyone && entry.principals.is_empty() {
        problems.push(
            format!("{path}.principals"),
            id,
            "a deny assignment needs principals or everyone: true",
        );
    }
    if entry.actions.is_empty() && entry.data_actions.is_empty() {
        problems.push(
            format!("{path}.actions"),
            id,
            "a deny assignment needs actions or dataActions",
        );
    }
    let scope = scope(&entry.scope, &format!("{path}.scope"), id, problems);
    let actions = patterns(&entry.actions, &format!("{path}.actions"), id, problems);
    let not_actions = patterns(
        &entry.not_actions,
        &format!("{path}.notActions"),
        id,
        problems,
    );
    let data_actions = patterns(
        &entry.data_actions,
        &format!("{path}.dataActions"),
        id,
        problems,
    );
    let not_data_actions = patterns(
        &entry.not_data_actions,
        &format!("{path}.notDataActions"),
        id,
        problems,
    );
    if problems.list.len() != before {
        return None;
    }
    Some(DenyAssignment {
        id: entry.id.clone(),
        principals,
        everyone: entry.everyone,
        exclude_principals,
        scope: scope?,
        do_not_apply_to_child_scopes: entry.do_not_apply_to_child_scopes,
        actions,
        not_actions,
        data_actions,
        not_data_actions,
    })
}

const DEFAULT_DURATION_S: u64 = 15 * 60;
const DEFAULT_MAX_DURATION_S: u64 = 8 * 3600;
const DEFAULT_MAX_WAIT_S: u64 = 3600;
const DEFAULT_INTERACT_ACTION: &str = "Microsoft.App/agents/write";

fn agent(
    entry: &AgentEntry,
    i: usize,
    principals: &[Principal],
    role_index: &RoleIndex,
    lookup_principal: &dyn Fn(&str) -> Option<usize>,
    problems: &mut Problems<'_>,
) -> Option<Agent> {
    let path = format!("agents[{i}]");
    let id = Some(entry.id.as_str());
    let before = problems.list.len();
    if entry.id.trim().is_empty() {
        problems.push(format!("{path}.id"), id, "id is empty");
    }
    let principal = lookup_principal(&entry.principal);
    match principal {
        None => problems.push(
            format!("{path}.principal"),
            id,
            format!("unknown principal '{}'", entry.principal),
        ),
        Some(p) if principals[p].kind == PrincipalType::Group => problems.push(
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
        if let Some(s) = scope(text, &mpath, id, problems) {
            if s.kind() != ScopeKind::ResourceGroup {
                problems.push(
                    mpath,
                    id,
                    format!(
                        "managed scopes are resource groups; '{s}' is a {}",
                        s.kind().as_str()
                    ),
                );
            } else {
                managed_scopes.push(s);
            }
        }
    }
    let e = &entry.elevation;
    let duration = |field: &str,
                    value: &Option<String>,
                    default: u64,
                    problems: &mut Problems<'_>| match value {
        None => std::time::Duration::from_secs(default),
        Some(text) => parse_duration(text).unwrap_or_else(|err| {
            problems.push(
                format!("{path}.elevation.{field}"),
                id,
                format!("duration '{text}' {err}"),
            );
            std::time::Duration::ZERO
        }),
    };
    let default_duration = duration(
        "defaultDuration",
        &e.default_duration,
        DEFAULT_DURATION_S,
        problems,
    );
    let max_duration = duration(
        "maxDuration",
        &e.max_duration,
        DEFAULT_MAX_DURATION_S,
        problems,
    );
    let max_wait = duration("maxWait", &e.max_wait, DEFAULT_MAX_WAIT_S, problems);
    if default_duration > max_duration {
        problems.push(
            format!("{path}.elevation.defaultDuration"),
            id,
            "defaultDuration is longer than maxDuration",
        );
    }
    let interact_action = e
        .interact_action
        .clone()
        .unwrap_or_else(|| DEFAULT_INTERACT_ACTION.to_owned());
    if let Err(err) = check_operation(&interact_action) {
        problems.push(
            format!("{path}.elevation.interactAction"),
            id,
            format!("interactAction '{interact_action}' {err}"),
        );
    }
    let privileged_name = e.privileged_role.as_deref().unwrap_or("Contributor");
    let privileged_role = role_index.resolve(privileged_name);
    if privileged_role.is_none() {
        problems.push(
            format!("{path}.elevation.privilegedRole"),
            id,
            format!("unknown role '{privileged_name}'"),
        );
    }
    let mut auto_approve = Vec::with_capacity(e.auto_approve.len());
    for (r, rule) in e.auto_approve.iter().enumerate() {
        let rpath = format!("{path}.elevation.autoApprove[{r}]");
        if rule.actions.is_empty() {
            problems.push(
                format!("{rpath}.actions"),
                id,
                "an auto-approve rule needs at least one action pattern",
            );
        }
        let actions: Vec<ActionPattern> =
            patterns(&rule.actions, &format!("{rpath}.actions"), id, problems)
                .iter()
                .cloned()
                .collect();
        let mut scopes = Vec::with_capacity(rule.scopes.len());
        for (s, text) in rule.scopes.iter().enumerate() {
            let spath = format!("{rpath}.scopes[{s}]");
            if let Some(sc) = scope(text, &spath, id, problems) {
                if !managed_scopes.iter().any(|m| sc.is_structurally_within(m)) {
                    problems.push(
                        spath,
                        id,
                        format!("scope '{sc}' is outside the agent's managed scopes"),
                    );
                }
                scopes.push(sc);
            }
        }
        let rule_max = rule.max_duration.as_ref().map(|text| {
            parse_duration(text).unwrap_or_else(|err| {
                problems.push(
                    format!("{rpath}.maxDuration"),
                    id,
                    format!("duration '{text}' {err}"),
                );
                std::time::Duration::ZERO
            })
        });
        if rule_max.is_some_and(|m| m > max_duration) {
            problems.push(
                format!("{rpath}.maxDuration"),
                id,
                "the rule's maxDuration is longer than the agent's",
            );
        }
        let on_behalf_of = lookup_principal(&rule.on_behalf_of);
        if on_behalf_of.is_none() {
            problems.push(
                format!("{rpath}.onBehalfOf"),
                id,
                format!("unknown principal '{}'", rule.on_behalf_of),
            );
        }
        if rule.max_per_hour == Some(0) {
            problems.push(
                format!("{rpath}.maxPerHour"),
                id,
                "maxPerHour must be at least 1 (remove the rule to disable it)",
            );
        }
        if let Some(on_behalf_of) = on_behalf_of {
            auto_approve.push(AutoApproveRule {
                actions,
                scopes,
                data_action: rule.data_action,
                read_only: rule.read_only,
                max_duration: rule_max,
                on_behalf_of,
                max_per_hour: rule.max_per_hour,
            });
        }
    }
    if !auto_approve.is_empty() && entry.execution_mode == ExecutionMode::Review {
        tracing::debug!(agent = %entry.id, "autoApprove rules of a Review-mode agent are never applied");
    }
    if problems.list.len() != before {
        return None;
    }
    Some(Agent {
        id: entry.id.clone(),
        principal: principal?,
        resource: resource?,
        managed_scopes,
        permission_level: entry.permission_level,
        execution_mode: entry.execution_mode,
        elevation: ElevationSettings {
            default_duration,
            max_duration,
            max_wait,
            interact_action,
            privileged_role: privileged_role?,
            auto_approve,
        },
    })
}
