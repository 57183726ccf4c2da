//! A fleet on one PostgreSQL (docs/fleet.md#figures): two and three
//! replicas in this process on one database, measuring
//! - the latency from an approval on replica B to the answer of the caller
//!   waiting on replica A, and until a third replica (C, where nobody
//!   waited) honours the grant;
//! - how many elevations (filed, approved, answered) one database takes a
//!   second, from two replicas at once;
//! - Authorize on a replica holding 1,000 active grants, unlimited and
//!   limited (the limited ones reserve their uses in the database in
//!   blocks).
//!
//! Needs a server: `source .ci/postgres.sh && cargo bench --bench fleet`
//! (or RAMPART_BENCH_POSTGRES=postgres://… for another one). Without one
//! it says so and exits.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart::elevation::{
    Approval, Broker, DbConfig, ElevationRequest, ElevationState, Limits, PgStore,
};
use rampart::engine::{Engine, Request, Verdict};

const SUB: &str = "/subscriptions/00000000-0000-4000-8000-000000000001";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const AGENTS: usize = 40;
const NO_ATTRIBUTES: &[(&str, &str)] = &[];

fn snapshot() -> String {
    let mut y = String::from("principals:\n  - { id: oncall, type: User }\n");
    for a in 0..AGENTS {
        let _ = writeln!(y, "  - {{ id: agent-{a}, type: ManagedIdentity }}");
    }
    y.push_str("roleAssignments:\n");
    let _ = writeln!(
        y,
        "  - {{ principal: oncall, role: Contributor, scope: '{SUB}' }}"
    );
    y.push_str("agents:\n");
    for a in 0..AGENTS {
        let _ = writeln!(
            y,
            "  - {{ id: agent-{a}, principal: agent-{a}, resource: '{SUB}/resourceGroups/rg-agents/providers/Microsoft.App/agents/a{a}', managedScopes: ['{SUB}/resourceGroups/rg-{a}'], permissionLevel: Reader, executionMode: Review, elevation: {{ maxRequestsPerMinute: 10000 }} }}"
        );
    }
    y
}

fn vm(agent: usize, n: usize) -> String {
    format!("{SUB}/resourceGroups/rg-{agent}/providers/Microsoft.Compute/virtualMachines/vm-{n}")
}

fn ask(principal: &str, scope: &str) -> ElevationRequest<'static> {
    ElevationRequest {
        principal_id: Box::leak(principal.to_owned().into_boxed_str()),
        action: RESTART,
        scope: Box::leak(scope.to_owned().into_boxed_str()),
        data_action: false,
        justification: "bench",
        requested_duration: Some(Duration::from_secs(3600)),
        wait_timeout: Some(Duration::from_secs(30)),
        attributes: Default::default(),
        ..Default::default()
    }
}

fn authorize(broker: &Broker, principal: &str, scope: &str) -> Verdict {
    let engine = broker.engine();
    let req = Request {
        principal_id: principal,
        action: RESTART,
        scope,
        data_action: false,
        attributes: &NO_ATTRIBUTES,
        explain: false,
        dry_run: false,
    };
    engine
        .current()
        .decide_with(&req, Some(engine.live()))
        .map(|d| d.verdict)
        .unwrap_or(Verdict::Deny)
}

fn replica(config: &DbConfig) -> Arc<Broker> {
    let snapshot = rampart::snapshot::load_str(&snapshot(), "bench").expect("snapshot");
    let store = PgStore::open(config).expect("open the database");
    let broker = Broker::start_with(Arc::new(Engine::new(snapshot)), store, Limits::default())
        .expect("broker");
    broker.spawn_sweeper(Duration::from_secs(1));
    broker
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn admin_sql(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            client.batch_execute(&sql).await.expect(&sql);
        });
    })
    .join()
    .expect("sql thread");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass
    // nothing a test harness needs: this is a measurement, not a test.
    let Some(admin) = std::env::var("RAMPART_BENCH_POSTGRES")
        .ok()
        .or_else(|| std::env::var("RAMPART_TEST_POSTGRES").ok())
    else {
        println!("fleet: skipped: set RAMPART_BENCH_POSTGRES or source .ci/postgres.sh");
        return;
    };
    let name = format!("rampart_bench_{}", std::process::id());
    admin_sql(&admin, &format!("CREATE DATABASE {name}"));
    let base = admin.split('?').next().unwrap_or(&admin);
    let url = format!("{}/{name}", base.rsplit_once('/').map_or(base, |(b, _)| b));
    let config = DbConfig::parse(&url, None).expect("url");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(config));
    admin_sql(&admin, &format!("DROP DATABASE {name} WITH (FORCE)"));
}

async fn run(config: DbConfig) {
    let (a, b, c) = (replica(&config), replica(&config), replica(&config));
    println!(
        "fleet: 3 replicas in one process on one PostgreSQL ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // 1. Approval on B → the answer on A; → honoured on C.
    const ROUNDS: usize = 300;
    let mut answer = Vec::with_capacity(ROUNDS);
    let mut elsewhere = Vec::with_capacity(ROUNDS);
    let mut changes = b.subscribe();
    for n in 0..ROUNDS {
        let agent = n % AGENTS;
        let principal = format!("agent-{agent}");
        let scope = vm(agent, n);
        let caller = {
            let (a, principal, scope) = (a.clone(), principal.clone(), scope.clone());
            tokio::spawn(async move { a.request(ask(&principal, &scope)).await })
        };
        let id = loop {
            match changes.recv().await {
                Ok(e) if e.scope == scope && e.state.is_pending() => break e.id,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        };
        let approved_at = Instant::now();
        b.approve(
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
        let answered = caller.await.expect("caller").expect("answer");
        assert_eq!(answered.state, ElevationState::Approved);
        answer.push(approved_at.elapsed());
        while authorize(&c, &principal, &scope) != Verdict::Allow {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        elsewhere.push(approved_at.elapsed());
    }
    answer.sort();
    elsewhere.sort();
    println!(
        "approval on B -> caller on A answered ({ROUNDS} rounds): p50 {}, p99 {}, max {}",
        ms(percentile(&answer, 0.5)),
        ms(percentile(&answer, 0.99)),
        ms(percentile(&answer, 1.0))
    );
    println!(
        "approval on B -> grant honoured on C (nobody waited there): p50 {}, p99 {}, max {}",
        ms(percentile(&elsewhere, 0.5)),
        ms(percentile(&elsewhere, 0.99)),
        ms(percentile(&elsewhere, 1.0))
    );

    // 2. Elevations a second: filed on A or B, approved on the other,
    // 32 at a time, for 5 seconds.
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(5);
    let mut workers = Vec::new();
    for w in 0..32usize {
        let (a, b, done) = (a.clone(), b.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                let agent = w % AGENTS;
                let principal = format!("agent-{agent}");
                let scope = vm(agent, 100_000 + w * 100_000 + n);
                n += 1;
                let (filer, approver) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
                let caller = {
                    let (filer, principal, scope) =
                        (filer.clone(), principal.clone(), scope.clone());
                    tokio::spawn(async move { filer.request(ask(&principal, &scope)).await })
                };
                // The filer holds it as soon as it is stored.
                let id = loop {
                    if let Some(e) = filer
                        .pending_elevations()
                        .into_iter()
                        .find(|e| e.scope == scope)
                    {
                        break e.id;
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                };
                if approver
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
                    .is_ok()
                    && caller.await.ok().and_then(|r| r.ok()).is_some()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "elevations filed, approved on another replica and answered: {:.0}/s (2 replicas, 32 at a time, {} in {:.1}s)",
        done.load(Ordering::Relaxed) as f64 / secs,
        done.load(Ordering::Relaxed),
        secs
    );

    // 3. Authorize with 1,000 active grants on the replica (hot path: the
    // database is not on it). Limited grants reserve blocks of uses.
    let grants_before = a.live().1;
    println!("active grants on each replica: {grants_before}");
    for (label, uses) in [
        ("unlimited grants", 0u32),
        ("maxUses 1,000,000 grants", 1_000_000),
    ] {
        if uses != 0 {
            // Turn 40 of them into limited grants, one per agent.
            let mut limited = Vec::new();
            for agent in 0..AGENTS {
                let principal = format!("agent-{agent}");
                let scope = vm(agent, 9_000_000);
                let caller = {
                    let (a, principal, scope) = (a.clone(), principal.clone(), scope.clone());
                    tokio::spawn(async move { a.request(ask(&principal, &scope)).await })
                };
                let id = loop {
                    if let Some(e) = a
                        .pending_elevations()
                        .into_iter()
                        .find(|e| e.scope == scope)
                    {
                        break e.id;
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                };
                b.approve(
                    "oncall",
                    &id,
                    Approval {
                        duration: None,
                        max_uses: uses,
                        comment: None,
                        bind_to_request: None,
                    },
                )
                .await
                .expect("approve limited");
                let _ = caller.await;
                limited.push((principal, scope));
            }
            let ops = hammer(&a, &limited, Duration::from_secs(3)).await;
            println!("Authorize through {label} on one replica (2 threads): {ops:.0}/s");
        } else {
            let targets: Vec<(String, String)> = (0..ROUNDS)
                .map(|n| (format!("agent-{}", n % AGENTS), vm(n % AGENTS, n)))
                .collect();
            let ops = hammer(&a, &targets, Duration::from_secs(3)).await;
            println!("Authorize through {label} on one replica (2 threads): {ops:.0}/s");
        }
    }
}

/// Authorize as fast as two threads can, round the targets, for `span`.
async fn hammer(broker: &Arc<Broker>, targets: &[(String, String)], span: Duration) -> f64 {
    let count = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut threads = Vec::new();
    for t in 0..2 {
        let (broker, count, targets) = (broker.clone(), count.clone(), targets.to_vec());
        threads.push(tokio::task::spawn_blocking(move || {
            let mut i = t;
            let mut allowed = 0usize;
            while started.elapsed() < span {
                for _ in 0..1000 {
                    let (p, s) = &targets[i % targets.len()];
                    if authorize(&broker, p, s) == Verdict::Allow {
                        allowed += 1;
                    }
                    i += 1;
                }
            }
            count.fetch_add(allowed, Ordering::Relaxed);
        }));
    }
    for t in threads {
        let _ = t.await;
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
