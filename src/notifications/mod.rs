//! Webhook notifications: every new pending elevation and every resolution,
//! sent to the sinks of the notifications file as CloudEvents, Slack or
//! Teams messages.
//!
//! A decision never waits on a webhook. The broker publishes each change on
//! its broadcast channel (the one `WatchElevations` and the approvals page
//! read) and moves on; here one task copies each change into every sink's
//! bounded queue (dropping the oldest when full, counted), and one task per
//! sink delivers in order, with a timeout on each request and retries with
//! exponential backoff and jitter. Outcomes are counted in the metrics and
//! written to the audit log (`notification.delivered`,
//! `notification.failed`).

pub mod config;
pub mod event;
pub mod queue;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use config::{Announce, Config, Format, SinkConfig};
pub use event::Kind;
use queue::Queue;

use crate::audit::AuditLog;
use crate::elevation::{Broker, Elevation};
use crate::model::duration_text;
use crate::server::metrics::{sink_metrics, SinkMetrics};

/// One change, waiting for a sink.
struct Notification {
    elevation: Elevation,
    kind: Kind,
}

struct Sink {
    config: SinkConfig,
    queue: Queue<Notification>,
    metrics: Arc<SinkMetrics>,
    client: reqwest::Client,
}

/// What every sink's task shares.
struct Shared {
    source: String,
    page_url: Option<reqwest::Url>,
    audit: Option<Arc<AuditLog>>,
}

/// The sinks of a notifications file, ready to start: every HTTP client
/// built, so nothing can fail once serving.
pub struct Notifier {
    sinks: Vec<Arc<Sink>>,
    shared: Arc<Shared>,
    announce: Announce,
}

/// The running notifier: a task routing the broker's changes and one
/// delivering per sink.
pub struct RunningNotifier {
    stop: watch::Sender<bool>,
    sinks: Vec<Arc<Sink>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The delay before attempt `attempt + 1` (`attempt` ≥ 1): `initial`
/// doubled per attempt, capped at `max`, then "equal jitter": a uniform
/// point in its upper half, so retries spread out yet always wait.
/// `unit` is a random number in [0, 1).
pub fn backoff(attempt: u32, initial: Duration, max: Duration, unit: f64) -> Duration {
    let exp = initial
        .saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .min(max);
    let half = exp / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// How an attempt ended.
enum Attempt {
    Delivered(u16),
    /// Worth another try (a network error, a timeout, 408, 429, 5xx), with
    /// the receiver's `Retry-After` when it gave one in seconds.
    Retry(String, Option<Duration>),
    /// The receiver refused the request itself (another 4xx): retrying
    /// would not help.
    Refused(String),
}

impl Notifier {
    /// Builds a client per sink of `config`; outcomes go to `audit`.
    pub fn new(config: Config, audit: Option<Arc<AuditLog>>) -> Result<Notifier, String> {
        let mut sinks = Vec::with_capacity(config.sinks.len());
        for sink in config.sinks {
            let client = reqwest::Client::builder()
                .timeout(sink.timeout)
                .connect_timeout(sink.timeout)
                // A webhook answers where it was asked; following a redirect
                // would send the event somewhere nobody configured.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("rampart/", env!("CARGO_PKG_VERSION")))
                .default_headers(sink.headers.clone())
                .build()
                .map_err(|e| format!("sink {}: cannot build an HTTP client: {e}", sink.name))?;
            sinks.push(Arc::new(Sink {
                metrics: sink_metrics(&sink.name),
                queue: Queue::new(sink.queue_size),
                config: sink,
                client,
            }));
        }
        let shared = Arc::new(Shared {
            source: config.source,
            page_url: config.page_url,
            audit,
        });
        Ok(Notifier {
            sinks,
            shared,
            announce: config.announce,
        })
    }

    /// Starts routing the broker's changes to the sinks.
    pub fn start(self, broker: &Broker) -> RunningNotifier {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::with_capacity(self.sinks.len() + 1);
        tasks.push(tokio::spawn(route(
            match self.announce {
                Announce::Fleet => broker.subscribe(),
                Announce::Own => broker.subscribe_own(),
            },
            self.sinks.clone(),
            stop_rx,
        )));
        for sink in &self.sinks {
            tasks.push(tokio::spawn(deliver_all(sink.clone(), self.shared.clone())));
        }
        RunningNotifier {
            stop,
            sinks: self.sinks,
            tasks,
        }
    }

    pub fn sink_count(&self) -> usize {
        self.sinks.len()
    }
}

impl RunningNotifier {
    /// Stops taking changes, gives queued notifications up to `grace` to
    /// go out (the cancellations of a shutdown among them), then stops.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks;
        let all = join_all(&mut tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            let left: usize = self.sinks.iter().map(|s| s.queue.len()).sum();
            tracing::warn!(left, "notifications still queued at shutdown were not sent");
        }
        for task in tasks {
            task.abort();
        }
    }
}

/// Waits for every task in turn (each ends by itself once stopped).
async fn join_all(tasks: &mut [JoinHandle<()>]) {
    for task in tasks.iter_mut() {
        let _ = task.await;
    }
}

/// Copies each change into the queue of every sink that wants it; on
/// stop, takes what the channel still holds, then closes the queues.
async fn route(
    mut changes: broadcast::Receiver<Elevation>,
    sinks: Vec<Arc<Sink>>,
    mut stop: watch::Receiver<bool>,
) {
    let offer = |e: Elevation| {
        let Some(kind) = Kind::of(e.state) else {
            return;
        };
        // A pending elevation with approvals is one approval further, not
        // new: its pending notification went out when it was filed.
        if e.state.is_pending() && !e.approvals.is_empty() {
            return;
        }
        for sink in &sinks {
            if !sink.config.events.contains(&kind) {
                continue;
            }
            let dropped = sink.queue.push(Notification {
                elevation: e.clone(),
                kind,
            });
            if let Some(old) = dropped {
                sink.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sink = %sink.config.name, elevation = %old.elevation.id, "notification queue full: dropped the oldest");
            }
            sink.metrics
                .queued
                .store(sink.queue.len() as u64, Ordering::Relaxed);
        }
    };
    let lagged = |n: u64| {
        for sink in &sinks {
            sink.metrics.dropped.fetch_add(n, Ordering::Relaxed);
        }
        tracing::warn!(
            missed = n,
            "notifications fell behind the broker: changes dropped"
        );
    };
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            change = changes.recv() => match change {
                Ok(e) => offer(e),
                Err(broadcast::error::RecvError::Lagged(n)) => lagged(n),
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    loop {
        match changes.try_recv() {
            Ok(e) => offer(e),
            Err(broadcast::error::TryRecvError::Lagged(n)) => lagged(n),
            Err(_) => break,
        }
    }
    for sink in &sinks {
        sink.queue.close();
    }
}

/// Delivers a sink's notifications in order until its queue closes.
async fn deliver_all(sink: Arc<Sink>, shared: Arc<Shared>) {
    while let Some(n) = sink.queue.pop().await {
        sink.metrics
            .queued
            .store(sink.queue.len() as u64, Ordering::Relaxed);
        deliver(&sink, &shared, &n).await;
    }
}

async fn attempt(sink: &Sink, content_type: &str, body: &[u8]) -> Attempt {
    let response = sink
        .client
        .post(sink.config.url.clone())
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body.to_vec())
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        // Without the URL: it is a secret.
        Err(e) => return Attempt::Retry(describe(e), None),
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered(status.as_u16());
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let why = format!("HTTP {}", status.as_u16());
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Attempt::Retry(why, retry_after)
    } else {
        Attempt::Refused(why)
    }
}

/// A request error in words, without the URL (a secret).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let e = e.without_url();
    match std::error::Error::source(&e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

async fn deliver(sink: &Sink, shared: &Shared, n: &Notification) {
    let (content_type, body) = event::body(
        sink.config.format,
        &n.elevation,
        n.kind,
        &shared.source,
        shared.page_url.as_ref(),
    );
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        match attempt(sink, content_type, &body).await {
            Attempt::Delivered(status) => break Ok(status),
            Attempt::Refused(why) => break Err(why),
            Attempt::Retry(why, _) if tries >= sink.config.max_attempts => break Err(why),
            Attempt::Retry(why, retry_after) => {
                let wait = retry_after
                    .map(|d| d.min(sink.config.max_backoff))
                    .unwrap_or_else(|| {
                        backoff(
                            tries,
                            sink.config.initial_backoff,
                            sink.config.max_backoff,
                            random_unit(),
                        )
                    });
                tracing::info!(sink = %sink.config.name, elevation = %n.elevation.id, attempt = tries, %why, wait = %duration_text(wait), "notification not delivered; retrying");
                sink.metrics.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
            }
        }
    };
    let record = |event: &str, status: Option<u16>, error: Option<&str>| {
        json!({
            "event": event,
            "sink": sink.config.name,
            "format": sink.config.format.as_str(),
            "type": n.kind.event_type(),
            "elevation_id": n.elevation.id,
            "principal": n.elevation.principal_id,
            "agent": n.elevation.agent_id,
            "attempts": tries,
            "status": status,
            "error": error,
        })
    };
    let entry = match &outcome {
        Ok(status) => {
            sink.metrics.delivered.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "rampart::audit", sink = %sink.config.name, elevation = %n.elevation.id, kind = n.kind.as_str(), attempts = tries, "notification delivered");
            record("notification.delivered", Some(*status), None)
        }
        Err(why) => {
            sink.metrics.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "rampart::audit", sink = %sink.config.name, elevation = %n.elevation.id, kind = n.kind.as_str(), attempts = tries, %why, "notification failed");
            record("notification.failed", None, Some(why))
        }
    };
    if let Some(log) = &shared.audit {
        log.write(&entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(1), s(60), 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, s(1), s(60), 1.0), s(1));
        assert_eq!(backoff(2, s(1), s(60), 1.0), s(2));
        assert_eq!(backoff(4, s(1), s(60), 1.0), s(8));
        assert_eq!(backoff(10, s(1), s(60), 1.0), s(60));
        assert_eq!(backoff(10, s(1), s(60), 0.0), s(30));
        // No overflow however many attempts.
        assert_eq!(backoff(u32::MAX, s(1), s(60), 1.0), s(60));
        for _ in 0..100 {
            let d = backoff(3, s(1), s(60), random_unit());
            assert!(d >= s(2) && d <= s(4), "{d:?}");
        }
    }
}
