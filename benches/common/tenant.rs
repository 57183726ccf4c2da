//! A deterministic large tenant for the scale benchmark: `n` role
//! assignments, ten per principal, over one resource group per ten
//! principals, with built-in roles only — the shape of an Azure export of a
//! large directory.
//!
//! - 100 subscriptions under one management group; resource group `i` sits
//!   in subscription `i % 100`.
//! - `n / 10` principals (GUIDs): one in a hundred is a Group; every other
//!   principal belongs to two groups.
//! - Each principal holds ten assignments with ids (GUIDs), nine at resource
//!   groups spread over the tenant and one at a subscription, of roles drawn
//!   from eight built-in roles.
//! - [`AGENTS`] agent identities in Review mode, each managing one resource
//!   group, and an `oncall` user who may approve their elevations.
//!
//! The same `n` gives the same bytes on every run and machine.

#![allow(dead_code)]

use std::fmt::Write as _;

pub const SUBSCRIPTIONS: usize = 100;
pub const PER_PRINCIPAL: usize = 10;
pub const AGENTS: usize = 100;

const ROLES: [&str; 8] = [
    "Reader",
    "Contributor",
    "Storage Blob Data Reader",
    "Virtual Machine Contributor",
    "Log Analytics Reader",
    "Key Vault Secrets User",
    "Network Contributor",
    "Storage Blob Data Contributor",
];

/// The shape of a generated tenant.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub assignments: usize,
    pub principals: usize,
    pub groups: usize,
    pub resource_groups: usize,
}

impl Shape {
    pub fn new(assignments: usize) -> Shape {
        let principals = (assignments / PER_PRINCIPAL).max(1);
        Shape {
            assignments: principals * PER_PRINCIPAL,
            principals,
            groups: (principals / 100).max(1),
            resource_groups: (principals / 10).max(1),
        }
    }
}

/// A GUID-shaped id, from a kind tag and a number.
pub fn guid(kind: u32, n: usize) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        kind,
        (n >> 48) & 0xffff,
        (n >> 36) & 0xfff,
        (n >> 24) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

pub fn principal_id(p: usize) -> String {
    guid(0x0b5f_6a1e, p)
}

pub fn subscription(s: usize) -> String {
    guid(0x5ab5_c0de, s)
}

pub fn resource_group_scope(rg: usize) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/rg-{rg}",
        subscription(rg % SUBSCRIPTIONS)
    )
}

pub fn agent_id(a: usize) -> String {
    guid(0xa6e7_0000, a)
}

/// The resource group agent `a` manages.
pub fn agent_scope(a: usize) -> String {
    resource_group_scope(a)
}

/// Principal `p` is a group when `p % 100 == 0`.
pub fn is_group(p: usize) -> bool {
    p % 100 == 0
}

/// A small deterministic mixer (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The groups principal `p` belongs to (none for groups themselves).
pub fn groups_of(shape: &Shape, p: usize) -> [usize; 2] {
    let g = shape.groups as u64;
    let a = (mix(p as u64) % g) as usize * 100;
    let b = (mix(p as u64 ^ 0xdead) % g) as usize * 100;
    [
        a,
        if b == a {
            (a + 100) % (shape.groups * 100)
        } else {
            b
        },
    ]
}

/// Assignment `k` (0..10) of principal `p`: its role and scope.
pub fn assignment(shape: &Shape, p: usize, k: usize) -> (&'static str, String) {
    let h = mix((p * PER_PRINCIPAL + k) as u64);
    let role = ROLES[(h % ROLES.len() as u64) as usize];
    let scope = if k == PER_PRINCIPAL - 1 {
        format!("/subscriptions/{}", subscription(p % SUBSCRIPTIONS))
    } else {
        // Spread over resource groups; `k` keeps the nine apart.
        let rg = ((h >> 8) as usize % shape.resource_groups / 9) * 9 + k;
        resource_group_scope(rg.min(shape.resource_groups - 1))
    };
    (role, scope)
}

/// The tenant as YAML, one flow mapping per entry (as `rampart import`
/// and most generators write it).
pub fn yaml(shape: &Shape) -> String {
    let mut y = String::with_capacity(shape.assignments * 200);
    y.push_str("revision: scale-bench\nmanagementGroups:\n  - { id: contoso }\nsubscriptions:\n");
    for s in 0..SUBSCRIPTIONS {
        let _ = writeln!(
            y,
            "  - {{ id: {}, managementGroup: contoso }}",
            subscription(s)
        );
    }
    y.push_str("principals:\n");
    for p in 0..shape.principals {
        if is_group(p) {
            let _ = writeln!(y, "  - {{ id: {}, type: Group }}", principal_id(p));
        } else {
            let [a, b] = groups_of(shape, p);
            let _ = writeln!(
                y,
                "  - {{ id: {}, type: User, memberOf: [{}, {}] }}",
                principal_id(p),
                principal_id(a),
                principal_id(b)
            );
        }
    }
    y.push_str("  - { id: oncall, type: User }\n");
    for a in 0..AGENTS {
        let _ = writeln!(y, "  - {{ id: {}, type: ManagedIdentity }}", agent_id(a));
    }
    y.push_str("agents:\n");
    for a in 0..AGENTS {
        let _ = writeln!(
            y,
            "  - {{ id: agent-{a}, principal: {}, resource: '{}/providers/Microsoft.App/agents/a{a}', managedScopes: ['{}'], permissionLevel: Reader, executionMode: Review, elevation: {{ maxRequestsPerMinute: 1000 }} }}",
            agent_id(a),
            agent_scope(a),
            agent_scope(a)
        );
    }
    y.push_str("roleAssignments:\n  - { principal: oncall, role: Contributor, scope: / }\n");
    for p in 0..shape.principals {
        for k in 0..PER_PRINCIPAL {
            let (role, scope) = assignment(shape, p, k);
            let _ = writeln!(
                y,
                "  - {{ id: {}, principal: {}, role: {role}, scope: {scope} }}",
                guid(0xa551_0000, p * PER_PRINCIPAL + k),
                principal_id(p)
            );
        }
    }
    y
}

/// The same tenant as JSON.
pub fn json(shape: &Shape) -> String {
    let mut j = String::with_capacity(shape.assignments * 200);
    j.push_str("{\"revision\": \"scale-bench\",\n\"managementGroups\": [{\"id\": \"contoso\"}],\n\"subscriptions\": [\n");
    for s in 0..SUBSCRIPTIONS {
        let sep = if s + 1 < SUBSCRIPTIONS { "," } else { "" };
        let _ = writeln!(
            j,
            "  {{\"id\": \"{}\", \"managementGroup\": \"contoso\"}}{sep}",
            subscription(s)
        );
    }
    j.push_str("],\n\"principals\": [\n");
    for p in 0..shape.principals {
        let sep = if p + 1 < shape.principals { "," } else { "" };
        if is_group(p) {
            let _ = writeln!(
                j,
                "  {{\"id\": \"{}\", \"type\": \"Group\"}}{sep}",
                principal_id(p)
            );
        } else {
            let [a, b] = groups_of(shape, p);
            let _ = writeln!(
                j,
                "  {{\"id\": \"{}\", \"type\": \"User\", \"memberOf\": [\"{}\", \"{}\"]}}{sep}",
                principal_id(p),
                principal_id(a),
                principal_id(b)
            );
        }
    }
    j.push_str(",\n  {\"id\": \"oncall\", \"type\": \"User\"}");
    for a in 0..AGENTS {
        let _ = write!(
            j,
            ",\n  {{\"id\": \"{}\", \"type\": \"ManagedIdentity\"}}",
            agent_id(a)
        );
    }
    j.push_str("\n],\n\"agents\": [\n");
    for a in 0..AGENTS {
        let _ = writeln!(
            j,
            "  {{\"id\": \"agent-{a}\", \"principal\": \"{}\", \"resource\": \"{}/providers/Microsoft.App/agents/a{a}\", \"managedScopes\": [\"{}\"], \"permissionLevel\": \"Reader\", \"executionMode\": \"Review\", \"elevation\": {{\"maxRequestsPerMinute\": 1000}}}}{}",
            agent_id(a),
            agent_scope(a),
            agent_scope(a),
            if a + 1 < AGENTS { "," } else { "" }
        );
    }
    j.push_str("],\n\"roleAssignments\": [\n  {\"principal\": \"oncall\", \"role\": \"Contributor\", \"scope\": \"/\"},\n");
    for p in 0..shape.principals {
        for k in 0..PER_PRINCIPAL {
            let last = p + 1 == shape.principals && k + 1 == PER_PRINCIPAL;
            let (role, scope) = assignment(shape, p, k);
            let _ = writeln!(
                j,
                "  {{\"id\": \"{}\", \"principal\": \"{}\", \"role\": \"{role}\", \"scope\": \"{scope}\"}}{}",
                guid(0xa551_0000, p * PER_PRINCIPAL + k),
                principal_id(p),
                if last { "" } else { "," }
            );
        }
    }
    j.push_str("]}\n");
    j
}
