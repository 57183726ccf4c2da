//! `rampart diff` on the decision benchmark's tenant (100,000 role
//! assignments, 10,000 principals in 500 groups, 1,000 scopes, 20 deny
//! assignments, the built-in catalog) against the same tenant with one
//! change (README.md#performance):
//!
//! - `one_user_assignment`: one more assignment to one user;
//! - `one_group_assignment`: one more assignment to a group (its members
//!   are compared too);
//! - `everyone_deny`: one more deny assignment for everyone, which every
//!   principal must be compared for.
//!
//! Loading the two snapshots, which `rampart diff` does in parallel, is
//! timed once and printed. With `RAMPART_BENCH_WRITE_DIR=DIR`, the old
//! snapshot and the one-user change are also written there as old.yaml and
//! new.yaml, to time the command end to end.
//!
//! Run with `cargo bench --bench diff`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::review::diff::diff;
use rampart::snapshot::{self, CompiledSnapshot};

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

/// The tenant; `extra_assignment` and `extra_deny` are appended to their
/// sections.
fn tenant_yaml(extra_assignment: &str, extra_deny: &str) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
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
    y.push_str("roleAssignments:\n");
    for i in 0..ASSIGNMENTS {
        let p = rng.below(PRINCIPALS);
        let role = roles[rng.below(roles.len())];
        let scope = &scopes[rng.below(scopes.len())];
        let _ = writeln!(
            y,
            "  - {{ id: ra-{i}, principal: {}, role: {role}, scope: '{scope}' }}",
            principal(p)
        );
    }
    y.push_str(extra_assignment);
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
    y.push_str(extra_deny);
    y
}

fn load(yaml: &str) -> CompiledSnapshot {
    snapshot::load_str(yaml, "bench").unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let old_yaml = tenant_yaml("", "");
    let user = format!(
        "  - {{ id: ra-new, principal: user-4242, role: Contributor, scope: '{}' }}\n",
        rg(3, 4)
    );
    let group = format!(
        "  - {{ id: ra-new, principal: group-42, role: Owner, scope: '{}' }}\n",
        sub(2)
    );
    let deny = format!(
        "  - {{ id: deny-new, everyone: true, scope: '{}', actions: ['Microsoft.Compute/virtualMachines/delete'] }}\n",
        rg(1, 1)
    );
    let user_yaml = tenant_yaml(&user, "");
    if let Some(dir) = std::env::var_os("RAMPART_BENCH_WRITE_DIR") {
        let dir = std::path::PathBuf::from(dir);
        let written = std::fs::write(dir.join("old.yaml"), &old_yaml)
            .and_then(|()| std::fs::write(dir.join("new.yaml"), &user_yaml));
        if let Err(e) = written {
            panic!("cannot write to {}: {e}", dir.display());
        }
        eprintln!("wrote old.yaml and new.yaml to {}", dir.display());
    }

    let started = Instant::now();
    let (old, new) = std::thread::scope(|s| {
        let old = s.spawn(|| load(&old_yaml));
        let new = load(&user_yaml);
        (old.join().unwrap_or_else(|_| panic!("loading failed")), new)
    });
    eprintln!(
        "loaded two snapshots of {} assignments in parallel in {:?}",
        old.tenant.role_assignments.len(),
        started.elapsed()
    );
    drop(user_yaml);

    let mut g = c.benchmark_group("diff");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    // Each case loads its new snapshot when first run (criterion runs the
    // closure for the warm-up and again for each sample), so a filtered-out
    // case costs nothing.
    let mut case = |name: &str, load_new: &dyn Fn() -> CompiledSnapshot| {
        let mut cached: Option<CompiledSnapshot> = None;
        g.bench_function(name, |b| {
            let new = match &mut cached {
                Some(new) => new,
                None => {
                    let new = cached.insert(load_new());
                    let started = Instant::now();
                    let report = diff(&old, new);
                    eprintln!(
                        "{name}: {} principals changed, {} operations gained, {} lost, in {:?}",
                        report.principals.len(),
                        report.summary.operations_gained,
                        report.summary.operations_lost,
                        started.elapsed()
                    );
                    new
                }
            };
            b.iter(|| black_box(diff(black_box(&old), black_box(&*new))))
        });
    };
    let loaded = std::cell::Cell::new(Some(new));
    case("one_user_assignment", &|| {
        loaded
            .take()
            .unwrap_or_else(|| load(&tenant_yaml(&user, "")))
    });
    case("one_group_assignment", &|| load(&tenant_yaml(&group, "")));
    case("everyone_deny", &|| load(&tenant_yaml("", &deny)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
