//! Operating rampart: the JSON-lines audit trail, and graceful shutdown
//! that cancels pending elevations durably and exits in bounded time.

mod common;

#[path = "common/process.rs"]
mod process;

use std::sync::Arc;
use std::time::Duration;

use common::{authed, token, TestServer};
use rampart::audit::AuditLog;
use rampart::elevation::{ElevationState, Store};
use rampart::proto::{
    self as pb, ApproveElevationRequest, RequestElevationRequest, RevokeGrantRequest,
};

const SNAPSHOT: &str = include_str!("fixtures/elevation.yaml");
const VM: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";

fn ask() -> RequestElevationRequest {
    RequestElevationRequest {
        principal_id: "agent-r".into(),
        action: RESTART.into(),
        scope: VM.into(),
        justification: "stuck".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_audit_log_records_elevations_grants_and_sampled_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    let s = TestServer::start_full(SNAPSHOT, Store::in_memory().unwrap(), Some((log, 1.0))).await;
    s.authorize("agent-r", RESTART, VM, false).await;
    let mut client = s.authorizer.clone();
    let waiting = tokio::spawn(async move { client.request_elevation(ask()).await });
    let id = loop {
        if let Some(e) = s
            .broker
            .list()
            .into_iter()
            .find(|e| e.state == ElevationState::Pending)
        {
            break e.id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    s.approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id,
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .unwrap();
    let grant = waiting.await.unwrap().unwrap().into_inner().grant.unwrap();
    s.approvals
        .clone()
        .revoke_grant(authed(
            RevokeGrantRequest {
                id: grant.id.clone(),
                comment: String::new(),
            },
            &token("oncall"),
        ))
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    for want in [
        "decision",
        "elevation.requested",
        "elevation.approved",
        "grant.ended",
    ] {
        assert!(events.contains(&want), "{want} missing from {events:?}");
    }
    for line in lines.iter().filter(|l| l["event"] != "audit.file") {
        assert!(
            line["time"].is_string() && line["principal"].is_string() && line["scope"].is_string(),
            "{line}"
        );
        assert_eq!(line["revision"], "elevation-1", "{line}");
    }
    let decision = lines.iter().find(|l| l["event"] == "decision").unwrap();
    assert_eq!(decision["reason"], "NEEDS_ELEVATION");
    assert_eq!(decision["decision"], "APPROVAL_REQUIRED");
    assert_eq!(decision["action"], RESTART);
    // Every enum as the API spells it.
    let state_of = |event: &str| {
        lines
            .iter()
            .find(|l| l["event"] == event)
            .map(|l| l["state"].clone())
    };
    assert_eq!(state_of("elevation.requested"), Some("PENDING".into()));
    assert_eq!(state_of("elevation.approved"), Some("APPROVED".into()));
    let ended = lines.iter().find(|l| l["event"] == "grant.ended").unwrap();
    assert_eq!(ended["reason"], "revoked by oncall", "{ended}");
    s.stop().await;
}

#[tokio::test]
async fn sigterm_cancels_pending_elevations_durably_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot.yaml");
    std::fs::write(&snapshot, SNAPSHOT).unwrap();
    let state = dir.path().join("state");
    let server = process::ServerProcess::start(&[
        "--snapshot",
        snapshot.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let mut client = rampart::proto::authorizer_client::AuthorizerClient::connect(format!(
        "http://{}",
        server.authorizer
    ))
    .await
    .unwrap();
    let waiting = tokio::spawn(async move { client.request_elevation(ask()).await });
    // Wait until the request is pending in the store (a reader may open
    // the live database: WAL mode).
    for _ in 0..500 {
        let pending = Store::open(&state)
            .ok()
            .and_then(|st| st.load().ok())
            .is_some_and(|(e, _)| e.iter().any(|x| x.state == ElevationState::Pending));
        if pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let answer = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the waiting call ends")
        .unwrap();
    let elevation = answer.expect("answered, not dropped").into_inner();
    assert_eq!(
        elevation.state(),
        pb::ElevationState::Cancelled,
        "{elevation:?}"
    );
    let mut server = server;
    let exited = server
        .wait_exit(Duration::from_secs(15))
        .expect("rampart exits within the grace period");
    assert!(exited.success(), "{exited:?}");
    let (elevations, _) = Store::open(&state).unwrap().load().unwrap();
    assert!(
        elevations
            .iter()
            .all(|e| e.state != ElevationState::Pending),
        "{elevations:?}"
    );
    assert!(elevations
        .iter()
        .any(|e| e.state == ElevationState::Cancelled));
}

#[test]
fn json_logs_are_one_object_a_line() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut serving = None;
    for line in BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .take(20)
    {
        let parsed: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if parsed["fields"]["message"] == "rampart serving" {
            serving = Some(parsed);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let serving = serving.expect("the start-up line");
    assert_eq!(serving["level"], "INFO");
    assert!(serving["fields"]["authorizer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(serving["fields"]["revision"], "demo-1");
}
