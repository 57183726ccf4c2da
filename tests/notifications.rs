//! Webhook notifications against a local HTTP receiver: CloudEvents for
//! each new pending elevation and each resolution, Slack and Teams shapes,
//! retries after 500s, refusals, the bounded queue, a receiver that hangs
//! while decisions go on, metrics and audit entries, and the
//! `--notifications` flag through the daemon (flushing at shutdown).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use clap::Parser;
use common::{authed, decision, token, TestServer};
use rampart::elevation::{Elevation, ElevationState};
use rampart::notifications::{Config, Notifier, RunningNotifier};
use rampart::proto::{
    self as pb, ApproveElevationRequest, DenyElevationRequest, RequestElevationRequest,
};
use serde_json::Value;
use tokio::sync::watch;

const SNAPSHOT: &str = include_str!("fixtures/elevation.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const DELETE: &str = "Microsoft.Compute/virtualMachines/delete";
const PAGE: &str = "https://rampart.example.com/ui/approvals";

fn vm(name: &str) -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/{name}")
}

/// What the receiver saw.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// A webhook receiver on an ephemeral port. By path: `/flaky` answers 500
/// to its first `flaky` requests, `/down` always 500, `/bad` always 400,
/// `/hang` holds each request until released; anything else 200.
#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
    flaky: Arc<Mutex<usize>>,
    released: watch::Sender<bool>,
}

impl Receiver {
    async fn start(flaky: usize) -> (Receiver, String) {
        let (released, _) = watch::channel(false);
        let receiver = Receiver {
            seen: Arc::default(),
            flaky: Arc::new(Mutex::new(flaky)),
            released,
        };
        let app = axum::Router::new()
            .fallback(hook)
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (receiver, base)
    }

    fn seen(&self, path: &str) -> Vec<Received> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits (bounded) until `path` has received `n` requests.
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        for _ in 0..1500 {
            let seen = self.seen(path);
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "{path} received {:?}, not {n} requests",
            self.seen(path).len()
        );
    }

    fn release(&self) {
        let _ = self.released.send(true);
    }
}

async fn hook(State(r): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    r.seen.lock().unwrap().push(Received {
        path: path.clone(),
        headers,
        body,
    });
    match path.as_str() {
        "/hang" => {
            let mut released = r.released.subscribe();
            let _ = released.wait_for(|done| *done).await;
            StatusCode::OK
        }
        "/flaky" => {
            let mut left = r.flaky.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
        "/down" => StatusCode::INTERNAL_SERVER_ERROR,
        "/bad" => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

fn ask(principal: &str, action: &str, scope: &str) -> RequestElevationRequest {
    RequestElevationRequest {
        principal_id: principal.into(),
        action: action.into(),
        scope: scope.into(),
        justification: "disk pressure; <!channel> a restart clears it".into(),
        ..Default::default()
    }
}

fn spawn_request(
    s: &TestServer,
    req: RequestElevationRequest,
) -> tokio::task::JoinHandle<Result<pb::Elevation, tonic::Status>> {
    let mut client = s.authorizer.clone();
    tokio::spawn(async move { client.request_elevation(req).await.map(|r| r.into_inner()) })
}

async fn pending(s: &TestServer, principal: &str, action: &str, scope: &str) -> Elevation {
    for _ in 0..1000 {
        if let Some(e) = s.broker.list().into_iter().find(|e| {
            e.state == ElevationState::Pending
                && e.principal_id == principal
                && e.action == action
                && e.scope == scope
        }) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pending elevation for {principal} {action} {scope}");
}

async fn approve(s: &TestServer, id: &str) -> pb::Elevation {
    s.approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: id.into(),
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .expect("oncall approves")
        .into_inner()
}

fn notifier(
    s: &TestServer,
    yaml: &str,
    audit: Option<Arc<rampart::audit::AuditLog>>,
) -> RunningNotifier {
    let config = Config::parse(yaml, |_| None).unwrap_or_else(|e| panic!("{e}"));
    Notifier::new(config, audit).unwrap().start(&s.broker)
}

/// A metric line's value from the Prometheus text.
fn metric(s: &TestServer, name: &str, sink: &str) -> u64 {
    let text = rampart::server::metrics::render(&s.broker);
    let prefix = format!("{name}{{sink=\"{sink}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

async fn wait_metric(s: &TestServer, name: &str, sink: &str, want: u64) {
    for _ in 0..1500 {
        if metric(s, name, sink) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{name}{{sink={sink}}} is {}, not {want}",
        metric(s, name, sink)
    );
}

#[tokio::test]
async fn each_new_elevation_and_each_resolution_arrives_as_a_cloudevent() {
    let (receiver, base) = Receiver::start(0).await;
    let s = TestServer::start(SNAPSHOT).await;
    let n = notifier(
        &s,
        &format!("source: https://rampart.example.com\nsinks:\n  - {{name: ce-all, url: '{base}/events'}}\n"),
        None,
    );

    // approved
    let a = spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")));
    let ea = pending(&s, "agent-r", RESTART, &vm("vm1")).await;
    approve(&s, &ea.id).await;
    a.await.unwrap().unwrap();
    // denied
    let d = spawn_request(&s, ask("agent-p", DELETE, &vm("vm2")));
    let ed = pending(&s, "agent-p", DELETE, &vm("vm2")).await;
    s.approvals
        .clone()
        .deny_elevation(authed(
            DenyElevationRequest {
                id: ed.id.clone(),
                comment: "no".into(),
            },
            &token("oncall"),
        ))
        .await
        .unwrap();
    d.await.unwrap().unwrap();
    // expired: nobody decides within the agent's wait
    let mut short = ask("agent-r", RESTART, &vm("vm3"));
    short.wait_timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let expired = spawn_request(&s, short).await.unwrap().unwrap();
    assert_eq!(expired.state(), pb::ElevationState::Expired);
    // cancelled: the agent goes away
    let c = spawn_request(&s, ask("agent-r", RESTART, &vm("vm4")));
    let ec = pending(&s, "agent-r", RESTART, &vm("vm4")).await;
    c.abort();

    let seen = receiver.wait_for("/events", 8).await;
    let mut by_elevation: HashMap<String, Vec<String>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for r in &seen {
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/cloudevents+json"),
            "{:?}",
            r.headers
        );
        let ev = &r.body;
        assert_eq!(ev["specversion"], "1.0");
        assert_eq!(ev["source"], "https://rampart.example.com");
        assert_eq!(ev["datacontenttype"], "application/json");
        let kind = ev["type"]
            .as_str()
            .unwrap()
            .strip_prefix("dev.rampart.elevation.")
            .unwrap();
        assert_eq!(ev["data"]["state"].as_str().unwrap().to_lowercase(), kind);
        assert_eq!(ev["subject"], ev["data"]["id"]);
        assert!(chrono::DateTime::parse_from_rfc3339(ev["time"].as_str().unwrap()).is_ok());
        assert!(
            ids.insert(ev["id"].as_str().unwrap().to_owned()),
            "ids are unique"
        );
        by_elevation
            .entry(ev["data"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(kind.to_owned());
    }
    assert_eq!(by_elevation[&ea.id], ["pending", "approved"]);
    assert_eq!(by_elevation[&ed.id], ["pending", "denied"]);
    assert_eq!(by_elevation[&expired.id], ["pending", "expired"]);
    assert_eq!(by_elevation[&ec.id], ["pending", "cancelled"]);
    let approved = seen
        .iter()
        .find(|r| r.body["type"] == "dev.rampart.elevation.approved")
        .unwrap();
    assert_eq!(approved.body["data"]["grant"]["onBehalfOf"], "oncall");
    assert_eq!(approved.body["data"]["resolvedBy"], "oncall");
    n.shutdown(Duration::from_secs(5)).await;
    s.stop().await;
}

#[tokio::test]
async fn slack_and_teams_get_their_formats_linking_only_to_the_page() {
    let (receiver, base) = Receiver::start(0).await;
    let s = TestServer::start(SNAPSHOT).await;
    let n = notifier(
        &s,
        &format!("pageUrl: {PAGE}\nsinks:\n  - {{name: fmt-slack, format: slack, url: '{base}/slack', events: [pending]}}\n  - {{name: fmt-teams, format: teams, url: '{base}/teams', events: [pending]}}\n"),
        None,
    );
    let waiting = spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")));
    let e = pending(&s, "agent-r", RESTART, &vm("vm1")).await;

    let slack = &receiver.wait_for("/slack", 1).await[0];
    assert_eq!(slack.headers["content-type"], "application/json");
    let text = slack.body["text"].as_str().unwrap();
    assert!(
        text.starts_with("rampart: agent reviewer asks for"),
        "{text}"
    );
    let blocks = slack.body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let justification = blocks
        .iter()
        .find(|b| {
            b["text"]["type"] == "plain_text"
                && b["text"]["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("Justification")
        })
        .expect("the justification, as plain text");
    assert!(justification["text"]["text"]
        .as_str()
        .unwrap()
        .contains("<!channel>"));
    let button = &blocks.last().unwrap()["elements"][0];
    assert_eq!(button["type"], "button");
    assert_eq!(
        button["url"], PAGE,
        "a link to the page, never to an approve action"
    );

    let teams = &receiver.wait_for("/teams", 1).await[0];
    assert_eq!(teams.body["type"], "message");
    let card = &teams.body["attachments"][0]["content"];
    assert_eq!(
        teams.body["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(card["body"].to_string().contains(&e.id));
    assert_eq!(card["actions"][0]["url"], PAGE);

    // Only the events asked for: the approval is not sent to either.
    approve(&s, &e.id).await;
    waiting.await.unwrap().unwrap();
    n.shutdown(Duration::from_secs(5)).await;
    assert_eq!(receiver.seen("/slack").len(), 1);
    assert_eq!(receiver.seen("/teams").len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn deliveries_are_retried_after_500s_and_each_outcome_is_counted_and_audited() {
    let (receiver, base) = Receiver::start(2).await;
    let s = TestServer::start(SNAPSHOT).await;
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let audit = Arc::new(rampart::audit::AuditLog::open(&audit_path).unwrap());
    let retry = "initialBackoff: 10ms, maxBackoff: 50ms, events: [pending]";
    let n = notifier(
        &s,
        &format!("sinks:\n  - {{name: retry-flaky, url: '{base}/flaky', maxAttempts: 5, {retry}}}\n  - {{name: retry-down, url: '{base}/down', maxAttempts: 3, {retry}}}\n  - {{name: retry-bad, url: '{base}/bad', maxAttempts: 5, {retry}}}\n"),
        Some(audit),
    );
    let waiting = spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")));
    let e = pending(&s, "agent-r", RESTART, &vm("vm1")).await;

    // Two 500s, then accepted: the same event three times.
    wait_metric(
        &s,
        "rampart_notifications_delivered_total",
        "retry-flaky",
        1,
    )
    .await;
    let flaky = receiver.seen("/flaky");
    assert_eq!(flaky.len(), 3);
    assert!(flaky.iter().all(|r| r.body["id"] == flaky[0].body["id"]));
    assert_eq!(
        metric(&s, "rampart_notification_retries_total", "retry-flaky"),
        2
    );
    // Always 500: given up after maxAttempts.
    wait_metric(&s, "rampart_notifications_failed_total", "retry-down", 1).await;
    assert_eq!(receiver.seen("/down").len(), 3);
    // 400: the receiver refuses the request itself; no retry.
    wait_metric(&s, "rampart_notifications_failed_total", "retry-bad", 1).await;
    assert_eq!(receiver.seen("/bad").len(), 1);
    assert_eq!(
        metric(&s, "rampart_notification_retries_total", "retry-bad"),
        0
    );

    let audit: Vec<Value> = std::fs::read_to_string(&audit_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entry = |sink: &str| {
        audit
            .iter()
            .find(|a| a["sink"] == sink)
            .unwrap_or_else(|| panic!("no audit entry for {sink}: {audit:?}"))
            .clone()
    };
    let flaky = entry("retry-flaky");
    assert_eq!(flaky["event"], "notification.delivered");
    assert_eq!(flaky["attempts"], 3);
    assert_eq!(flaky["status"], 200);
    assert_eq!(flaky["elevation_id"], e.id.as_str());
    assert_eq!(flaky["type"], "dev.rampart.elevation.pending");
    let down = entry("retry-down");
    assert_eq!(down["event"], "notification.failed");
    assert_eq!(
        (down["attempts"].as_u64(), down["error"].as_str()),
        (Some(3), Some("HTTP 500"))
    );
    let bad = entry("retry-bad");
    assert_eq!(
        (bad["attempts"].as_u64(), bad["error"].as_str()),
        (Some(1), Some("HTTP 400"))
    );
    // The URL, a secret, is in no audit entry.
    assert!(!audit.iter().any(|a| a.to_string().contains(&base)));

    approve(&s, &e.id).await;
    waiting.await.unwrap().unwrap();
    n.shutdown(Duration::from_secs(5)).await;
    s.stop().await;
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_counts_it() {
    let (receiver, base) = Receiver::start(0).await;
    let s = TestServer::start(SNAPSHOT).await;
    let n = notifier(
        &s,
        &format!("sinks:\n  - {{name: queue-hang, url: '{base}/hang', queueSize: 2, timeout: 2m, maxAttempts: 1, events: [pending]}}\n"),
        None,
    );
    let mut waiting = vec![spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")))];
    let first = pending(&s, "agent-r", RESTART, &vm("vm1")).await;
    // The first is in flight, held by the receiver.
    receiver.wait_for("/hang", 1).await;
    let mut ids = vec![first.id.clone()];
    for name in ["vm2", "vm3", "vm4", "vm5"] {
        waiting.push(spawn_request(&s, ask("agent-r", RESTART, &vm(name))));
        ids.push(pending(&s, "agent-r", RESTART, &vm(name)).await.id);
    }
    // Four more into a queue of two: the two oldest go.
    wait_metric(&s, "rampart_notifications_dropped_total", "queue-hang", 2).await;
    assert_eq!(
        metric(&s, "rampart_notification_queue_length", "queue-hang"),
        2
    );

    receiver.release();
    let seen = receiver.wait_for("/hang", 3).await;
    let delivered: Vec<&str> = seen
        .iter()
        .map(|r| r.body["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        delivered,
        [ids[0].as_str(), ids[3].as_str(), ids[4].as_str()]
    );
    wait_metric(&s, "rampart_notifications_delivered_total", "queue-hang", 3).await;
    n.shutdown(Duration::from_secs(5)).await;
    s.stop().await;
    for w in waiting {
        let _ = w.await;
    }
}

#[tokio::test]
async fn a_receiver_that_hangs_never_delays_a_decision() {
    let (receiver, base) = Receiver::start(0).await;
    let s = TestServer::start(SNAPSHOT).await;
    let n = notifier(
        &s,
        &format!("sinks:\n  - {{name: stuck, url: '{base}/hang', timeout: 10m, maxAttempts: 1}}\n"),
        None,
    );
    let waiting = spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")));
    let e = pending(&s, "agent-r", RESTART, &vm("vm1")).await;
    // The pending notification is stuck in the receiver…
    receiver.wait_for("/hang", 1).await;
    // …while the approval, the agent's answer and the grant go through.
    let approved = approve(&s, &e.id).await;
    assert_eq!(approved.state(), pb::ElevationState::Approved);
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer.state(), pb::ElevationState::Approved);
    let r = s.authorize("agent-r", RESTART, &vm("vm1"), false).await;
    assert_eq!(
        decision(&r),
        (pb::Decision::Allow, pb::Reason::ElevationGrant)
    );
    assert_eq!(
        receiver.seen("/hang").len(),
        1,
        "the decision completed while the first delivery was still held"
    );
    assert_eq!(
        metric(&s, "rampart_notifications_delivered_total", "stuck"),
        0
    );

    // Released, the approval follows in order.
    receiver.release();
    let seen = receiver.wait_for("/hang", 2).await;
    assert_eq!(seen[1].body["type"], "dev.rampart.elevation.approved");
    n.shutdown(Duration::from_secs(5)).await;
    s.stop().await;
}

#[tokio::test]
async fn the_notifications_flag_wires_the_daemon_which_flushes_at_shutdown() {
    let (receiver, base) = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot.yaml");
    std::fs::write(&snapshot, SNAPSHOT).unwrap();
    let file = dir.path().join("notifications.yaml");
    std::fs::write(
        &file,
        format!("sinks:\n  - {{name: daemon-ce, url: '{base}/daemon'}}\n"),
    )
    .unwrap();
    let serve = |notifications: &std::path::Path| {
        let cli = rampart::cli::Cli::try_parse_from([
            "rampart",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--watch",
            "false",
            "--snapshot",
            snapshot.to_str().unwrap(),
            "--notifications",
            notifications.to_str().unwrap(),
        ])
        .unwrap();
        match cli.command {
            Some(rampart::cli::Command::Serve(args)) => rampart::daemon::Daemon::prepare(&args),
            _ => unreachable!(),
        }
    };
    // A bad file stops the start, naming the flag.
    let missing = serve(&dir.path().join("missing.yaml"))
        .err()
        .expect("refused");
    assert!(
        missing
            .to_string()
            .starts_with("cannot load --notifications: cannot read"),
        "{missing}"
    );
    std::fs::write(
        dir.path().join("bad.yaml"),
        "sinks:\n  - {name: x, url: 'ftp://x/y'}\n",
    )
    .unwrap();
    let bad = serve(&dir.path().join("bad.yaml")).err().expect("refused");
    assert!(
        bad.to_string()
            .contains("sinks[0].url: the scheme 'ftp' is not http or https"),
        "{bad}"
    );

    let running = serve(&file).unwrap().start().await.unwrap();
    let mut authorizer = rampart::proto::authorizer_client::AuthorizerClient::connect(format!(
        "http://{}",
        running.authorizer_addr
    ))
    .await
    .unwrap();
    let waiting = tokio::spawn(async move {
        authorizer
            .request_elevation(ask("agent-r", RESTART, &vm("vm1")))
            .await
    });
    let seen = receiver.wait_for("/daemon", 1).await;
    assert_eq!(seen[0].body["type"], "dev.rampart.elevation.pending");
    // Shutdown cancels the pending elevation; its notification still goes.
    running.shutdown().await.unwrap();
    let seen = receiver.seen("/daemon");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].body["type"], "dev.rampart.elevation.cancelled");
    let answer = waiting.await.unwrap().unwrap().into_inner();
    assert_eq!(answer.state(), pb::ElevationState::Cancelled);
}
