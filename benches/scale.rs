//! Scale (README.md#sizing): a generated tenant (benches/common/tenant.rs)
//! of 10,000, 100,000 and 1,000,000 role assignments, loaded from YAML and
//! from JSON, each size in a fresh child process so its memory figures are
//! its own:
//!
//! - load: read, parse, validate, compile and swap times; peak (VmHWM) and
//!   steady (VmRSS) resident memory, and per assignment; then a reload of
//!   the same size over it (time, peak while two snapshots coexist).
//! - at the largest size: cold decisions (first sight of a scope and a
//!   principal), then warm ones two ways: one request repeated
//!   (`decision_warm_repeated_ns`, what `benches/decision.rs` measures)
//!   and the 10,000 requests of the cold pass cycled
//!   (`decision_warm_mix_ns`), whose working set is larger than the CPU's
//!   caches; then 10,000 pending elevations and 100,000 active grants
//!   (memory, decision latency with them, through a grant and not); then
//!   Authorize over gRPC at a steady 2,000 requests/s, p99 without and
//!   with the snapshot reloaded every 3 s.
//!
//! Run with `cargo bench --bench scale`. The tenants are written under
//! `target/scale/` (generated once, deterministic). `SCALE_SIZES=10000,100000`
//! picks sizes; `SCALE_RATE_SECS=20` sets each rate run's length (0 skips
//! the rate runs); `SCALE_SERVE=0` stops after the load table;
//! `SCALE_LOADS=0` skips the load table, for the decision figures alone.
//! Warm figures are the fastest of five rounds (the machine may be
//! shared). `SCALE_WARM_ONLY=1` stops after the first warm figures and
//! then cycles the warm mix for a while, for `perf record`.

#[path = "common/rss.rs"]
mod rss;
#[path = "common/tenant.rs"]
mod tenant;

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rampart::elevation::{Broker, ElevationRequest, Store};
use rampart::engine::{ActiveGrant, Engine, Request, Verdict};
use rampart::snapshot::{load_file_timed, LOAD_BUDGET};

const CHILD: &str = "RAMPART_SCALE_CHILD";
const NO_ATTRIBUTES: &[(&str, &str)] = &[];
const READ: &str = "Microsoft.Compute/virtualMachines/read";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const BLOB_READ: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let sizes: Vec<usize> = std::env::var("SCALE_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = target_dir().join("scale");
    std::fs::create_dir_all(&dir).expect("create target/scale");
    println!(
        "{:>9} {:>5} {:>7} | {:>6} {:>6} {:>8} {:>7} {:>6} {:>7} | {:>8} {:>8} {:>7} | {:>7} {:>8}",
        "assign.",
        "fmt",
        "MB",
        "read",
        "parse",
        "validate",
        "compile",
        "swap",
        "total",
        "peak MB",
        "steady",
        "B/asg",
        "reload",
        "peak MB"
    );
    let loads = std::env::var("SCALE_LOADS").map_or(true, |v| v != "0");
    for &n in sizes.iter().filter(|_| loads) {
        for format in ["yaml", "json"] {
            let file = tenant_file(&dir, n, format);
            let out = run_child(&format!("load:{format}:{}", file.display()));
            let v = |k: &str| out.get(k).copied().unwrap_or(f64::NAN);
            let assignments = v("assignments");
            println!(
                "{:>9} {:>5} {:>7.0} | {:>6.2} {:>6.2} {:>8.2} {:>7.2} {:>6.3} {:>7.2} | {:>8.0} {:>8.0} {:>7.0} | {:>7.2} {:>8.0}",
                assignments,
                format,
                v("file_mb"),
                v("read_s"),
                v("parse_s"),
                v("validate_s"),
                v("compile_s"),
                v("swap_s"),
                v("total_s"),
                v("peak_mb"),
                v("steady_mb"),
                v("steady_mb") * 1_048_576.0 / assignments,
                v("reload_s"),
                v("reload_peak_mb"),
            );
        }
    }
    let serve_too = std::env::var("SCALE_SERVE").map_or(true, |v| v != "0");
    if let Some(&n) = sizes.iter().max().filter(|_| serve_too) {
        let file = tenant_file(&dir, n, "json");
        let out = run_child(&format!("serve:json:{}", file.display()));
        let mut keys: Vec<_> = out.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        println!("\nat {n} assignments:");
        for (k, v) in keys {
            println!("  {k:<40} {v:.3}");
        }
    }
}

/// `target/` (or `$CARGO_TARGET_DIR`): generated tenants stay out of git.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The tenant of `n` assignments as a file, written once.
fn tenant_file(dir: &Path, n: usize, format: &str) -> PathBuf {
    let path = dir.join(format!("tenant-{n}.{format}"));
    if !path.exists() {
        let shape = tenant::Shape::new(n);
        let text = match format {
            "yaml" => tenant::yaml(&shape),
            _ => tenant::json(&shape),
        };
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text).expect("write tenant");
        std::fs::rename(&partial, &path).expect("rename tenant");
    }
    path
}

/// Runs this binary as a child for one measurement; its `key value` lines.
fn run_child(spec: &str) -> HashMap<String, f64> {
    let exe = std::env::current_exe().expect("current exe");
    let output = Command::new(exe)
        .env(CHILD, spec)
        .output()
        .expect("run child");
    if !output.status.success() {
        panic!(
            "child {spec} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

fn report(key: &str, value: f64) {
    println!("{key} {value}");
}

fn child(spec: &str) {
    let mut parts = spec.splitn(3, ':');
    let (Some(what), Some(_format), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("bad child spec {spec}");
    };
    let path = Path::new(path);
    match what {
        "load" => load(path),
        "serve" => serve(path),
        _ => panic!("bad child spec {spec}"),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Loads the file as a reload does; the times of each phase (a JSON file
/// is parsed as it is read, so its read time is in its parse time).
fn load_once(path: &Path) -> (rampart::snapshot::CompiledSnapshot, [f64; 4]) {
    let (snapshot, t) =
        load_file_timed(path, Instant::now() + LOAD_BUDGET).unwrap_or_else(|e| panic!("{e}"));
    (
        snapshot,
        [
            t.read.as_secs_f64(),
            t.parse.as_secs_f64(),
            t.validate.as_secs_f64(),
            t.compile.as_secs_f64(),
        ],
    )
}

fn load(path: &Path) {
    let base = rss::rss_kib();
    let engine = Engine::new(rampart::snapshot::demo().expect("demo"));
    let (snapshot, [read, parse, validate, compile]) = load_once(path);
    let assignments = snapshot.tenant.role_assignments.len();
    let started = Instant::now();
    Engine::retire(engine.swap(snapshot));
    let swap = started.elapsed().as_secs_f64();
    report(
        "file_mb",
        std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1_048_576.0),
    );
    report("assignments", assignments as f64);
    report("read_s", read);
    report("parse_s", parse);
    report("validate_s", validate);
    report("compile_s", compile);
    report("swap_s", swap);
    report("total_s", read + parse + validate + compile + swap);
    report("peak_mb", mib(rss::peak_kib().saturating_sub(base)));
    report("steady_mb", mib(rss::rss_kib().saturating_sub(base)));

    // A reload of the same size while the first serves.
    let started = Instant::now();
    let (snapshot, _) = load_once(path);
    Engine::retire(engine.swap(snapshot));
    report("reload_s", started.elapsed().as_secs_f64());
    report("reload_peak_mb", mib(rss::peak_kib().saturating_sub(base)));
    report("after_reload_mb", mib(rss::rss_kib().saturating_sub(base)));
}

/// A deterministic request mix over the tenant: a VM (never seen before,
/// so each is a cold scope) below one of the principal's resource groups,
/// or below another group, with one of three operations.
fn requests(
    shape: &tenant::Shape,
    count: usize,
    salt: usize,
) -> Vec<(String, String, &'static str, bool)> {
    (0..count)
        .map(|i| {
            let h = splitmix((i + salt * 1_000_003) as u64) as usize;
            let p = h % shape.principals;
            let k = (h >> 20) % (tenant::PER_PRINCIPAL - 1);
            let (_, scope) = tenant::assignment(shape, p, k);
            let scope = if (h >> 40) % 4 == 0 {
                tenant::resource_group_scope((h >> 8) % shape.resource_groups)
            } else {
                scope
            };
            let scope =
                format!("{scope}/providers/Microsoft.Compute/virtualMachines/vm-{salt}-{i}");
            let (action, data) = match (h >> 32) % 3 {
                0 => (READ, false),
                1 => (RESTART, false),
                _ => (BLOB_READ, true),
            };
            (tenant::principal_id(p), scope, action, data)
        })
        .collect()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn decide(engine: &Engine, principal: &str, scope: &str, action: &str, data: bool) -> Verdict {
    let request = Request {
        principal_id: principal,
        action,
        scope,
        data_action: data,
        attributes: &NO_ATTRIBUTES,
        explain: false,
        dry_run: false,
    };
    engine
        .current()
        .decide_with(&request, Some(engine.live()))
        .map(|d| d.verdict)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e6
}

/// Cold then warm decisions over `reqs`: (cold p50 µs, cold p99 µs, warm
/// mean ns cycling over all of them, allow share).
fn decisions(
    engine: &Engine,
    reqs: &[(String, String, &'static str, bool)],
) -> (f64, f64, f64, f64) {
    let mut cold = Vec::with_capacity(reqs.len());
    let mut allowed = 0;
    for (p, s, a, d) in reqs {
        let t = Instant::now();
        let v = decide(engine, p, s, a, *d);
        cold.push(t.elapsed());
        allowed += usize::from(v == Verdict::Allow);
    }
    cold.sort_unstable();
    (
        percentile(&cold, 0.5),
        percentile(&cold, 0.99),
        warm_mix(engine, reqs),
        allowed as f64 / reqs.len() as f64,
    )
}

/// Rounds of a warm measurement; the fastest is reported, since other
/// work on a shared machine only ever adds time.
const ROUNDS: usize = 5;

/// Mean ns of a warm decision cycling over `reqs` (each decided before),
/// in the fastest of [`ROUNDS`] rounds of at least 100,000 decisions.
fn warm_mix(engine: &Engine, reqs: &[(String, String, &'static str, bool)]) -> f64 {
    let passes = (100_000 / reqs.len()).max(1);
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..passes {
                for (p, s, a, d) in reqs {
                    black_box(decide(engine, black_box(p), black_box(s), a, *d));
                }
            }
            t.elapsed().as_secs_f64() * 1e9 / (passes * reqs.len()) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Mean ns of one warm request decided over and over, as [`warm_mix`].
fn warm_repeated(engine: &Engine, req: &(String, String, &'static str, bool)) -> f64 {
    warm_mix(engine, std::slice::from_ref(req))
}

fn serve(path: &Path) {
    let base = rss::rss_kib();
    let (snapshot, _) = load_once(path);
    let principals = snapshot.tenant.principals.len() - tenant::AGENTS - 1;
    let shape = tenant::Shape::new(principals * tenant::PER_PRINCIPAL);
    let engine = Arc::new(Engine::new(snapshot));
    let loaded_kib = rss::rss_kib();
    report("snapshot_steady_mb", mib(loaded_kib.saturating_sub(base)));

    let reqs = requests(&shape, 10_000, 1);
    let (cold50, cold99, warm, allowed) = decisions(&engine, &reqs);
    report("decision_cold_p50_us", cold50);
    report("decision_cold_p99_us", cold99);
    report("decision_warm_mix_ns", warm);
    report(
        "decision_warm_repeated_ns",
        warm_repeated(&engine, &reqs[0]),
    );
    report("decision_warm_mix_100_ns", warm_mix(&engine, &reqs[..100]));
    report("decision_allow_share", allowed);
    if std::env::var_os("SCALE_WARM_ONLY").is_some() {
        // For a profiler: the warm mix, long enough to sample.
        for _ in 0..20 {
            black_box(warm_mix(&engine, &reqs));
        }
        return;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let broker =
        Broker::start(engine.clone(), Store::open(dir.path()).expect("store")).expect("broker");

    // 10,000 pending elevations: 100 agents × 100 (the per-principal limit).
    let before = rss::rss_kib();
    let waiters: Vec<_> = rt.block_on(async {
        let waiters: Vec<_> = (0..tenant::AGENTS)
            .flat_map(|a| (0..100).map(move |n| (a, n)))
            .map(|(a, n)| {
                let broker = broker.clone();
                tokio::spawn(async move {
                    let principal = tenant::agent_id(a);
                    let scope = format!(
                        "{}/providers/Microsoft.Compute/virtualMachines/e{n}",
                        tenant::agent_scope(a)
                    );
                    broker
                        .request(ElevationRequest {
                            principal_id: &principal,
                            action: RESTART,
                            scope: &scope,
                            data_action: false,
                            justification: "scale benchmark",
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
            })
            .collect();
        let waiting = Instant::now();
        while broker.pending_elevations().len() < tenant::AGENTS * 100 {
            if let Some(done) = waiters.iter().find(|w| w.is_finished()) {
                panic!("an elevation request ended early: {done:?}");
            }
            assert!(
                waiting.elapsed() < Duration::from_secs(300),
                "elevations not pending"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        waiters
    });
    let with_elevations = rss::rss_kib();
    report(
        "elevations_pending_10k_mb",
        mib(with_elevations.saturating_sub(before)),
    );

    // 100,000 active grants: 1,000 per agent, each on one VM of its group.
    for a in 0..tenant::AGENTS {
        for g in 0..1000 {
            let scope = format!(
                "{}/providers/Microsoft.Compute/virtualMachines/g{g}",
                tenant::agent_scope(a)
            );
            engine.grants.insert(Arc::new(ActiveGrant {
                id: format!("grant-{a}-{g}").into(),
                principal_key: tenant::agent_id(a).into(),
                action: RESTART.into(),
                scope_key: scope.to_ascii_lowercase().into(),
                scope: scope.into(),
                data_action: false,
                on_behalf_of: "oncall".into(),
                expires_at: SystemTime::now() + Duration::from_secs(3600),
                max_uses: 0,
                uses: AtomicU32::new(0),
                reserved: AtomicU32::new(0),
                wanted: std::sync::atomic::AtomicBool::new(false),
                co_lenders: Box::default(),
                request_digest: None,
            }));
        }
    }
    report(
        "grants_active_100k_mb",
        mib(rss::rss_kib().saturating_sub(with_elevations)),
    );
    let vm = |a: usize, g: usize| {
        format!(
            "{}/providers/Microsoft.Compute/virtualMachines/g{g}",
            tenant::agent_scope(a)
        )
    };
    assert_eq!(
        decide(&engine, &tenant::agent_id(7), &vm(7, 3), RESTART, false),
        Verdict::Allow
    );
    let through: Vec<_> = (0..1000)
        .map(|i| {
            (
                tenant::agent_id(i % tenant::AGENTS),
                vm(i % tenant::AGENTS, i),
            )
        })
        .collect();
    let through: Vec<_> = through
        .into_iter()
        .map(|(p, s)| (p, s, RESTART, false))
        .collect();
    for (p, s, a, d) in &through {
        assert_eq!(decide(&engine, p, s, a, *d), Verdict::Allow);
    }
    report(
        "with_grants_elevations_via_grant_warm_mix_ns",
        warm_mix(&engine, &through),
    );
    report(
        "with_grants_elevations_via_grant_warm_repeated_ns",
        warm_repeated(&engine, &through[0]),
    );
    let reqs = requests(&shape, 10_000, 2);
    let (cold50, cold99, warm, _) = decisions(&engine, &reqs);
    report("with_grants_elevations_cold_p50_us", cold50);
    report("with_grants_elevations_cold_p99_us", cold99);
    report("with_grants_elevations_warm_mix_ns", warm);
    report(
        "with_grants_elevations_warm_repeated_ns",
        warm_repeated(&engine, &reqs[0]),
    );

    // Authorize over gRPC at 2,000/s, without and with reloads every 3 s.
    let secs: u64 = std::env::var("SCALE_RATE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    if secs == 0 {
        for w in waiters {
            w.abort();
        }
        return;
    }
    let rate_reqs = Arc::new(requests(&shape, 20_000, 3));
    let (quiet, noisy, reloads) = rt.block_on(async {
        let config = rampart::server::ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin_listen: "127.0.0.1:0".parse().expect("addr"),
            health_listen: None,
            tokens: rampart::server::Tokens::from_plain(&[]),
            insecure: false,
            audit: None,
            audit_decisions_sample: 0.0,
            uds: None,
            tls: None,
            ext_authz: Default::default(),
            authorizer_tokens: None,
            connections: Default::default(),
            caps: Default::default(),
        };
        let running = rampart::server::start(config, broker.clone(), None)
            .await
            .expect("start server");
        let client = rampart::proto::authorizer_client::AuthorizerClient::connect(format!(
            "http://{}",
            running.authorizer_addr
        ))
        .await
        .expect("connect");
        let quiet = at_rate(&client, &rate_reqs, Duration::from_secs(secs)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let reloader = {
            let (stop, broker, path) = (stop.clone(), broker.clone(), path.to_owned());
            std::thread::spawn(move || {
                let mut reloads = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let (snapshot, _) = load_file_timed(&path, Instant::now() + LOAD_BUDGET)
                        .unwrap_or_else(|e| panic!("{e}"));
                    broker.swap_snapshot(snapshot);
                    reloads += 1;
                    let pause = Duration::from_secs(3).saturating_sub(started.elapsed());
                    std::thread::sleep(pause);
                }
                reloads
            })
        };
        let noisy = at_rate(&client, &rate_reqs, Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let reloads = tokio::task::spawn_blocking(move || reloader.join().expect("reloader"))
            .await
            .expect("join");
        let _ = running.shutdown().await;
        (quiet, noisy, reloads)
    });
    report("rate_2000_p50_us", quiet.0);
    report("rate_2000_p99_us", quiet.1);
    report("rate_2000_p999_us", quiet.2);
    report("rate_2000_reloading_p50_us", noisy.0);
    report("rate_2000_reloading_p99_us", noisy.1);
    report("rate_2000_reloading_p999_us", noisy.2);
    report("rate_2000_reloading_reloads", f64::from(reloads));
    report("rate_2000_p99_ratio", noisy.1 / quiet.1);
    report("rate_2000_dropped_quiet", quiet.3);
    report("rate_2000_dropped_reloading", noisy.3);
    for w in waiters {
        w.abort();
    }
}

/// Sends Authorize at 2,000/s (two every millisecond, open loop) for
/// `length`; latency counts from when each request was due, so a stall
/// shows in every request it delays. (p50, p99, p99.9 in µs, errors).
async fn at_rate(
    client: &rampart::proto::authorizer_client::AuthorizerClient<tonic::transport::Channel>,
    reqs: &Arc<Vec<(String, String, &'static str, bool)>>,
    length: Duration,
) -> (f64, f64, f64, f64) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut i = 0usize;
    while start.elapsed() < length {
        let due = tick.tick().await.into_std();
        for _ in 0..2 {
            let (p, s, a, d) = reqs[i % reqs.len()].clone();
            i += 1;
            let mut client = client.clone();
            tasks.push(tokio::spawn(async move {
                let ok = client
                    .authorize(rampart::proto::AuthorizeRequest {
                        principal_id: p,
                        action: a.into(),
                        scope: s,
                        data_action: d,
                        ..Default::default()
                    })
                    .await
                    .is_ok();
                (due.elapsed(), ok)
            }));
        }
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0.0;
    for t in tasks {
        let (took, ok) = t.await.expect("request task");
        latencies.push(took);
        if !ok {
            errors += 1.0;
        }
    }
    latencies.sort_unstable();
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        errors,
    )
}
