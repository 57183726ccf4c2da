//! Effective permissions of one principal at one scope anchor: everything
//! that does not depend on the operation, resolved once and cached.

use crate::snapshot::{
    AgentIx, Anchor, AssignmentIx, CompiledSnapshot, DenyIx, NodeId, Position, PrincipalIx, RoleIx,
};

/// An applicable role assignment and the group it came through: a source
/// of the principal's permissions (not an elevation grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignmentSource {
    pub assignment: AssignmentIx,
    /// The group the assignment names, when it is not the principal itself.
    pub via: Option<PrincipalIx>,
}

/// A permission block of a role, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub role: RoleIx,
    pub block: u32,
}

/// What a principal holds at a scope, before looking at the operation.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    /// Every applicable assignment, for explanations and admin views.
    pub sources: Box<[AssignmentSource]>,
    /// Distinct unconditional blocks that allow something on each plane:
    /// the whole work of a warm decision.
    pub control_blocks: Box<[BlockRef]>,
    pub data_blocks: Box<[BlockRef]>,
    /// Assignments with a condition on the assignment or on a block of
    /// their role; evaluated per request, and only when no unconditional
    /// block allows.
    pub conditional: Box<[AssignmentSource]>,
    /// Deny assignments that apply to the principal at this scope; whether
    /// they cover the operation is checked per request.
    pub denies: Box<[DenyIx]>,
    /// For an agent's identity: whether the scope is inside its managed scopes.
    pub agent: Option<AgentPosition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentPosition {
    pub agent: AgentIx,
    pub in_scope: bool,
}

/// Resolves the effective permissions of `principal` at `anchor`.
pub fn resolve(snapshot: &CompiledSnapshot, principal: PrincipalIx, anchor: Anchor) -> Effective {
    let tenant = &snapshot.tenant;
    let chain: Vec<NodeId> = snapshot.chain(anchor.node).collect();
    let on_chain = |node: NodeId| chain.contains(&node);
    let members = std::iter::once(principal).chain(snapshot.groups[principal].iter().copied());

    let mut sources = Vec::new();
    for member in members.clone() {
        for &a in snapshot.assignments_of[member].iter() {
            if on_chain(snapshot.assignment_node[a]) {
                sources.push(AssignmentSource {
                    assignment: a,
                    via: (member != principal).then_some(member),
                });
            }
        }
    }

    let mut control_blocks = Vec::new();
    let mut data_blocks = Vec::new();
    let mut conditional = Vec::new();
    for g in &sources {
        let assignment = &tenant.role_assignments[g.assignment];
        let role = &tenant.role_definitions[assignment.role];
        if assignment.condition.is_some() || role.permissions.iter().any(|b| b.condition.is_some())
        {
            conditional.push(*g);
            continue;
        }
        for (b, block) in role.permissions.iter().enumerate() {
            let r = BlockRef {
                role: RoleIx::at(assignment.role),
                block: b as u32,
            };
            if !block.actions.is_empty() && !control_blocks.contains(&r) {
                control_blocks.push(r);
            }
            if !block.data_actions.is_empty() && !data_blocks.contains(&r) {
                data_blocks.push(r);
            }
        }
    }

    let is_member = |candidate: PrincipalIx| {
        candidate == principal || snapshot.groups[principal].binary_search(&candidate).is_ok()
    };
    let mut denies = Vec::new();
    let targeted = members.flat_map(|m| snapshot.denies_of[m].iter().copied());
    for d in snapshot.everyone_denies.iter().copied().chain(targeted) {
        if denies.contains(&d) {
            continue;
        }
        let deny = &tenant.deny_assignments[d];
        let node = snapshot.deny_node[d];
        let at_scope = node == anchor.node && anchor.exact;
        let applies_here = at_scope || (!deny.do_not_apply_to_child_scopes && on_chain(node));
        let excluded = deny
            .exclude_principals
            .iter()
            .any(|&x| is_member(PrincipalIx::at(x)));
        if applies_here && !excluded {
            denies.push(d);
        }
    }

    let agent = snapshot.agent_of[principal].map(|agent| AgentPosition {
        agent,
        in_scope: snapshot.agent_managed_nodes[agent]
            .iter()
            .any(|&m| on_chain(m)),
    });

    Effective {
        sources: sources.into_boxed_slice(),
        control_blocks: control_blocks.into_boxed_slice(),
        data_blocks: data_blocks.into_boxed_slice(),
        conditional: conditional.into_boxed_slice(),
        denies: denies.into_boxed_slice(),
        agent,
    }
}
