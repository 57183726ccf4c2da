//! Shadow auto-approve (docs/agents-and-elevation.md#shadow-auto-approve):
//! shadow rules are evaluated on every elevation, Review-mode agents too,
//! never act, are recorded on the elevation, counted against the human's
//! decision in the metrics, and reported by `rampart elevations report`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{authed, token, TestServer};
use rampart::elevation::{Elevation, ElevationState, ShadowOutcome};
use rampart::proto::{self as pb, ApproveElevationRequest, DenyElevationRequest};

const SNAPSHOT: &str = include_str!("fixtures/shadow.yaml");
const VM: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const START: &str = "Microsoft.Compute/virtualMachines/start/action";
const DELETE: &str = "Microsoft.Compute/virtualMachines/delete";

fn ask(principal: &str, action: &str) -> pb::RequestElevationRequest {
    pb::RequestElevationRequest {
        principal_id: principal.into(),
        action: action.into(),
        scope: VM.into(),
        justification: "disk pressure".into(),
        ..Default::default()
    }
}

fn spawn_request(
    s: &TestServer,
    req: pb::RequestElevationRequest,
) -> tokio::task::JoinHandle<Result<pb::Elevation, tonic::Status>> {
    let mut client = s.authorizer.clone();
    tokio::spawn(async move { client.request_elevation(req).await.map(|r| r.into_inner()) })
}

async fn pending(s: &TestServer, principal: &str, action: &str) -> Elevation {
    for _ in 0..500 {
        let found = s.broker.list().into_iter().find(|e| {
            e.state == ElevationState::Pending && e.principal_id == principal && e.action == action
        });
        if let Some(e) = found {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pending elevation for {principal} {action}");
}

async fn decide(s: &TestServer, id: &str, approve: bool) -> pb::Elevation {
    let mut client = s.approvals.clone();
    let answer = if approve {
        client
            .approve_elevation(authed(
                ApproveElevationRequest {
                    id: id.into(),
                    ..Default::default()
                },
                &token("oncall"),
            ))
            .await
    } else {
        client
            .deny_elevation(authed(
                DenyElevationRequest {
                    id: id.into(),
                    comment: "no".into(),
                },
                &token("oncall"),
            ))
            .await
    };
    answer.unwrap_or_else(|e| panic!("{e}")).into_inner()
}

fn shadow_line(metrics: &str, labels: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("rampart_shadow_auto_approve_total{{{labels}}}")))
        .map(str::to_owned)
}

#[tokio::test]
async fn a_shadow_rule_of_a_review_agent_is_recorded_never_acts_and_is_measured() {
    let s = TestServer::start(SNAPSHOT).await;

    // Would approve, and the human approves: agreement.
    let first = spawn_request(&s, ask("agent-r", RESTART));
    let e = pending(&s, "agent-r", RESTART).await;
    assert_eq!(e.shadow.len(), 1);
    assert_eq!(e.shadow[0].outcome, ShadowOutcome::WouldApprove);
    assert_eq!(e.shadow[0].on_behalf_of, "oncall");
    // Never acting: it is still pending, waiting on a human.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!first.is_finished());
    let approved = decide(&s, &e.id, true).await;
    assert_eq!(approved.state(), pb::ElevationState::Approved);
    assert_eq!(
        approved.shadow[0].outcome(),
        pb::ShadowOutcome::WouldApprove
    );
    assert!(first.await.is_ok());
    // Revoked, so the same request is filed again rather than answered
    // NOT_NEEDED.
    let grant = approved.grant.unwrap_or_else(|| panic!("no grant"));
    s.approvals
        .clone()
        .revoke_grant(authed(
            pb::RevokeGrantRequest {
                id: grant.id,
                comment: String::new(),
            },
            &token("oncall"),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Would approve, and the human denies: disagreement.
    let second = spawn_request(&s, ask("agent-r", RESTART));
    let e = pending(&s, "agent-r", RESTART).await;
    decide(&s, &e.id, false).await;
    assert!(second.await.is_ok());

    // Would not approve (viewer lacks the start), the human denies:
    // agreement.
    let third = spawn_request(&s, ask("agent-r", START));
    let e = pending(&s, "agent-r", START).await;
    assert_eq!(e.shadow[0].outcome, ShadowOutcome::WouldSkip);
    decide(&s, &e.id, false).await;
    assert!(third.await.is_ok());

    let metrics = rampart::server::metrics::render(&s.broker);
    assert_eq!(
        shadow_line(&metrics, "agent=\"reviewer\",rule=\"0\",shadow=\"WOULD_APPROVE\",decision=\"APPROVED\",agreement=\"AGREE\"").as_deref(),
        Some("rampart_shadow_auto_approve_total{agent=\"reviewer\",rule=\"0\",shadow=\"WOULD_APPROVE\",decision=\"APPROVED\",agreement=\"AGREE\"} 1")
    );
    assert!(shadow_line(&metrics, "agent=\"reviewer\",rule=\"0\",shadow=\"WOULD_APPROVE\",decision=\"DENIED\",agreement=\"DISAGREE\"").is_some_and(|l| l.ends_with(" 1")), "{metrics}");
    assert!(shadow_line(&metrics, "agent=\"reviewer\",rule=\"1\",shadow=\"WOULD_SKIP\",decision=\"DENIED\",agreement=\"AGREE\"").is_some_and(|l| l.ends_with(" 1")), "{metrics}");

    // The CLI's report over the stored history.
    let addr = s
        .running
        .as_ref()
        .map(|r| r.admin_addr.to_string())
        .unwrap_or_else(|| panic!("not running"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["elevations", "report", "--admin-addr", &addr])
            .env("RAMPART_TOKEN", token("oncall"))
            .env_remove("RAMPART_ADMIN_ADDR")
            .output()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("agent=reviewer rule=0 onBehalfOf=oncall decided=2 AGREE=1 DISAGREE=1 agreement=50.0%  WOULD_APPROVE: APPROVED=1 DENIED=1  WOULD_SKIP: APPROVED=0 DENIED=0  undecided=0"),
        "{report}"
    );
    assert!(
        report.contains(
            "agent=reviewer rule=1 onBehalfOf=viewer decided=1 AGREE=1 DISAGREE=0 agreement=100.0%"
        ),
        "{report}"
    );
}

#[tokio::test]
async fn a_shadow_rule_of_an_auto_agent_never_approves_but_its_live_rules_still_do() {
    let s = TestServer::start(SNAPSHOT).await;
    // The only rule matching restarts is a shadow: the elevation waits.
    let waiting = spawn_request(&s, ask("agent-a", RESTART));
    let e = pending(&s, "agent-a", RESTART).await;
    assert_eq!(e.shadow[0].outcome, ShadowOutcome::WouldApprove);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    assert_eq!(
        s.broker.get(&e.id).map(|e| e.state),
        Some(ElevationState::Pending)
    );
    waiting.abort();

    // The live rule approves deletes as before, and no shadow rule matched.
    let deleted = s
        .authorizer
        .clone()
        .request_elevation(ask("agent-a", DELETE))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(deleted.state(), pb::ElevationState::Approved);
    assert!(deleted.shadow.is_empty());
    // An auto-approval is no human decision: nothing is counted.
    let metrics = rampart::server::metrics::render(&s.broker);
    assert!(
        !metrics.contains("rampart_shadow_auto_approve_total{"),
        "{metrics}"
    );
}
