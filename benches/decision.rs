//! The decision core on a generated tenant of 100,000 role assignments,
//! 10,000 principals and 1,000 scopes (README.md#performance):
//!
//! - `warm`: a decision whose (principal, scope) effective permissions are
//!   cached — the steady state of a sidecar.
//! - `cold`: the first decision for a principal at a scope, which resolves
//!   and caches its effective permissions.
//! - `cold_new_scope`: as `cold`, at a resource name never seen before, so
//!   the scope string is parsed too.
//! - `conditions/*`: the same tenant with an ABAC condition on 10% of the
//!   assignments (and the whole built-in catalog, as always): the warm mix,
//!   the cold mix, and a decision whose only grant is conditioned, so the
//!   condition is evaluated every time.
//!
//! Run with `cargo bench --bench decision`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

#[path = "common/rss.rs"]
mod rss;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::engine::{Loaded, Request, Verdict};

const PRINCIPALS: usize = 10_000;
const GROUPS: usize = 500;
const ASSIGNMENTS: usize = 100_000;
const SUBSCRIPTIONS: usize = 10;
const GROUPS_PER_SUB: usize = 9;
const RESOURCES_PER_GROUP: usize = 10;

/// A small deterministic generator (xorshift), so every run sees the same tenant.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn sub(s: usize) -> String {
    format!("/subscriptions/00000000-0000-4000-8000-{s:012}")
}

fn rg(s: usize, g: usize) -> String {
    format!("{}/resourceGroups/rg-{g}", sub(s))
}

fn vm(s: usize, g: usize, r: usize) -> String {
    format!(
        "{}/providers/Microsoft.Compute/virtualMachines/vm-{r}",
        rg(s, g)
    )
}

/// 10 subscriptions + 90 resource groups + 900 resources = 1,000 scopes.
fn scopes() -> Vec<String> {
    let mut out = Vec::new();
    for s in 0..SUBSCRIPTIONS {
        out.push(sub(s));
        for g in 0..GROUPS_PER_SUB {
            out.push(rg(s, g));
            for r in 0..RESOURCES_PER_GROUP {
                out.push(vm(s, g, r));
            }
        }
    }
    out
}

fn principal(i: usize) -> String {
    if i < GROUPS {
        format!("group-{i}")
    } else {
        format!("user-{i}")
    }
}

/// A tag-scoped condition, the common shape: restart only where env=test.
const CONDITION: &str = "((!(ActionMatches{'Microsoft.Compute/virtualMachines/restart/action'})) OR (@Resource[env] StringEquals 'test'))";

fn tenant_yaml(rng: &mut Rng, conditioned_percent: usize) -> String {
    let mut y = String::with_capacity(24 << 20);
    y.push_str("revision: bench\nmanagementGroups:\n  - id: root\n  - id: platform\n    parent: root\nsubscriptions:\n");
    for s in 0..SUBSCRIPTIONS {
        let _ = writeln!(
            y,
            "  - id: 00000000-0000-4000-8000-{s:012}\n    managementGroup: platform"
        );
    }
    y.push_str("roleDefinitions:\n  - id: 9f0c1c52-0000-4000-8000-00000000c0de\n    roleName: VM Operator\n    permissions:\n      - actions: [Microsoft.Compute/virtualMachines/read, Microsoft.Compute/virtualMachines/start/action, Microsoft.Compute/virtualMachines/restart/action]\n    assignableScopes: [/]\n");
    y.push_str("principals:\n");
    for i in 0..PRINCIPALS {
        if i < GROUPS {
            let _ = writeln!(y, "  - {{ id: {}, type: Group }}", principal(i));
        } else {
            let (a, b) = (rng.below(GROUPS), rng.below(GROUPS));
            let groups = if a == b {
                principal(a)
            } else {
                format!("{}, {}", principal(a), principal(b))
            };
            let _ = writeln!(
                y,
                "  - {{ id: {}, type: User, memberOf: [{groups}] }}",
                principal(i)
            );
        }
    }
    let scopes = scopes();
    let roles = [
        "Reader",
        "Contributor",
        "VM Operator",
        "Storage Blob Data Reader",
        "Owner",
        "Virtual Machine Contributor",
    ];
    y.push_str("  - { id: conditioned-user, type: User }\n");
    y.push_str("roleAssignments:\n");
    for i in 0..ASSIGNMENTS {
        let p = rng.below(PRINCIPALS);
        let role = roles[rng.below(roles.len())];
        let scope = &scopes[rng.below(scopes.len())];
        let condition = if rng.below(100) < conditioned_percent {
            format!(", condition: \"{CONDITION}\"")
        } else {
            String::new()
        };
        let _ = writeln!(
            y,
            "  - {{ id: ra-{i}, principal: {}, role: {role}, scope: '{scope}'{condition} }}",
            principal(p)
        );
    }
    if conditioned_percent > 0 {
        // A principal whose only grant carries the condition.
        let _ = writeln!(
            y,
            "  - {{ id: ra-conditioned, principal: conditioned-user, role: Contributor, scope: '{}', condition: \"{CONDITION}\" }}",
            rg(0, 0)
        );
    }
    y.push_str("resources:\n");
    for s in 0..SUBSCRIPTIONS {
        for g in 0..GROUPS_PER_SUB {
            let env = if g % 2 == 0 { "test" } else { "prod" };
            let _ = writeln!(y, "  - {{ scope: '{}', tags: {{ env: {env} }} }}", rg(s, g));
        }
    }
    y.push_str("denyAssignments:\n");
    for d in 0..20 {
        let (s, g) = (rng.below(SUBSCRIPTIONS), rng.below(GROUPS_PER_SUB));
        let _ = writeln!(y, "  - {{ id: deny-{d}, everyone: true, excludePrincipals: [group-{d}], scope: '{}', actions: ['*/delete'] }}", rg(s, g));
    }
    y
}

const ACTIONS: [&str; 4] = [
    "Microsoft.Compute/virtualMachines/read",
    "Microsoft.Compute/virtualMachines/restart/action",
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Authorization/roleAssignments/write",
];

fn bench(c: &mut Criterion) {
    run(c, "decision", 0);
    run(c, "conditions", 10);
}

fn run(c: &mut Criterion, name: &str, conditioned_percent: usize) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let yaml = tenant_yaml(&mut rng, conditioned_percent);
    let rss_before = rss::rss_kib();
    let started = Instant::now();
    let snapshot = rampart::snapshot::load_str(&yaml, "bench").unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    drop(yaml);
    let grown = rss::rss_kib().saturating_sub(rss_before);
    eprintln!(
        "resident memory grew by {grown} KiB for the compiled snapshot: {} bytes per assignment",
        grown * 1024 / snapshot.tenant.role_assignments.len() as u64
    );
    eprintln!(
        "loaded {} assignments, {} principals, {} scopes in {:?}",
        snapshot.tenant.role_assignments.len(),
        snapshot.tenant.principals.len(),
        snapshot.nodes.len(),
        took
    );
    let loaded = Loaded::new(snapshot);
    let no_attributes: BTreeMap<String, String> = BTreeMap::new();
    let scopes = scopes();

    // Warm: 4,096 requests over users and resource scopes, decided once
    // before measuring so their effective permissions are cached.
    let warm: Vec<(String, &str, String)> = (0..4096)
        .map(|_| {
            let p = principal(GROUPS + rng.below(PRINCIPALS - GROUPS));
            let (s, g, r) = (
                rng.below(SUBSCRIPTIONS),
                rng.below(GROUPS_PER_SUB),
                rng.below(RESOURCES_PER_GROUP),
            );
            (p, ACTIONS[rng.below(ACTIONS.len())], vm(s, g, r))
        })
        .collect();
    let decide = |p: &str, action: &str, scope: &str| {
        loaded
            .decide(&Request {
                principal_id: p,
                action,
                scope,
                data_action: false,
                attributes: &no_attributes,
                explain: false,
                dry_run: false,
            })
            .map(|d| d.verdict)
            .unwrap_or(Verdict::Deny)
    };
    let allowed = warm
        .iter()
        .filter(|(p, a, s)| decide(p, a, s) == Verdict::Allow)
        .count();
    eprintln!("warm set: {allowed} of {} allowed", warm.len());

    // A server decides on strings it has just decoded, hot in cache; lay
    // the requests out back to back so the benchmark does not measure cache
    // misses on its own scattered test data instead.
    let mut arena = String::new();
    let mut spans = Vec::with_capacity(warm.len());
    for (p, a, s) in &warm {
        let start = arena.len();
        arena.push_str(p);
        arena.push_str(a);
        arena.push_str(s);
        spans.push((start, p.len(), a.len(), s.len()));
    }
    let requests: Vec<(&str, &str, &str)> = spans
        .iter()
        .map(|&(start, p, a, s)| {
            (
                &arena[start..start + p],
                &arena[start + p..start + p + a],
                &arena[start + p + a..start + p + a + s],
            )
        })
        .collect();

    let mut group = c.benchmark_group(name);
    let mut i = 0usize;
    group.bench_function("warm", |b| {
        b.iter(|| {
            let (p, a, s) = requests[i & 4095];
            i = i.wrapping_add(1);
            black_box(decide(black_box(p), black_box(a), black_box(s)))
        })
    });

    // Cold: walk (principal, scope) pairs in an order that never repeats a
    // pair within the run, so each decision resolves afresh.
    let principals: Vec<String> = (GROUPS..PRINCIPALS).map(principal).collect();
    let mut n = 0usize;
    group.bench_function("cold", |b| {
        b.iter(|| {
            let p = &principals[n % principals.len()];
            let s = &scopes[(n / principals.len() * 7 + n) % scopes.len()];
            n += 1;
            black_box(decide(p, ACTIONS[0], s))
        })
    });

    // Cold at a never-seen resource: the scope string is parsed as well.
    let rgs: Vec<String> = (0..SUBSCRIPTIONS * GROUPS_PER_SUB)
        .map(|k| rg(k % SUBSCRIPTIONS, k % GROUPS_PER_SUB))
        .collect();
    let mut m = 0usize;
    let mut fresh = String::with_capacity(160);
    group.bench_function("cold_new_scope", |b| {
        b.iter(|| {
            let p = &principals[m % principals.len()];
            fresh.clear();
            let _ = write!(
                fresh,
                "{}/providers/Microsoft.Compute/virtualMachines/new-{m}",
                rgs[m % rgs.len()]
            );
            m += 1;
            black_box(decide(p, ACTIONS[0], &fresh))
        })
    });
    if conditioned_percent > 0 {
        let (p, scope) = ("conditioned-user".to_owned(), vm(0, 0, 1));
        let action = ACTIONS[1];
        assert_eq!(
            decide(&p, action, &scope),
            Verdict::Allow,
            "the conditioned grant applies"
        );
        group.bench_function("conditioned_grant", |b| {
            b.iter(|| black_box(decide(black_box(&p), action, &scope)))
        });
    }
    group.finish();
    let stats = loaded.cache_stats();
    eprintln!(
        "cache: {} effective entries, {} scopes",
        stats.effective_entries, stats.scope_entries
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
