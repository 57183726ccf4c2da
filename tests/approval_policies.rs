//! Approval policies over gRPC (docs/agents-and-elevation.md#approval-policies):
//! two distinct approvers, each passing the approver rules and the policy's
//! list; one deny vetoes; tickets; a policy's maxDuration; and every
//! approver's permission checked on each use of the grant.

mod common;

use std::time::Duration;

use common::{authed, decision, token, TestServer};
use rampart::elevation::{Elevation, ElevationState};
use rampart::proto::{
    self as pb, ApproveElevationRequest, DenyElevationRequest, GetElevationRequest, Reason,
    RequestElevationRequest,
};
use tonic::Code;

const SNAPSHOT: &str = include_str!("fixtures/approval_policies.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const DELETE: &str = "Microsoft.Compute/virtualMachines/delete";
const START: &str = "Microsoft.Compute/virtualMachines/start/action";

fn vm(name: &str) -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/{name}")
}

fn ask(action: &str, scope: &str) -> RequestElevationRequest {
    RequestElevationRequest {
        principal_id: "agent-r".into(),
        action: action.into(),
        scope: scope.into(),
        justification: "disk pressure on the VM; a restart clears it".into(),
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

async fn pending(s: &TestServer, action: &str) -> Elevation {
    for _ in 0..500 {
        let found = s
            .broker
            .list()
            .into_iter()
            .find(|e| e.state == ElevationState::Pending && e.action == action);
        if let Some(e) = found {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pending elevation for {action}");
}

async fn approve(s: &TestServer, approver: &str, id: &str) -> Result<pb::Elevation, tonic::Status> {
    s.approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: id.into(),
                ..Default::default()
            },
            &token(approver),
        ))
        .await
        .map(|r| r.into_inner())
}

async fn get(s: &TestServer, id: &str) -> pb::Elevation {
    s.approvals
        .clone()
        .get_elevation(authed(
            GetElevationRequest { id: id.into() },
            &token("oncall"),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
}

fn approvers(e: &pb::Elevation) -> Vec<&str> {
    e.approvals.iter().map(|a| a.by.as_str()).collect()
}

#[tokio::test]
async fn two_distinct_approvers_from_the_list_are_needed_and_the_agent_waits_for_both() {
    let s = TestServer::start(SNAPSHOT).await;
    let waiting = spawn_request(&s, ask(RESTART, &vm("vm1")));
    let e = pending(&s, RESTART).await;

    let first = approve(&s, "oncall", &e.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.state(), pb::ElevationState::Pending);
    assert_eq!(first.required_approvals, 2);
    assert_eq!(approvers(&first), ["oncall"]);
    assert!(first.grant.is_none());
    // The approval so far is visible to every approver, and the agent
    // still waits.
    assert_eq!(approvers(&get(&s, &e.id).await), ["oncall"]);
    assert!(!waiting.is_finished());

    // A member of a listed group is the second, distinct approver.
    let second = approve(&s, "oncall2", &e.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.state(), pb::ElevationState::Approved);
    assert_eq!(approvers(&second), ["oncall", "oncall2"]);
    let grant = second.grant.clone().unwrap_or_else(|| panic!("no grant"));
    assert_eq!(grant.on_behalf_of, "oncall");
    assert_eq!(grant.co_lenders, ["oncall2"]);
    assert_eq!(second.resolved_by, "oncall2");

    let answered = waiting
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answered.state(), pb::ElevationState::Approved);
    let used = s.authorize("agent-r", RESTART, &vm("vm1"), false).await;
    assert_eq!(
        decision(&used),
        (pb::Decision::Allow, Reason::ElevationGrant)
    );

    // The trail has the first approval and the approval that completed it.
    let trail = s.broker.audit_trail().unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<(String, String)> = trail
        .iter()
        .filter(|t| t["elevation_id"] == e.id.as_str())
        .map(|t| {
            (
                t["event"].as_str().unwrap_or_default().to_owned(),
                t["by"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("elevation.requested".to_owned(), String::new()),
            (
                "elevation.approval_recorded".to_owned(),
                "oncall".to_owned()
            ),
            ("elevation.approved".to_owned(), "oncall2".to_owned()),
        ]
    );
}

#[tokio::test]
async fn the_same_approver_twice_the_agent_itself_and_an_unlisted_approver_never_count() {
    let s = TestServer::start(SNAPSHOT).await;
    let _waiting = spawn_request(&s, ask(RESTART, &vm("vm1")));
    let e = pending(&s, RESTART).await;
    approve(&s, "oncall", &e.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The same approver again: refused, still one approval.
    let twice = approve(&s, "oncall", &e.id).await.err();
    assert_eq!(
        twice.as_ref().map(|s| s.code()),
        Some(Code::FailedPrecondition)
    );
    assert!(
        twice
            .as_ref()
            .is_some_and(|s| s.message().contains("has approved elevation")
                && s.message().contains("needs 2 distinct approvers and has 1")),
        "{twice:?}"
    );
    // The agent's own identity (rule c).
    let own = approve(&s, "agent-r", &e.id).await.err();
    assert_eq!(own.as_ref().map(|s| s.code()), Some(Code::PermissionDenied));
    assert!(own.is_some_and(|s| s.message().contains("rule c")));
    // Holds the operation and may interact, but is not listed.
    let unlisted = approve(&s, "outsider", &e.id).await.err();
    assert_eq!(
        unlisted.as_ref().map(|s| s.code()),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        unlisted.as_ref().map(|s| s.message()),
        Some("outsider is not among the approvers of agent reviewer's approval policy for this operation (oncall, sre, viewer)")
    );
    // Listed, but cannot lend what it does not hold (rule b).
    let viewer = approve(&s, "viewer", &e.id).await.err();
    assert!(viewer.is_some_and(|s| s.message().contains("rule b")));

    let after = get(&s, &e.id).await;
    assert_eq!(after.state(), pb::ElevationState::Pending);
    assert_eq!(approvers(&after), ["oncall"]);
    let no_grant = s.authorize("agent-r", RESTART, &vm("vm1"), false).await;
    assert_eq!(no_grant.decision(), pb::Decision::ApprovalRequired);
}

#[tokio::test]
async fn one_deny_vetoes_an_elevation_with_approvals() {
    let s = TestServer::start(SNAPSHOT).await;
    let waiting = spawn_request(&s, ask(RESTART, &vm("vm1")));
    let e = pending(&s, RESTART).await;
    approve(&s, "oncall", &e.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let denied = s
        .approvals
        .clone()
        .deny_elevation(authed(
            DenyElevationRequest {
                id: e.id.clone(),
                comment: "not during the freeze".into(),
            },
            &token("viewer"),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(denied.state(), pb::ElevationState::Denied);
    // The approval given before stays on the record.
    assert_eq!(approvers(&denied), ["oncall"]);
    let late = approve(&s, "oncall2", &e.id).await.err();
    assert_eq!(late.map(|s| s.code()), Some(Code::FailedPrecondition));
    let answered = waiting
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answered.state(), pb::ElevationState::Denied);
}

#[tokio::test]
async fn every_approver_must_hold_the_operation_on_each_use_of_the_grant() {
    let s = TestServer::start(SNAPSHOT).await;
    // At the resource group, so the grant covers the critical VM, which
    // lead (one of the two approvers) is denied.
    let _waiting = spawn_request(&s, ask(RESTART, RG));
    let e = pending(&s, RESTART).await;
    approve(&s, "oncall", &e.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let approved = approve(&s, "lead", &e.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(approved.state(), pb::ElevationState::Approved);
    let ok = s.authorize("agent-r", RESTART, &vm("vm1"), false).await;
    assert_eq!(decision(&ok), (pb::Decision::Allow, Reason::ElevationGrant));
    // oncall holds the restart of the critical VM; lead does not, so the
    // grant does not lend it.
    let critical = s
        .authorize("agent-r", RESTART, &vm("critical"), false)
        .await;
    assert_eq!(critical.decision(), pb::Decision::ApprovalRequired);
}

#[tokio::test]
async fn a_ticket_is_required_shown_and_the_policy_caps_the_duration() {
    let s = TestServer::start(SNAPSHOT).await;
    let mut req = ask(DELETE, &vm("vm1"));
    req.requested_duration = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    let refused = s
        .authorizer
        .clone()
        .request_elevation(req.clone())
        .await
        .err();
    assert_eq!(
        refused.as_ref().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );
    assert!(
        refused
            .as_ref()
            .is_some_and(|s| s.message().contains("requires a ticket reference")),
        "{refused:?}"
    );

    req.ticket = "CHG-1234".into();
    let waiting = spawn_request(&s, req);
    let e = pending(&s, DELETE).await;
    let shown = get(&s, &e.id).await;
    assert_eq!(shown.ticket, "CHG-1234");
    assert_eq!(shown.required_approvals, 1);
    assert_eq!(
        shown.requested_duration.map(|d| d.seconds),
        Some(600),
        "the policy's maxDuration caps the request"
    );
    // One approver suffices here.
    let approved = approve(&s, "oncall", &e.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(approved.state(), pb::ElevationState::Approved);
    let answered = waiting
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answered.ticket, "CHG-1234");
}

#[tokio::test]
async fn without_a_matching_policy_one_approver_still_suffices() {
    let s = TestServer::start(SNAPSHOT).await;
    let waiting = spawn_request(&s, ask(START, &vm("vm1")));
    let e = pending(&s, START).await;
    let approved = approve(&s, "outsider", &e.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(approved.state(), pb::ElevationState::Approved);
    assert_eq!(approved.required_approvals, 1);
    assert_eq!(approvers(&approved), ["outsider"]);
    let grant = approved.grant.unwrap_or_else(|| panic!("no grant"));
    assert!(grant.co_lenders.is_empty());
    assert!(waiting.await.is_ok());
}
