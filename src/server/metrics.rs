//! Prometheus metrics (docs/operations.md#metrics), in the text exposition format, on
//! `--metrics-listen`.
//!
//! Decisions are counted on the hot path, so counters are sharded per
//! thread: each worker increments its own cache line and a scrape sums the
//! shards. Nothing on the decision path takes a lock or touches a line
//! another core writes.

use std::cell::OnceCell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::elevation::policy::shadow;
use crate::elevation::Broker;
use crate::engine::{Reason, Verdict};

const VERDICTS: [Verdict; 3] = Verdict::ALL;
const REASONS: [Reason; 12] = Reason::ALL;
/// Upper bounds of the latency histogram, in microseconds.
const BUCKETS_US: [u64; 10] = [1, 2, 5, 10, 25, 50, 100, 250, 1000, 10_000];

const DECISION_SLOTS: usize = VERDICTS.len() * REASONS.len();
const SLOTS: usize = DECISION_SLOTS + 1 + BUCKETS_US.len() + 2;
const INVALID: usize = DECISION_SLOTS;
const BUCKET0: usize = DECISION_SLOTS + 1;
const LATENCY_SUM_NS: usize = BUCKET0 + BUCKETS_US.len();
const LATENCY_COUNT: usize = LATENCY_SUM_NS + 1;

/// One thread's counters, padded so two threads never share a line.
#[repr(align(128))]
struct Shard([AtomicU64; SLOTS]);

fn shards() -> &'static Mutex<Vec<Arc<Shard>>> {
    static SHARDS: OnceLock<Mutex<Vec<Arc<Shard>>>> = OnceLock::new();
    SHARDS.get_or_init(|| Mutex::new(Vec::new()))
}

fn with_shard(f: impl FnOnce(&Shard)) {
    thread_local! {
        static SHARD: OnceCell<Arc<Shard>> = const { OnceCell::new() };
    }
    SHARD.with(|cell| {
        let shard = cell.get_or_init(|| {
            let shard = Arc::new(Shard(std::array::from_fn(|_| AtomicU64::new(0))));
            shards()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(shard.clone());
            shard
        });
        f(shard);
    });
}

fn slot(verdict: Verdict, reason: Reason) -> usize {
    let v = VERDICTS.iter().position(|x| *x == verdict).unwrap_or(0);
    let r = REASONS.iter().position(|x| *x == reason).unwrap_or(0);
    v * REASONS.len() + r
}

/// Counts one decision and how long it took.
#[inline]
pub fn record_decision(verdict: Verdict, reason: Reason, took: Duration) {
    let us = took.as_micros() as u64;
    with_shard(|s| {
        s.0[slot(verdict, reason)].fetch_add(1, Ordering::Relaxed);
        if let Some(b) = BUCKETS_US.iter().position(|&le| us <= le) {
            s.0[BUCKET0 + b].fetch_add(1, Ordering::Relaxed);
        }
        s.0[LATENCY_SUM_NS].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        s.0[LATENCY_COUNT].fetch_add(1, Ordering::Relaxed);
    });
}

/// Counts a request refused as malformed.
pub fn record_invalid() {
    with_shard(|s| {
        s.0[INVALID].fetch_add(1, Ordering::Relaxed);
    });
}

static RELOADS: AtomicU64 = AtomicU64::new(0);
static RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);

pub fn record_reload(ok: bool) {
    if ok {
        RELOADS.fetch_add(1, Ordering::Relaxed);
    } else {
        RELOAD_FAILURES.fetch_add(1, Ordering::Relaxed);
    }
}

fn totals() -> [u64; SLOTS] {
    let mut sum = [0u64; SLOTS];
    for shard in shards().lock().unwrap_or_else(|e| e.into_inner()).iter() {
        for (i, v) in shard.0.iter().enumerate() {
            sum[i] += v.load(Ordering::Relaxed);
        }
    }
    sum
}

/// The metrics in the Prometheus text format.
pub fn render(broker: &Broker) -> String {
    let t = totals();
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP rampart_decisions_total Authorize decisions, by decision and reason.\n# TYPE rampart_decisions_total counter\n");
    for (vi, verdict) in VERDICTS.iter().enumerate() {
        for (ri, reason) in REASONS.iter().enumerate() {
            let n = t[vi * REASONS.len() + ri];
            if n > 0 {
                let _ = writeln!(
                    out,
                    "rampart_decisions_total{{decision=\"{}\",reason=\"{}\"}} {n}",
                    verdict.as_str(),
                    reason.as_str()
                );
            }
        }
    }
    let _ = writeln!(out, "# HELP rampart_invalid_requests_total Requests refused as malformed (INVALID_ARGUMENT).\n# TYPE rampart_invalid_requests_total counter\nrampart_invalid_requests_total {}", t[INVALID]);
    out.push_str("# HELP rampart_decision_duration_seconds Time to decide, excluding gRPC.\n# TYPE rampart_decision_duration_seconds histogram\n");
    let mut cumulative = 0;
    for (b, le) in BUCKETS_US.iter().enumerate() {
        cumulative += t[BUCKET0 + b];
        let _ = writeln!(
            out,
            "rampart_decision_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
            *le as f64 / 1e6
        );
    }
    let count = t[LATENCY_COUNT];
    let _ = writeln!(
        out,
        "rampart_decision_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "rampart_decision_duration_seconds_sum {}",
        t[LATENCY_SUM_NS] as f64 / 1e9
    );
    let _ = writeln!(out, "rampart_decision_duration_seconds_count {count}");

    let loaded = broker.engine().current();
    let stats = loaded.cache_stats();
    let decisions: u64 = t[..DECISION_SLOTS].iter().sum();
    let hit_ratio = if decisions == 0 {
        0.0
    } else {
        1.0 - (stats.misses.min(decisions) as f64 / decisions as f64)
    };
    let _ = writeln!(out, "# HELP rampart_cache_entries Resolved (principal, scope) entries in the effective-permission cache.\n# TYPE rampart_cache_entries gauge\nrampart_cache_entries {}", stats.effective_entries);
    let _ = writeln!(out, "# HELP rampart_cache_misses_total Effective-permission resolutions since the snapshot loaded.\n# TYPE rampart_cache_misses_total counter\nrampart_cache_misses_total {}", stats.misses);
    let _ = writeln!(out, "# HELP rampart_cache_hit_ratio Share of decisions answered from the cache.\n# TYPE rampart_cache_hit_ratio gauge\nrampart_cache_hit_ratio {hit_ratio:.6}");
    let (pending, active) = broker.live();
    let _ = writeln!(out, "# HELP rampart_elevations_pending Elevations waiting for a decision.\n# TYPE rampart_elevations_pending gauge\nrampart_elevations_pending {pending}");
    let _ = writeln!(out, "# HELP rampart_grants_active Active elevation grants.\n# TYPE rampart_grants_active gauge\nrampart_grants_active {active}");
    let _ = writeln!(out, "# HELP rampart_snapshot_reloads_total Snapshots loaded by reload.\n# TYPE rampart_snapshot_reloads_total counter\nrampart_snapshot_reloads_total {}", RELOADS.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP rampart_snapshot_reload_failures_total Reloads rejected; the previous snapshot kept serving.\n# TYPE rampart_snapshot_reload_failures_total counter\nrampart_snapshot_reload_failures_total {}", RELOAD_FAILURES.load(Ordering::Relaxed));
    let failing = u8::from(broker.engine().last_failure().is_some());
    let _ = writeln!(out, "# HELP rampart_snapshot_last_reload_failed 1 while the latest reload attempt failed.\n# TYPE rampart_snapshot_last_reload_failed gauge\nrampart_snapshot_last_reload_failed {failing}");
    let revision = loaded
        .snapshot
        .info
        .revision
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let _ = writeln!(out, "# HELP rampart_snapshot_info The snapshot serving.\n# TYPE rampart_snapshot_info gauge\nrampart_snapshot_info{{revision=\"{revision}\"}} 1");
    render_shadow(&mut out, broker);
    render_notifications(&mut out);
    out
}

/// Shadow auto-approve verdicts against the human decisions
/// (docs/agents-and-elevation.md#shadow-auto-approve).
fn render_shadow(out: &mut String, broker: &Broker) {
    let tally = broker.shadow_tally();
    out.push_str("# HELP rampart_shadow_auto_approve_total Shadow auto-approve verdicts of humanly decided elevations, by agent, rule, verdict, decision and whether they agree.
# TYPE rampart_shadow_auto_approve_total counter
");
    for ((agent, rule, outcome, decision), n) in &tally.counts {
        let agreement = if shadow::agrees(*outcome, *decision) {
            "AGREE"
        } else {
            "DISAGREE"
        };
        let _ = writeln!(
            out,
            "rampart_shadow_auto_approve_total{{agent=\"{}\",rule=\"{rule}\",shadow=\"{}\",decision=\"{}\",agreement=\"{agreement}\"}} {n}",
            label(agent),
            outcome.as_str(),
            decision.as_str()
        );
    }
}

/// Delivery counters of one notification sink (docs/approvals.md#notifications).
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Notifications the sink accepted (a 2xx answer).
    pub delivered: AtomicU64,
    /// Notifications given up on: attempts used up, or refused for good.
    pub failed: AtomicU64,
    /// Attempts after the first.
    pub retries: AtomicU64,
    /// Notifications dropped from a full queue (the oldest first).
    pub dropped: AtomicU64,
    /// Notifications waiting now.
    pub queued: AtomicU64,
}

/// Every sink's counters, by name, in the order they were first used.
type SinkRegistry = Mutex<Vec<(String, Arc<SinkMetrics>)>>;

fn sinks() -> &'static SinkRegistry {
    static SINKS: OnceLock<SinkRegistry> = OnceLock::new();
    SINKS.get_or_init(|| Mutex::new(Vec::new()))
}

/// The counters of the sink named `name`, created on first use (a sink of
/// the same name shares them).
pub fn sink_metrics(name: &str) -> Arc<SinkMetrics> {
    let mut all = sinks().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, m)) = all.iter().find(|(n, _)| n == name) {
        return m.clone();
    }
    let m = Arc::new(SinkMetrics::default());
    all.push((name.to_owned(), m.clone()));
    m
}

fn label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn render_notifications(out: &mut String) {
    let all = sinks().lock().unwrap_or_else(|e| e.into_inner());
    if all.is_empty() {
        return;
    }
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&SinkMetrics) -> &AtomicU64,
    );
    let families: [Family; 5] = [
        (
            "rampart_notifications_delivered_total",
            "counter",
            "Notifications a sink accepted, by sink.",
            |m| &m.delivered,
        ),
        (
            "rampart_notifications_failed_total",
            "counter",
            "Notifications given up on after the last attempt or a refusal, by sink.",
            |m| &m.failed,
        ),
        (
            "rampart_notification_retries_total",
            "counter",
            "Delivery attempts after the first, by sink.",
            |m| &m.retries,
        ),
        (
            "rampart_notifications_dropped_total",
            "counter",
            "Notifications dropped from a full queue, oldest first, by sink.",
            |m| &m.dropped,
        ),
        (
            "rampart_notification_queue_length",
            "gauge",
            "Notifications waiting for delivery, by sink.",
            |m| &m.queued,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (sink, m) in all.iter() {
            let _ = writeln!(
                out,
                "{name}{{sink=\"{}\"}} {}",
                label(sink),
                value(m).load(Ordering::Relaxed)
            );
        }
    }
}

/// Bounds on the metrics listener, which answers scrapers, not the public:
/// a flood of idle or slow connections must not hold file descriptors and
/// tasks without limit.
#[derive(Debug, Clone, Copy)]
pub struct ScrapeLimits {
    /// Connections served at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// How long a connection may take to send its request, and then to
    /// read the answer.
    pub timeout: Duration,
}

impl Default for ScrapeLimits {
    fn default() -> ScrapeLimits {
        ScrapeLimits {
            max_connections: 64,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped. A
/// deliberately small HTTP/1.1 responder: one request per connection.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    serve_within(listener, broker, ScrapeLimits::default()).await
}

/// [`serve`] within these limits.
pub async fn serve_within(listener: TcpListener, broker: Arc<Broker>, limits: ScrapeLimits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!("--metrics-listen cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it: the scraper tries again later.
            continue;
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(limits.timeout, stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) =
                if request.starts_with("GET /metrics ") || request.starts_with("GET / ") {
                    ("200 OK", render(&broker))
                } else {
                    ("404 Not Found", "try GET /metrics\n".to_owned())
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let answer = async {
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            };
            let _ = tokio::time::timeout(limits.timeout, answer).await;
        });
    }
}

/// Binds `--metrics-listen` and serves it in the background.
pub async fn start(addr: SocketAddr, broker: Arc<Broker>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, broker));
    Ok(bound)
}
