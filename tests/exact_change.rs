//! Exact-change approvals over gRPC (docs/agents-and-elevation.md#exact-change-approvals):
//! the elevation records the request and shows its body redacted; an
//! approval bound to the body allows that body once, and nothing else.

mod common;

use std::time::Duration;

use common::{authed, decision, request, token, TestServer};
use rampart::elevation::policy::exact::sha256_hex;
use rampart::elevation::{Elevation, ElevationState};
use rampart::proto::{self as pb, ApproveElevationRequest, Reason, RequestElevationRequest};
use tonic::Code;

const SNAPSHOT: &str = include_str!("fixtures/elevation.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const BODY: &str = r#"{"properties":{"adminPassword":"hunter2","size":"Standard_D2s_v5"}}"#;
const OTHER_BODY: &str =
    r#"{"properties":{"adminPassword":"hunter2","size":"Standard_M416ms_v2"}}"#;

fn vm() -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1")
}

fn ask(body: &str) -> RequestElevationRequest {
    RequestElevationRequest {
        principal_id: "agent-r".into(),
        action: RESTART.into(),
        scope: vm(),
        justification: "resize and restart".into(),
        request_method: "POST".into(),
        request_path: format!("{}/restart?api-version=2024-07-01", vm()),
        request_body: body.as_bytes().to_vec(),
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

async fn pending(s: &TestServer, count: usize) -> Vec<Elevation> {
    for _ in 0..500 {
        let found: Vec<Elevation> = s
            .broker
            .list()
            .into_iter()
            .filter(|e| e.state == ElevationState::Pending)
            .collect();
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {count} pending elevations");
}

async fn approve(s: &TestServer, id: &str, bind: Option<bool>) -> pb::Elevation {
    s.approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: id.into(),
                bind_to_request: bind,
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
}

async fn with_digest(s: &TestServer, scope: &str, digest: &str) -> pb::AuthorizeResponse {
    let mut req = request("agent-r", RESTART, scope, false);
    req.request_digest = digest.into();
    s.try_authorize(req).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_approver_sees_the_request_redacted_and_the_grant_allows_that_body_once() {
    let s = TestServer::start(SNAPSHOT).await;
    let waiting = spawn_request(&s, ask(BODY));
    let e = pending(&s, 1).await.remove(0);
    let digest = sha256_hex(BODY.as_bytes());
    let recorded = e.request.clone().unwrap_or_else(|| panic!("no request"));
    assert_eq!(recorded.digest, digest);
    assert_eq!(recorded.method, "POST");
    let preview = recorded.body_preview.unwrap_or_default();
    assert!(!preview.contains("hunter2"), "{preview}");
    assert!(
        preview.contains("\"adminPassword\": \"[REDACTED]\""),
        "{preview}"
    );
    assert!(preview.contains("Standard_D2s_v5"), "{preview}");
    // The digest is the elevation's attribute too.
    assert_eq!(e.attributes.get("rampart:requestBodySha256"), Some(&digest));

    let approved = approve(&s, &e.id, None).await;
    let grant = approved.grant.unwrap_or_else(|| panic!("no grant"));
    assert_eq!(grant.request_digest, digest);
    assert_eq!(grant.max_uses, 1, "bound: once unless max_uses says more");
    assert!(waiting.await.is_ok());

    // Not without the digest, not with another body's, not below.
    let none = s.authorize("agent-r", RESTART, &vm(), false).await;
    assert_eq!(none.decision(), pb::Decision::ApprovalRequired);
    let other = with_digest(&s, &vm(), &sha256_hex(OTHER_BODY.as_bytes())).await;
    assert_eq!(other.decision(), pb::Decision::ApprovalRequired);
    let disk = format!("{}/extensions/x", vm());
    assert_eq!(
        with_digest(&s, &disk, &digest).await.decision(),
        pb::Decision::ApprovalRequired
    );
    // The same body: once.
    let same = with_digest(&s, &vm(), &format!("sha256:{digest}")).await;
    assert_eq!(
        decision(&same),
        (pb::Decision::Allow, Reason::ElevationGrant)
    );
    let again = with_digest(&s, &vm(), &digest).await;
    assert_eq!(again.decision(), pb::Decision::ApprovalRequired);
}

#[tokio::test]
async fn different_bodies_are_different_elevations() {
    let s = TestServer::start(SNAPSHOT).await;
    let _a = spawn_request(&s, ask(BODY));
    let _b = spawn_request(&s, ask(OTHER_BODY));
    let _c = spawn_request(&s, ask(BODY));
    pending(&s, 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let all: Vec<Elevation> = s
        .broker
        .list()
        .into_iter()
        .filter(|e| e.state == ElevationState::Pending)
        .collect();
    assert_eq!(all.len(), 2, "the same body joins, another does not");
    let joined = all.iter().map(|e| e.waiters).max();
    assert_eq!(joined, Some(2));
}

#[tokio::test]
async fn an_approver_may_leave_the_grant_unbound() {
    let s = TestServer::start(SNAPSHOT).await;
    let waiting = spawn_request(&s, ask(BODY));
    let e = pending(&s, 1).await.remove(0);
    let approved = approve(&s, &e.id, Some(false)).await;
    let grant = approved.grant.unwrap_or_else(|| panic!("no grant"));
    assert!(grant.request_digest.is_empty());
    assert_eq!(grant.max_uses, 0);
    assert!(waiting.await.is_ok());
    let any = s.authorize("agent-r", RESTART, &vm(), false).await;
    assert_eq!(any.decision(), pb::Decision::Allow);
}

#[tokio::test]
async fn a_digest_that_is_not_the_bodys_or_not_a_digest_is_refused() {
    let s = TestServer::start(SNAPSHOT).await;
    let mut req = ask(BODY);
    req.request_digest = sha256_hex(OTHER_BODY.as_bytes());
    let refused = s.authorizer.clone().request_elevation(req).await.err();
    assert_eq!(
        refused.as_ref().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );
    assert!(
        refused.is_some_and(|s| s.message() == "request_digest is not the SHA-256 of request_body")
    );

    let mut req = ask("");
    req.request_digest = "abc".into();
    let refused = s.authorizer.clone().request_elevation(req).await.err();
    assert_eq!(
        refused.as_ref().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );

    let mut bad = request("agent-r", RESTART, &vm(), false);
    bad.request_digest = "not-a-digest".into();
    let refused = s.try_authorize(bad).await.err();
    assert_eq!(refused.map(|s| s.code()), Some(Code::InvalidArgument));

    // Binding an elevation that carries no request is refused.
    let plain = RequestElevationRequest {
        principal_id: "agent-r".into(),
        action: RESTART.into(),
        scope: vm(),
        justification: "restart".into(),
        ..Default::default()
    };
    let _waiting = spawn_request(&s, plain);
    let e = pending(&s, 1).await.remove(0);
    let refused = s
        .approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: e.id.clone(),
                bind_to_request: Some(true),
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .err();
    assert_eq!(
        refused.as_ref().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );
    assert!(refused.is_some_and(|s| s.message().contains("no request digest")));
}
