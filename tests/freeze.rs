//! The freeze switch against the real server: Admin.Freeze and Unfreeze,
//! what a freeze does to agents (and not to people), pending elevations,
//! grants, auto-approve and Envoy's Check, its durability across a
//! restart, its reach across replicas sharing a store, and the callers who
//! must not be able to flip it.

mod common;

use std::time::{Duration, Instant};

use common::{authed, decision, token, TestServer, ADMIN_TOKEN};
use rampart::elevation::{ElevationState, Store};
use rampart::proto::{
    ApproveElevationRequest, Decision, ElevationState as PbState, FreezeRequest,
    GetFreezeStatusRequest, Reason, RequestElevationRequest,
};
use tonic::Code;

const SNAPSHOT: &str = include_str!("fixtures/elevation.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const READ: &str = "Microsoft.Compute/virtualMachines/read";

fn vm() -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1")
}

fn ask(principal: &str) -> RequestElevationRequest {
    RequestElevationRequest {
        principal_id: principal.into(),
        action: RESTART.into(),
        scope: vm(),
        justification: "stuck".into(),
        ..Default::default()
    }
}

async fn freeze(
    s: &TestServer,
    token: &str,
    reason: &str,
) -> Result<rampart::proto::FreezeStatus, tonic::Status> {
    s.admin
        .clone()
        .freeze(authed(
            FreezeRequest {
                reason: reason.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn unfreeze(
    s: &TestServer,
    token: &str,
    reason: &str,
) -> Result<rampart::proto::FreezeStatus, tonic::Status> {
    s.admin
        .clone()
        .unfreeze(authed(
            FreezeRequest {
                reason: reason.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn pending_id(s: &TestServer) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = s
            .broker
            .list()
            .into_iter()
            .find(|e| e.state == ElevationState::Pending)
        {
            return e.id;
        }
        assert!(Instant::now() < deadline, "no elevation became pending");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// agent-r (Reader, Review mode) gets a grant for RESTART from oncall.
async fn grant_restart(s: &TestServer) {
    let mut client = s.authorizer.clone();
    let waiting = tokio::spawn(async move { client.request_elevation(ask("agent-r")).await });
    let id = pending_id(s).await;
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
    let e = waiting.await.unwrap().unwrap().into_inner();
    assert_eq!(e.state(), PbState::Approved);
}

#[tokio::test]
async fn an_agent_holding_a_grant_is_denied_while_frozen_and_the_grant_works_after() {
    let s = TestServer::start(SNAPSHOT).await;
    grant_restart(&s).await;
    let allowed = s.authorize("agent-r", RESTART, &vm(), false).await;
    assert_eq!(
        decision(&allowed),
        (Decision::Allow, Reason::ElevationGrant)
    );

    let status = freeze(&s, ADMIN_TOKEN, "incident 42").await.unwrap();
    assert!(status.frozen);
    assert_eq!(
        (status.by.as_str(), status.reason.as_str()),
        ("admin", "incident 42")
    );
    assert!(status.since.is_some());

    // The grant, the agent's own Reader rights, and outside its scopes: all FROZEN.
    for (action, scope) in [
        (RESTART, vm()),
        (READ, vm()),
        (
            READ,
            "/subscriptions/11111111-1111-1111-1111-111111111111".to_owned(),
        ),
    ] {
        let r = s.authorize("agent-r", action, &scope, false).await;
        assert_eq!(
            decision(&r),
            (Decision::Deny, Reason::Frozen),
            "{action} {scope}"
        );
    }
    // Explained too, with the one spelling.
    let explained = s.explain("agent-r", RESTART, &vm(), false).await;
    assert_eq!(explained.reason().as_str_name(), "FROZEN");
    // People are unaffected.
    let human = s.authorize("oncall", RESTART, &vm(), false).await;
    assert_eq!(decision(&human), (Decision::Allow, Reason::RoleAssignment));
    // The grant is suspended, not ended.
    assert_eq!(s.broker.grants().len(), 1);
    assert!(s.broker.grants()[0].state.is_active());

    let status = unfreeze(&s, ADMIN_TOKEN, "resolved").await.unwrap();
    assert!(!status.frozen);
    let again = s.authorize("agent-r", RESTART, &vm(), false).await;
    assert_eq!(decision(&again), (Decision::Allow, Reason::ElevationGrant));

    // Who and why, in the audit trail.
    let trail = s.broker.audit_trail().unwrap();
    let frozen = trail
        .iter()
        .find(|e| e["event"] == "rampart.frozen")
        .expect("frozen event");
    assert_eq!(
        (frozen["by"].as_str(), frozen["reason"].as_str()),
        (Some("admin"), Some("incident 42"))
    );
    let unfrozen = trail
        .iter()
        .find(|e| e["event"] == "rampart.unfrozen")
        .expect("unfrozen event");
    assert_eq!(
        (unfrozen["by"].as_str(), unfrozen["reason"].as_str()),
        (Some("admin"), Some("resolved"))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_freeze_cancels_pending_elevations_and_refuses_new_ones_and_auto_approval() {
    let s = TestServer::start(SNAPSHOT).await;
    let mut client = s.authorizer.clone();
    let waiting = tokio::spawn(async move { client.request_elevation(ask("agent-r")).await });
    let id = pending_id(&s).await;
    freeze(&s, ADMIN_TOKEN, "incident 43").await.unwrap();
    let cancelled = waiting.await.unwrap().unwrap().into_inner();
    assert_eq!(cancelled.state(), PbState::Cancelled);
    assert_eq!(cancelled.resolved_by, "admin");
    assert!(
        cancelled.comment.contains("incident 43"),
        "{}",
        cancelled.comment
    );
    // Approving it now is refused.
    let late = s
        .approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id,
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");

    // New elevations are refused, for Review and Auto agents alike: the
    // auto-approve rule for agent-a would otherwise grant this at once.
    for agent in ["agent-r", "agent-a"] {
        let refused = s
            .authorizer
            .clone()
            .request_elevation(ask(agent))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{agent}");
        assert!(
            refused.message().contains("FROZEN"),
            "{}",
            refused.message()
        );
    }
    assert!(s.broker.grants().is_empty());
    assert!(s.broker.pending_elevations().is_empty());

    // After the freeze, auto-approve works again.
    unfreeze(&s, ADMIN_TOKEN, "over").await.unwrap();
    let e = s
        .authorizer
        .clone()
        .request_elevation(ask("agent-a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.state(), PbState::Approved);
    s.stop().await;
}

#[tokio::test]
async fn only_an_admin_token_flips_the_switch_and_a_reason_is_required() {
    let s = TestServer::start(SNAPSHOT).await;
    for who in ["oncall", "agent-r"] {
        let e = freeze(&s, &token(who), "let me").await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{who}: {e:?}");
    }
    let anonymous = s
        .admin
        .clone()
        .freeze(FreezeRequest { reason: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let e = freeze(&s, ADMIN_TOKEN, " ").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("reason"), "{e:?}");
    let r = s.authorize("agent-r", READ, &vm(), false).await;
    assert_eq!(decision(&r), (Decision::Allow, Reason::RoleAssignment));

    // Frozen by the admin, nobody else may thaw it.
    freeze(&s, ADMIN_TOKEN, "incident").await.unwrap();
    let e = unfreeze(&s, &token("oncall"), "mine now")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let r = s.authorize("agent-r", READ, &vm(), false).await;
    assert_eq!(decision(&r), (Decision::Deny, Reason::Frozen));
    let status = s
        .admin
        .clone()
        .get_freeze_status(authed(GetFreezeStatusRequest {}, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(status.frozen);
    assert_eq!(status.reason, "incident");
    s.stop().await;
}

#[tokio::test]
async fn a_restart_while_frozen_stays_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with_store(SNAPSHOT, Store::open(dir.path()).unwrap()).await;
    grant_restart(&s).await;
    freeze(&s, ADMIN_TOKEN, "incident 44").await.unwrap();
    s.stop().await;

    let s = TestServer::start_with_store(SNAPSHOT, Store::open(dir.path()).unwrap()).await;
    let r = s.authorize("agent-r", RESTART, &vm(), false).await;
    assert_eq!(decision(&r), (Decision::Deny, Reason::Frozen));
    let status = s
        .admin
        .clone()
        .get_freeze_status(authed(GetFreezeStatusRequest {}, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(status.frozen);
    assert_eq!(
        (status.by.as_str(), status.reason.as_str()),
        ("admin", "incident 44")
    );
    // The grant came back suspended, and counts once unfrozen.
    unfreeze(&s, ADMIN_TOKEN, "over").await.unwrap();
    let r = s.authorize("agent-r", RESTART, &vm(), false).await;
    assert_eq!(decision(&r), (Decision::Allow, Reason::ElevationGrant));
    s.stop().await;

    let s = TestServer::start_with_store(SNAPSHOT, Store::open(dir.path()).unwrap()).await;
    let r = s.authorize("agent-r", READ, &vm(), false).await;
    assert_eq!(decision(&r), (Decision::Allow, Reason::RoleAssignment));
    s.stop().await;
}

#[tokio::test]
async fn a_freeze_through_one_replica_reaches_another_sharing_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start_with_store(SNAPSHOT, Store::open(dir.path()).unwrap()).await;
    let b = TestServer::start_with_store(SNAPSHOT, Store::open(dir.path()).unwrap()).await;
    freeze(&a, ADMIN_TOKEN, "fleet-wide").await.unwrap();
    // b reads the switch from the store on its next sweep (every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = b.authorize("agent-r", READ, &vm(), false).await;
        if decision(&r) == (Decision::Deny, Reason::Frozen) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freeze never reached the other replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unfreeze(&b, ADMIN_TOKEN, "thawed through b").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = a.authorize("agent-r", READ, &vm(), false).await;
        if decision(&r) == (Decision::Allow, Reason::RoleAssignment) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unfreeze never reached the other replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[path = "common/process.rs"]
mod process;

/// `rampart freeze` and `unfreeze` against the real binary, with a tokens
/// file: the admin's token flips the switch, an approver's does not, and
/// who and why land in the audit log file.
#[test]
fn the_cli_freezes_with_an_admin_token_only() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    let sha = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
    std::fs::write(
        &tokens,
        format!(
            "- {{sha256: {}, principal: root, admin: true}}\n- {{sha256: {}, principal: oncall}}\n",
            sha("adm-secret"),
            sha("oncall-secret")
        ),
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = process::ServerProcess::start(&[
        "--tokens",
        tokens.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
    ]);
    let admin_addr = server.admin.to_string();
    let run = |verb: &str, token: &str, reason: &str| {
        let token_file = dir.path().join(format!("{token}.tok"));
        std::fs::write(&token_file, token).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args([verb, "--admin-addr", &admin_addr, "--token-file"])
            .arg(&token_file)
            .args(["--reason", reason])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run("freeze", "oncall-secret", "mine");
    assert_eq!(code, Some(1));
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    let (code, out, err) = run("freeze", "adm-secret", "incident 45");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("FROZEN (every agent is denied) by root since "),
        "{out}"
    );
    assert!(out.ends_with(": incident 45\n"), "{out}");
    let (code, out, err) = run("unfreeze", "adm-secret", "over");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("not frozen by root"), "{out}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found: Vec<(&str, &str, &str)> = lines
        .iter()
        .filter(|l| {
            l["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("rampart."))
        })
        .map(|l| {
            (
                l["event"].as_str().unwrap(),
                l["by"].as_str().unwrap(),
                l["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("rampart.frozen", "root", "incident 45"),
            ("rampart.unfrozen", "root", "over")
        ]
    );
    server.kill9();
}
