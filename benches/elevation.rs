//! Elevation under load (README.md#performance): 10,000 concurrent pending elevations in
//! one process (100 agents × 100 requests, the per-principal limit), then
//! the latency from an approval to the waiting caller's answer, with the
//! durable SQLite store under a temporary `--state-dir`.
//!
//! Run with `cargo bench --bench elevation`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/rss.rs"]
mod rss;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::elevation::{Approval, Broker, ElevationRequest, ElevationState, Store};
use rampart::engine::Engine;

const AGENTS: usize = 100;
const PER_AGENT: usize = 100;
const SUB: &str = "/subscriptions/00000000-0000-4000-8000-000000000001";

fn snapshot() -> String {
    let mut y = String::from("principals:\n  - { id: oncall, type: User }\n");
    for a in 0..=AGENTS {
        let _ = writeln!(y, "  - {{ id: agent-{a}, type: ManagedIdentity }}");
    }
    y.push_str("roleAssignments:\n");
    let _ = writeln!(
        y,
        "  - {{ principal: oncall, role: Contributor, scope: '{SUB}' }}"
    );
    y.push_str("agents:\n");
    // Agent AGENTS (one past the loaded ones) is measured for latency.
    for a in 0..=AGENTS {
        let _ = writeln!(
            y,
            "  - {{ id: agent-{a}, principal: agent-{a}, resource: '{SUB}/resourceGroups/rg-agents/providers/Microsoft.App/agents/a{a}', managedScopes: ['{SUB}/resourceGroups/rg-{a}'], permissionLevel: Reader, executionMode: Review }}"
        );
    }
    y
}

fn vm(agent: usize, n: usize) -> String {
    format!("{SUB}/resourceGroups/rg-{agent}/providers/Microsoft.Compute/virtualMachines/vm-{n}")
}

const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";

fn spawn_wait(
    broker: &Arc<Broker>,
    agent: usize,
    n: usize,
) -> tokio::task::JoinHandle<Option<ElevationState>> {
    let broker = broker.clone();
    tokio::spawn(async move {
        let principal = format!("agent-{agent}");
        let scope = vm(agent, n);
        broker
            .request(ElevationRequest {
                principal_id: &principal,
                action: RESTART,
                scope: &scope,
                data_action: false,
                justification: "benchmark",
                requested_duration: None,
                wait_timeout: Some(Duration::from_secs(3600)),
                attributes: Default::default(),
                ticket: "",
                exact: None,
            })
            .await
            .ok()
            .map(|e| e.state)
    })
}

async fn pending_count(broker: &Broker, want: usize) {
    while broker
        .list()
        .iter()
        .filter(|e| e.state == ElevationState::Pending)
        .count()
        < want
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(Engine::new(
        rampart::snapshot::load_str(&snapshot(), "bench").expect("snapshot"),
    ));
    let broker = Broker::start(engine, Store::open(dir.path()).expect("store")).expect("broker");

    // 10,000 concurrent pending elevations.
    let before = rss::rss_kib();
    let started = Instant::now();
    let waiters: Vec<_> = rt.block_on(async {
        let waiters: Vec<_> = (0..AGENTS)
            .flat_map(|a| (0..PER_AGENT).map(move |n| (a, n)))
            .map(|(a, n)| spawn_wait(&broker, a, n))
            .collect();
        pending_count(&broker, AGENTS * PER_AGENT).await;
        waiters
    });
    eprintln!(
        "{} pending elevations held after {:?}; resident memory grew by {} KiB ({} bytes each)",
        AGENTS * PER_AGENT,
        started.elapsed(),
        rss::rss_kib().saturating_sub(before),
        rss::rss_kib().saturating_sub(before) * 1024 / (AGENTS * PER_AGENT) as u64
    );

    // Approval to the caller's answer, with 10,000 others pending, on an
    // agent of its own (the others are at their limit of 100).
    let mut n = 0;
    c.bench_function("elevation/approval_to_response", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let mut changes = broker.subscribe();
                    let scope = vm(AGENTS, n);
                    let waiter = spawn_wait(&broker, AGENTS, n);
                    let id = loop {
                        match changes.recv().await {
                            Ok(e) if e.state == ElevationState::Pending && e.scope == scope => {
                                break e.id
                            }
                            Ok(_) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    };
                    let t = Instant::now();
                    broker
                        .approve(
                            "oncall",
                            &id,
                            Approval {
                                duration: None,
                                max_uses: 0,
                                comment: None,
                                bind_to_request: None,
                            },
                        )
                        .await
                        .expect("approve");
                    let state = waiter.await.expect("waiter");
                    total += t.elapsed();
                    assert_eq!(state, Some(ElevationState::Approved));
                }
                total
            })
        })
    });
    for w in waiters {
        w.abort();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
