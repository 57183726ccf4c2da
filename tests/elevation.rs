//! Agents and elevation over gRPC (docs/agents-and-elevation.md): the eight rows of the
//! decision table, RequestElevation, the approval rules, grants, the
//! auto-approve policy, reload and restart.

mod common;

use std::time::Duration;

use common::{authed, decision, token, TestServer, ADMIN_TOKEN};
use rampart::elevation::{Elevation, ElevationState, Store};
use rampart::proto::{
    self as pb, ApproveElevationRequest, DenyElevationRequest, GetElevationRequest,
    GetSnapshotStatusRequest, ListElevationsRequest, ListGrantsRequest, MatchKind, Reason,
    RequestElevationRequest, RevokeGrantRequest, WatchElevationsRequest,
};
use tonic::Code;

const SNAPSHOT: &str = include_str!("fixtures/elevation.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const READ: &str = "Microsoft.Compute/virtualMachines/read";
const DELETE: &str = "Microsoft.Compute/virtualMachines/delete";
const BLOB_READ: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";

fn vm(name: &str) -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/{name}")
}

fn ask(principal: &str, action: &str, scope: &str) -> RequestElevationRequest {
    RequestElevationRequest {
        principal_id: principal.into(),
        action: action.into(),
        scope: scope.into(),
        justification: "disk pressure on the VM; a restart clears it".into(),
        ..Default::default()
    }
}

fn seconds(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

/// Starts a RequestElevation in the background.
fn spawn_request(
    s: &TestServer,
    req: RequestElevationRequest,
) -> tokio::task::JoinHandle<Result<pb::Elevation, tonic::Status>> {
    let mut client = s.authorizer.clone();
    tokio::spawn(async move { client.request_elevation(req).await.map(|r| r.into_inner()) })
}

/// Waits (bounded) until the broker shows a pending elevation matching.
async fn pending(s: &TestServer, principal: &str, action: &str, waiters: u32) -> Elevation {
    for _ in 0..500 {
        let found = s.broker.list().into_iter().find(|e| {
            e.state == ElevationState::Pending
                && e.principal_id == principal
                && e.action == action
                && e.waiters >= waiters
        });
        if let Some(e) = found {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pending elevation for {principal} {action}");
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

#[tokio::test]
async fn the_eight_rows_of_the_agent_decision_table() {
    let s = TestServer::start(SNAPSHOT).await;
    let rows = [
        // read-only, has, Review → ALLOW
        (
            "agent-r",
            READ,
            false,
            (pb::Decision::Allow, Reason::RoleAssignment),
        ),
        // read-only, lacks, Review → APPROVAL_REQUIRED
        (
            "agent-r",
            BLOB_READ,
            true,
            (pb::Decision::ApprovalRequired, Reason::NeedsElevation),
        ),
        // read-only, has, Auto → ALLOW
        (
            "agent-a",
            READ,
            false,
            (pb::Decision::Allow, Reason::RoleAssignment),
        ),
        // read-only, lacks, Auto → APPROVAL_REQUIRED
        (
            "agent-a",
            BLOB_READ,
            true,
            (pb::Decision::ApprovalRequired, Reason::NeedsElevation),
        ),
        // write, has, Review → APPROVAL_REQUIRED (the action needs approval)
        (
            "agent-p",
            RESTART,
            false,
            (pb::Decision::ApprovalRequired, Reason::ReviewModeWrite),
        ),
        // write, lacks, Review → APPROVAL_REQUIRED
        (
            "agent-r",
            RESTART,
            false,
            (pb::Decision::ApprovalRequired, Reason::NeedsElevation),
        ),
        // write, has, Auto → ALLOW
        (
            "agent-q",
            RESTART,
            false,
            (pb::Decision::Allow, Reason::RoleAssignment),
        ),
        // write, lacks, Auto → APPROVAL_REQUIRED
        (
            "agent-a",
            RESTART,
            false,
            (pb::Decision::ApprovalRequired, Reason::NeedsElevation),
        ),
    ];
    for (agent, action, data, want) in rows {
        let r = s.authorize(agent, action, &vm("vm1"), data).await;
        assert_eq!(decision(&r), want, "{agent} {action}");
    }
    // Outside the managed scopes: no prompt.
    let outside = s
        .authorize(
            "agent-q",
            READ,
            "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-other",
            false,
        )
        .await;
    assert_eq!(
        decision(&outside),
        (pb::Decision::Deny, Reason::OutOfAgentScope)
    );
    // A deny assignment stays DENY, even for the privileged Auto agent.
    let denied = s
        .authorize("agent-q", "Microsoft.Authorization/locks/delete", RG, false)
        .await;
    assert_eq!(
        decision(&denied),
        (pb::Decision::Deny, Reason::DenyAssignment)
    );
    s.stop().await;
}

#[tokio::test]
async fn an_approved_elevation_is_a_grant_for_that_operation_at_that_scope_and_below() {
    let s = TestServer::start(SNAPSHOT).await;
    let waiting = spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")));
    let e = pending(&s, "agent-r", RESTART, 1).await;
    assert_eq!(e.reason, rampart::engine::Reason::NeedsElevation);
    let approved = approve(&s, "oncall", &e.id)
        .await
        .expect("oncall may approve");
    assert_eq!(approved.state(), pb::ElevationState::Approved);
    let answer = waiting.await.unwrap().expect("the waiting call returns");
    assert_eq!(answer.id, e.id);
    assert_eq!(answer.state(), pb::ElevationState::Approved);
    let grant = answer.grant.expect("a grant");
    assert_eq!(grant.on_behalf_of, "oncall");
    assert_eq!(grant.action, RESTART);

    let allowed = s.explain("agent-r", RESTART, &vm("vm1"), false).await;
    assert_eq!(
        decision(&allowed),
        (pb::Decision::Allow, Reason::ElevationGrant)
    );
    assert_eq!(allowed.matches[0].kind(), MatchKind::MatchGrant);
    assert_eq!(allowed.matches[0].id, grant.id);
    let below = s
        .authorize(
            "agent-r",
            RESTART,
            &format!("{}/extensions/e1", vm("vm1")),
            false,
        )
        .await;
    assert_eq!(
        decision(&below),
        (pb::Decision::Allow, Reason::ElevationGrant)
    );
    // Only that operation, only there.
    let other_vm = s.authorize("agent-r", RESTART, &vm("vm2"), false).await;
    assert_eq!(
        decision(&other_vm),
        (pb::Decision::ApprovalRequired, Reason::NeedsElevation)
    );
    let other_op = s.authorize("agent-r", DELETE, &vm("vm1"), false).await;
    assert_eq!(
        decision(&other_op),
        (pb::Decision::ApprovalRequired, Reason::NeedsElevation)
    );
    // Asking again while the grant holds needs nothing.
    let again = s
        .authorizer
        .clone()
        .request_elevation(ask("agent-r", RESTART, &vm("vm1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state(), pb::ElevationState::NotNeeded);
    s.stop().await;
}

#[tokio::test]
async fn approval_of_a_review_mode_write_the_agent_holds_is_the_permission_to_act() {
    let s = TestServer::start(SNAPSHOT).await;
    let waiting = spawn_request(&s, ask("agent-p", RESTART, &vm("vm1")));
    let e = pending(&s, "agent-p", RESTART, 1).await;
    assert_eq!(e.reason, rampart::engine::Reason::ReviewModeWrite);
    approve(&s, "oncall", &e.id).await.unwrap();
    waiting.await.unwrap().unwrap();
    let r = s.authorize("agent-p", RESTART, &vm("vm1"), false).await;
    assert_eq!(decision(&r), (pb::Decision::Allow, Reason::ElevationGrant));
    s.stop().await;
}

#[tokio::test]
async fn requests_that_need_no_approval_or_cannot_have_one_answer_at_once() {
    let s = TestServer::start(SNAPSHOT).await;
    let mut client = s.authorizer.clone();
    let not_needed = client
        .request_elevation(ask("agent-r", READ, &vm("vm1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(not_needed.state(), pb::ElevationState::NotNeeded);
    for req in [
        ask("agent-q", "Microsoft.Authorization/locks/delete", RG),
        ask(
            "agent-r",
            RESTART,
            "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-other",
        ),
        ask("ghost", RESTART, RG),
        ask(
            "oncall",
            DELETE,
            "/subscriptions/11111111-1111-1111-1111-111111111111",
        ),
    ] {
        let status = client
            .request_elevation(req.clone())
            .await
            .expect_err("cannot be elevated");
        assert_eq!(status.code(), Code::FailedPrecondition, "{req:?}: {status}");
    }
    let mut no_reason = ask("agent-r", RESTART, &vm("vm1"));
    no_reason.justification = "  ".into();
    let status = client.request_elevation(no_reason).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("justification"), "{status}");
    let mut long = ask("agent-r", RESTART, &vm("vm1"));
    long.justification = "x".repeat(1025);
    assert_eq!(
        client.request_elevation(long).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let bad = ask("agent-r", "Microsoft.Compute/*", &vm("vm1"));
    let status = client.request_elevation(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("action"), "{status}");
    s.stop().await;
}

#[tokio::test]
async fn every_approver_refusal_names_what_is_missing() {
    let s = TestServer::start(SNAPSHOT).await;
    let waiting = spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")));
    let e = pending(&s, "agent-r", RESTART, 1).await;
    let mut approvals = s.approvals.clone();

    let anonymous = approvals
        .approve_elevation(ApproveElevationRequest {
            id: e.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let forged = approvals
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: e.id.clone(),
                ..Default::default()
            },
            "not-a-token",
        ))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);

    // (a) interacting with the agent needs Microsoft.App/agents/write there.
    let a = approve(&s, "outsider", &e.id).await.unwrap_err();
    assert_eq!(a.code(), Code::PermissionDenied);
    assert!(
        a.message().contains("Microsoft.App/agents/write") && a.message().contains("rule a"),
        "{a}"
    );
    // (b) nobody lends what they do not hold.
    let b = approve(&s, "viewer", &e.id).await.unwrap_err();
    assert_eq!(b.code(), Code::PermissionDenied);
    assert!(
        b.message().contains(RESTART) && b.message().contains("rule b"),
        "{b}"
    );
    // (c) the agent does not approve itself.
    let c = approve(&s, "agent-r", &e.id).await.unwrap_err();
    assert_eq!(c.code(), Code::PermissionDenied);
    assert!(c.message().contains("rule c"), "{c}");
    // Denial needs only (a): the outsider may not, the viewer may.
    let deny = |who: &str| {
        let mut approvals = s.approvals.clone();
        let req = authed(
            DenyElevationRequest {
                id: e.id.clone(),
                comment: "not now".into(),
            },
            &token(who),
        );
        async move { approvals.deny_elevation(req).await }
    };
    assert_eq!(
        deny("outsider").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let denied = deny("viewer").await.unwrap().into_inner();
    assert_eq!(denied.state(), pb::ElevationState::Denied);
    assert_eq!(denied.resolved_by, "viewer");
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer.state(), pb::ElevationState::Denied);
    assert_eq!(answer.comment, "not now");
    // Resolved is resolved.
    assert_eq!(
        approve(&s, "oncall", &e.id).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Admin calls need an admin token.
    let status = s
        .admin
        .clone()
        .get_snapshot_status(authed(GetSnapshotStatusRequest {}, &token("oncall")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(s
        .admin
        .clone()
        .get_snapshot_status(authed(GetSnapshotStatusRequest {}, ADMIN_TOKEN))
        .await
        .is_ok());
    s.stop().await;
}

#[tokio::test]
async fn lists_and_watches_show_only_agents_the_caller_may_interact_with() {
    let s = TestServer::start(SNAPSHOT).await;
    let mut watch = s
        .approvals
        .clone()
        .watch_elevations(authed(WatchElevationsRequest {}, &token("oncall")))
        .await
        .unwrap()
        .into_inner();
    let waiting = spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")));
    let seen = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let e = seen.elevation.unwrap();
    assert_eq!(e.state(), pb::ElevationState::Pending);
    assert!(!seen.initial);
    let list = |who: &str| {
        let mut approvals = s.approvals.clone();
        let req = authed(ListElevationsRequest::default(), &token(who));
        async move {
            approvals
                .list_elevations(req)
                .await
                .unwrap()
                .into_inner()
                .elevations
        }
    };
    assert_eq!(list("oncall").await.len(), 1);
    assert!(list("outsider").await.is_empty());
    let hidden = s
        .approvals
        .clone()
        .get_elevation(authed(
            GetElevationRequest { id: e.id.clone() },
            &token("outsider"),
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    // A watch started now gets the pending one first.
    let mut late = s
        .approvals
        .clone()
        .watch_elevations(authed(WatchElevationsRequest {}, &token("viewer")))
        .await
        .unwrap()
        .into_inner();
    let first = late.message().await.unwrap().unwrap();
    assert!(first.initial);
    assert_eq!(first.elevation.unwrap().id, e.id);
    approve(&s, "oncall", &e.id).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        change.elevation.unwrap().state(),
        pb::ElevationState::Approved
    );
    waiting.await.unwrap().unwrap();
    s.stop().await;
}

#[tokio::test]
async fn identical_pending_requests_join_one_elevation() {
    let s = TestServer::start(SNAPSHOT).await;
    let first = spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")));
    let second = spawn_request(
        &s,
        ask(
            "agent-r",
            "microsoft.compute/virtualMachines/RESTART/action",
            &vm("vm1").to_uppercase(),
        ),
    );
    let e = pending(&s, "agent-r", RESTART, 2).await;
    assert_eq!(
        s.broker
            .list()
            .iter()
            .filter(|x| x.state == ElevationState::Pending)
            .count(),
        1
    );
    approve(&s, "oncall", &e.id).await.unwrap();
    let (a, b) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert_eq!(a.id, b.id);
    assert_eq!(b.state(), pb::ElevationState::Approved);
    s.stop().await;
}

#[tokio::test]
async fn an_unanswered_elevation_expires_and_watchers_see_it() {
    let s = TestServer::start(SNAPSHOT).await;
    let mut watch = s.broker.subscribe();
    let mut req = ask("agent-r", RESTART, &vm("vm1"));
    req.wait_timeout = seconds(1);
    let answer = s
        .authorizer
        .clone()
        .request_elevation(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.state(), pb::ElevationState::Expired);
    let mut states = Vec::new();
    while let Ok(e) = watch.try_recv() {
        states.push(e.state);
    }
    assert_eq!(
        states,
        vec![ElevationState::Pending, ElevationState::Expired]
    );
    s.stop().await;
}

#[tokio::test]
async fn a_caller_that_goes_away_cancels_its_elevation() {
    let s = TestServer::start(SNAPSHOT).await;
    let mut watch = s.broker.subscribe();
    let waiting = spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")));
    let e = pending(&s, "agent-r", RESTART, 1).await;
    waiting.abort();
    let mut cancelled = None;
    for _ in 0..500 {
        if let Ok(change) = watch.try_recv() {
            if change.state == ElevationState::Cancelled {
                cancelled = Some(change);
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(cancelled.expect("watchers see the cancellation").id, e.id);

    // A deadline that passes is the caller going away too.
    let mut req = tonic::Request::new(ask("agent-r", RESTART, &vm("vm2")));
    req.set_timeout(Duration::from_millis(300));
    let status = s
        .authorizer
        .clone()
        .request_elevation(req)
        .await
        .unwrap_err();
    // The client's own timer or the server's, whichever reports first.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status}"
    );
    let mut state = None;
    for _ in 0..500 {
        state = s
            .broker
            .list()
            .into_iter()
            .find(|x| x.scope == vm("vm2"))
            .map(|x| x.state);
        if state == Some(ElevationState::Cancelled) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state, Some(ElevationState::Cancelled));
    s.stop().await;
}

#[tokio::test]
async fn auto_mode_approves_by_rule_when_on_behalf_of_holds_the_operation() {
    let s = TestServer::start(SNAPSHOT).await;
    let mut client = s.authorizer.clone();
    let mut req = ask("agent-a", RESTART, &vm("vm1"));
    req.requested_duration = seconds(3600);
    let e = client.request_elevation(req).await.unwrap().into_inner();
    assert_eq!(e.state(), pb::ElevationState::Approved);
    assert_eq!(e.resolved_by, "auto-approve:auto-reader#0");
    let grant = e.grant.unwrap();
    assert_eq!(grant.on_behalf_of, "oncall");
    let lasts = grant.expires_at.unwrap().seconds - grant.created_at.unwrap().seconds;
    assert!(
        lasts <= 30 * 60,
        "capped by the rule's maxDuration: {lasts}s"
    );
    assert_eq!(
        decision(&s.authorize("agent-a", RESTART, &vm("vm1"), false).await),
        (pb::Decision::Allow, Reason::ElevationGrant)
    );

    // The delete rule's onBehalfOf lacks delete: a human is needed.
    let mut del = ask("agent-a", DELETE, &vm("vm1"));
    del.wait_timeout = seconds(1);
    let e = client.request_elevation(del).await.unwrap().into_inner();
    assert_eq!(e.state(), pb::ElevationState::Expired);

    // maxPerHour 2: the second restart is approved, the third waits.
    let e = client
        .request_elevation(ask("agent-a", RESTART, &vm("vm2")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.state(), pb::ElevationState::Approved);
    let mut third = ask("agent-a", RESTART, &vm("vm3"));
    third.wait_timeout = seconds(1);
    let e = client.request_elevation(third).await.unwrap().into_inner();
    assert_eq!(e.state(), pb::ElevationState::Expired);
    s.stop().await;
}

#[tokio::test]
async fn review_mode_agents_are_never_auto_approved() {
    let s = TestServer::start(SNAPSHOT).await;
    let mut req = ask("agent-r", RESTART, &vm("vm1"));
    req.wait_timeout = seconds(1);
    let e = s
        .authorizer
        .clone()
        .request_elevation(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.state(), pb::ElevationState::Expired);
    s.stop().await;
}

#[tokio::test]
async fn at_most_a_hundred_pending_elevations_per_principal() {
    // A rate that lets all hundred in at once, so the per-principal cap is
    // what refuses.
    let snapshot = SNAPSHOT.replace(
        "      # Never applied: the agent is in Review mode.\n",
        "      maxRequestsPerMinute: 10000\n",
    );
    assert_ne!(snapshot, SNAPSHOT);
    let s = TestServer::start(&snapshot).await;
    let waiting: Vec<_> = (0..100)
        .map(|i| spawn_request(&s, ask("agent-r", RESTART, &vm(&format!("vm{i}")))))
        .collect();
    for _ in 0..500 {
        if s.broker.pending_elevations().len() == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = s
        .authorizer
        .clone()
        .request_elevation(ask("agent-r", RESTART, &vm("vm-extra")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("the limit is 100"),
        "{}",
        status.message()
    );
    for w in waiting {
        w.abort();
    }
    s.stop().await;
}

async fn approved_grant(
    s: &TestServer,
    principal: &str,
    scope: &str,
    max_uses: u32,
    duration: Option<prost_types::Duration>,
) -> pb::Grant {
    let waiting = spawn_request(s, ask(principal, RESTART, scope));
    let e = pending(s, principal, RESTART, 1).await;
    s.approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: e.id.clone(),
                max_uses,
                duration,
                comment: String::new(),
                bind_to_request: None,
            },
            &token("oncall"),
        ))
        .await
        .unwrap();
    waiting.await.unwrap().unwrap().grant.unwrap()
}

#[tokio::test]
async fn grants_end_on_revoke_use_up_and_expiry() {
    let s = TestServer::start(SNAPSHOT).await;
    // Revoke.
    let g = approved_grant(&s, "agent-r", &vm("vm1"), 0, None).await;
    let refused = s
        .approvals
        .clone()
        .revoke_grant(authed(
            RevokeGrantRequest {
                id: g.id.clone(),
                comment: String::new(),
            },
            &token("outsider"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let revoked = s
        .approvals
        .clone()
        .revoke_grant(authed(
            RevokeGrantRequest {
                id: g.id.clone(),
                comment: "done".into(),
            },
            &token("oncall"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state(), pb::GrantState::Ended);
    assert!(
        revoked.ended_reason.contains("revoked by oncall"),
        "{}",
        revoked.ended_reason
    );
    assert_eq!(
        decision(&s.authorize("agent-r", RESTART, &vm("vm1"), false).await),
        (pb::Decision::ApprovalRequired, Reason::NeedsElevation)
    );

    // Used up.
    approved_grant(&s, "agent-r", &vm("vm2"), 1, None).await;
    assert_eq!(
        decision(&s.authorize("agent-r", RESTART, &vm("vm2"), false).await),
        (pb::Decision::Allow, Reason::ElevationGrant)
    );
    assert_eq!(
        decision(&s.authorize("agent-r", RESTART, &vm("vm2"), false).await),
        (pb::Decision::ApprovalRequired, Reason::NeedsElevation)
    );

    // Expired.
    let g = approved_grant(&s, "agent-r", &vm("vm3"), 0, seconds(1)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        decision(&s.authorize("agent-r", RESTART, &vm("vm3"), false).await),
        (pb::Decision::ApprovalRequired, Reason::NeedsElevation)
    );
    s.broker.sweep();
    let grants = s
        .approvals
        .clone()
        .list_grants(authed(
            ListGrantsRequest {
                include_ended: true,
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    let ended = grants.iter().find(|x| x.id == g.id).unwrap();
    assert_eq!(
        (ended.state(), ended.ended_reason.as_str()),
        (pb::GrantState::Ended, "expired")
    );
    let used = grants.iter().find(|x| x.scope == vm("vm2")).unwrap();
    assert_eq!(
        (used.state(), used.ended_reason.as_str(), used.uses),
        (pb::GrantState::Ended, "used up", 1)
    );
    let active = s
        .approvals
        .clone()
        .list_grants(authed(ListGrantsRequest::default(), &token("oncall")))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert!(active.is_empty(), "{active:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_reload_ends_grants_whose_scope_left_the_agent_or_whose_approver_lost_the_permission() {
    let s = TestServer::start(SNAPSHOT).await;
    approved_grant(&s, "agent-r", &vm("vm1"), 0, None).await;
    approved_grant(&s, "agent-p", &vm("vm1"), 0, None).await;
    // The reviewer loses rg-app; oncall loses Contributor on rg-app.
    let other_rg = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-other";
    let moved = SNAPSHOT.replacen(
        &format!("managedScopes: [{RG}]"),
        &format!("managedScopes: [{other_rg}]"),
        1,
    );
    s.broker
        .swap_snapshot(rampart::snapshot::load_str(&moved, "t").unwrap());
    let ended: Vec<_> = s
        .broker
        .grants()
        .into_iter()
        .filter(|g| !g.state.is_active())
        .collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].principal_id, "agent-r");
    assert!(ended[0]
        .ended_reason
        .as_deref()
        .unwrap_or_default()
        .contains("scope was removed"));

    let demoted = moved.replace(
        "{ id: ra-oncall-app, principal: oncall, role: Contributor,",
        "{ id: ra-oncall-app, principal: oncall, role: Reader,",
    );
    s.broker
        .swap_snapshot(rampart::snapshot::load_str(&demoted, "t").unwrap());
    let p = s
        .broker
        .grants()
        .into_iter()
        .find(|g| g.principal_id == "agent-p")
        .unwrap();
    assert!(!p.state.is_active());
    assert!(
        p.ended_reason
            .as_deref()
            .unwrap_or_default()
            .contains("oncall no longer holds"),
        "{:?}",
        p.ended_reason
    );
    assert_eq!(
        decision(&s.authorize("agent-p", RESTART, &vm("vm1"), false).await),
        (pb::Decision::ApprovalRequired, Reason::ReviewModeWrite)
    );
    s.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_active_grants_and_cancels_what_was_pending() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with_store(SNAPSHOT, Store::open(dir.path()).unwrap()).await;
    let kept = approved_grant(&s, "agent-r", &vm("vm1"), 0, None).await;
    let short = approved_grant(&s, "agent-r", &vm("vm2"), 0, seconds(1)).await;
    let TestServer {
        running,
        broker,
        engine,
        ..
    } = s;
    running.unwrap().shutdown().await.unwrap();
    drop((broker, engine));

    // What a crash leaves behind: an elevation still marked pending.
    let store = Store::open(dir.path()).unwrap();
    let now = std::time::SystemTime::now();
    let orphan = Elevation {
        id: "orphan".into(),
        principal_id: "agent-r".into(),
        agent_id: "reviewer".into(),
        action: DELETE.into(),
        scope: vm("vm9"),
        data_action: false,
        read_only: false,
        justification: "j".into(),
        attributes: Default::default(),
        reason: rampart::engine::Reason::NeedsElevation,
        requested_duration: Duration::from_secs(60),
        state: ElevationState::Pending,
        created_at: now,
        wait_deadline: now + Duration::from_secs(60),
        resolved_at: None,
        resolved_by: None,
        comment: None,
        grant: None,
        ticket: None,
        required_approvals: 0,
        approvals: Vec::new(),
        shadow: Vec::new(),
        request: None,
        waiters: 1,
    };
    store.put_elevation(&orphan).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let s = TestServer::start_with_store(SNAPSHOT, store).await;
    let r = s.explain("agent-r", RESTART, &vm("vm1"), false).await;
    assert_eq!(decision(&r), (pb::Decision::Allow, Reason::ElevationGrant));
    assert_eq!(r.matches[0].id, kept.id);
    let expired = s.authorize("agent-r", RESTART, &vm("vm2"), false).await;
    assert_eq!(
        decision(&expired),
        (pb::Decision::ApprovalRequired, Reason::NeedsElevation)
    );
    let g = s
        .broker
        .grants()
        .into_iter()
        .find(|g| g.id == short.id)
        .unwrap();
    assert_eq!(g.ended_reason.as_deref(), Some("expired"));
    let orphan = s.broker.get("orphan").unwrap();
    assert_eq!(orphan.state, ElevationState::Cancelled);
    let trail = s.broker.audit_trail().unwrap();
    assert!(trail.iter().any(|e| e["event"] == "elevation.approved"));
    assert!(trail
        .iter()
        .any(|e| e["event"] == "elevation.cancelled" && e["elevation_id"] == "orphan"));
    s.stop().await;
}

#[tokio::test]
async fn a_joiner_with_a_shorter_wait_times_out_alone() {
    let s = TestServer::start(SNAPSHOT).await;
    let first = spawn_request(&s, ask("agent-r", RESTART, &vm("vm1")));
    let e = pending(&s, "agent-r", RESTART, 1).await;
    let mut short = ask("agent-r", RESTART, &vm("vm1"));
    short.wait_timeout = seconds(1);
    let mine = s
        .authorizer
        .clone()
        .request_elevation(short)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (mine.id.as_str(), mine.state()),
        (e.id.as_str(), pb::ElevationState::Expired)
    );
    assert_eq!(
        s.broker.get(&e.id).unwrap().state,
        ElevationState::Pending,
        "still pending for the first caller"
    );
    approve(&s, "oncall", &e.id).await.unwrap();
    assert_eq!(
        first.await.unwrap().unwrap().state(),
        pb::ElevationState::Approved
    );
    s.stop().await;
}
