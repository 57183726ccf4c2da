//! Decisions that go through an elevation grant, where every use asks the
//! grant's lender (`onBehalfOf`) the same question at the request's scope
//! and attributes:
//!
//! - `agent_without_grant`: an agent's APPROVAL_REQUIRED, the baseline.
//! - `through_grant`: the same request answered ALLOW by one of 1,000 active
//!   grants (10 per agent), lender checked on the way.
//! - `through_grant_lender_refused`: a grant covers the request but a deny
//!   assignment stops its lender there, so the grant does not count.
//!
//! Also prints the heap allocations per decision (a counting allocator):
//! the grant path must stay at zero. Run with `cargo bench --bench grants`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::engine::grants::DIGEST_ATTRIBUTE;
use rampart::engine::{ActiveGrant, Engine, Request, Verdict};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const AGENTS: usize = 100;
const GRANTS_PER_AGENT: usize = 10;
const SUB: &str = "/subscriptions/00000000-0000-4000-8000-000000000001";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const START: &str = "Microsoft.Compute/virtualMachines/start/action";
const NO_ATTRIBUTES: &[(&str, &str)] = &[];

fn rg(g: usize) -> String {
    format!("{SUB}/resourceGroups/rg-{g}")
}

fn tenant() -> String {
    let mut y = String::from("revision: grants-bench\nsubscriptions:\n");
    let _ = writeln!(y, "  - id: {}", &SUB["/subscriptions/".len()..]);
    y.push_str("principals:\n  - { id: oncall, type: User }\n");
    for a in 0..AGENTS {
        let _ = writeln!(y, "  - {{ id: agent-{a}, type: ManagedIdentity }}");
    }
    y.push_str("roleAssignments:\n");
    let _ = writeln!(
        y,
        "  - {{ principal: oncall, role: Contributor, scope: {SUB} }}"
    );
    y.push_str("denyAssignments:\n");
    let _ = writeln!(
        y,
        "  - {{ id: deny-critical, principals: [oncall], scope: {}/providers/Microsoft.Compute/virtualMachines/critical, actions: [\"{RESTART}\"] }}",
        rg(0)
    );
    y.push_str("agents:\n");
    for a in 0..AGENTS {
        let _ = writeln!(
            y,
            "  - {{ id: a{a}, principal: agent-{a}, resource: {}/providers/Microsoft.App/agents/a{a}, managedScopes: [{}], permissionLevel: Reader, executionMode: Review }}",
            rg(9_999),
            (0..GRANTS_PER_AGENT).map(rg).collect::<Vec<_>>().join(", ")
        );
    }
    y
}

fn grant(agent: usize, g: usize) -> Arc<ActiveGrant> {
    let scope = rg(g);
    Arc::new(ActiveGrant {
        id: format!("g-{agent}-{g}").into(),
        principal_key: format!("agent-{agent}").into(),
        action: RESTART.into(),
        scope_key: scope.to_ascii_lowercase().into(),
        scope: scope.into(),
        data_action: false,
        on_behalf_of: "oncall".into(),
        co_lenders: Box::default(),
        request_digest: None,
        expires_at: SystemTime::now() + Duration::from_secs(3600),
        max_uses: 0,
        uses: AtomicU32::new(0),
        reserved: AtomicU32::new(0),
        wanted: Default::default(),
    })
}

fn bench(c: &mut Criterion) {
    let snapshot =
        rampart::snapshot::load_str(&tenant(), "bench").unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::new(snapshot);
    let vm = |name: &str| {
        format!(
            "{}/providers/Microsoft.Compute/virtualMachines/{name}",
            rg(0)
        )
    };
    let (vm1, critical) = (vm("vm1"), vm("critical"));
    let ask = |principal: &'static str, scope: &str| -> Verdict {
        let loaded = engine.current();
        let request = Request {
            principal_id: principal,
            action: RESTART,
            scope,
            data_action: false,
            attributes: &NO_ATTRIBUTES,
            explain: false,
            dry_run: false,
        };
        loaded
            .decide_with(&request, Some(engine.live()))
            .map(|d| d.verdict)
            .unwrap_or(Verdict::Deny)
    };

    assert_eq!(ask("agent-7", &vm1), Verdict::ApprovalRequired);
    let mut group = c.benchmark_group("grants");
    group.bench_function("agent_without_grant", |b| {
        b.iter(|| black_box(ask(black_box("agent-7"), black_box(&vm1))))
    });

    for a in 0..AGENTS {
        for g in 0..GRANTS_PER_AGENT {
            engine.grants.insert(grant(a, g));
        }
    }
    assert_eq!(ask("agent-7", &vm1), Verdict::Allow);
    assert_eq!(ask("agent-7", &critical), Verdict::ApprovalRequired);
    group.bench_function("through_grant", |b| {
        b.iter(|| black_box(ask(black_box("agent-7"), black_box(&vm1))))
    });
    group.bench_function("through_grant_lender_refused", |b| {
        b.iter(|| black_box(ask(black_box("agent-7"), black_box(&critical))))
    });

    // A grant bound to one request body, approved by two: the digest is
    // compared and both lenders asked on every use.
    let digest = "ab".repeat(32);
    engine.grants.insert(Arc::new(ActiveGrant {
        id: "g-bound".into(),
        principal_key: "agent-8".into(),
        action: START.into(),
        scope_key: vm1.to_ascii_lowercase().into(),
        scope: vm1.as_str().into(),
        data_action: false,
        on_behalf_of: "oncall".into(),
        co_lenders: vec!["oncall".into()].into_boxed_slice(),
        request_digest: Some(digest.as_str().into()),
        expires_at: SystemTime::now() + Duration::from_secs(3600),
        max_uses: 0,
        uses: AtomicU32::new(0),
        reserved: AtomicU32::new(0),
        wanted: Default::default(),
    }));
    let body: &[(&str, &str)] = &[(DIGEST_ATTRIBUTE, &digest)];
    let bound = || -> Verdict {
        let loaded = engine.current();
        let request = Request {
            principal_id: "agent-8",
            action: START,
            scope: &vm1,
            data_action: false,
            attributes: &body,
            explain: false,
            dry_run: false,
        };
        loaded
            .decide_with(&request, Some(engine.live()))
            .map(|d| d.verdict)
            .unwrap_or(Verdict::Deny)
    };
    assert_eq!(bound(), Verdict::Allow);
    group.bench_function("through_bound_grant_two_lenders", |b| {
        b.iter(|| black_box(bound()))
    });
    group.finish();
    bound();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..10_000 {
        black_box(bound());
    }
    let per = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 10_000.0;
    println!("allocations per decision through a bound grant with two lenders: {per}");
    assert!(per == 0.0, "the bound grant path allocates");

    // Warm, then count: the steady state allocates nothing.
    for scope in [&vm1, &critical] {
        ask("agent-7", scope);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..10_000 {
            black_box(ask("agent-7", scope));
        }
        let per = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 10_000.0;
        println!("allocations per grant decision at {scope}: {per}");
        assert!(per == 0.0, "the grant path allocates");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
