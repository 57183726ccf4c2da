//! Nobody lends what they lack: a grant allows nothing its lender (the
//! approver, or an auto-approve rule's `onBehalfOf`) would be refused for the
//! same operation, scope and request attributes at the moment of use — not
//! below the grant's scope where a deny assignment stops the lender, not with
//! attributes the lender's condition refuses — and grants restored after a
//! restart are checked as at a snapshot swap.

mod common;

use std::collections::HashMap;

use common::{authed, decision, request, token, TestServer};
use rampart::elevation::{ElevationState, Store};
use rampart::proto::{self as pb, ApproveElevationRequest, Reason, RequestElevationRequest};
use tonic::Code;

const SNAPSHOT: &str = include_str!("fixtures/lending.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const ASSIGN: &str = "Microsoft.Authorization/roleAssignments/write";
const ROLE_KEY: &str = "Microsoft.Authorization/roleAssignments:RoleDefinitionId";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";

fn vm(name: &str) -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/{name}")
}

fn role(id: &str) -> HashMap<String, String> {
    HashMap::from([(ROLE_KEY.to_owned(), id.to_owned())])
}

fn ask(
    principal: &str,
    action: &str,
    attributes: HashMap<String, String>,
) -> RequestElevationRequest {
    RequestElevationRequest {
        principal_id: principal.into(),
        action: action.into(),
        scope: RG.into(),
        justification: "rotate the on-call's access after the incident".into(),
        attributes,
        ..Default::default()
    }
}

/// Files an elevation and waits until the broker shows it pending.
async fn file(
    s: &TestServer,
    req: RequestElevationRequest,
) -> (
    String,
    tokio::task::JoinHandle<Result<pb::Elevation, tonic::Status>>,
) {
    let mut client = s.authorizer.clone();
    let principal = req.principal_id.clone();
    let attributes: std::collections::BTreeMap<String, String> =
        req.attributes.clone().into_iter().collect();
    let waiting =
        tokio::spawn(async move { client.request_elevation(req).await.map(|r| r.into_inner()) });
    for _ in 0..500 {
        if let Some(e) = s.broker.list().into_iter().find(|e| {
            e.state == ElevationState::Pending
                && e.principal_id == principal
                && e.attributes == attributes
        }) {
            return (e.id, waiting);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no pending elevation for {principal}");
}

async fn approve(
    s: &TestServer,
    approver: &str,
    id: &str,
    max_uses: u32,
) -> Result<pb::Elevation, tonic::Status> {
    s.approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: id.into(),
                max_uses,
                ..Default::default()
            },
            &token(approver),
        ))
        .await
        .map(|r| r.into_inner())
}

async fn authorize_with(
    s: &TestServer,
    principal: &str,
    action: &str,
    scope: &str,
    attributes: HashMap<String, String>,
) -> (pb::Decision, Reason) {
    let mut req = request(principal, action, scope, false);
    req.attributes = attributes;
    decision(&s.try_authorize(req).await.expect("authorize"))
}

const GRANTED: (pb::Decision, Reason) = (pb::Decision::Allow, Reason::ElevationGrant);
const NEEDS: (pb::Decision, Reason) = (pb::Decision::ApprovalRequired, Reason::NeedsElevation);

#[tokio::test]
async fn a_grant_stops_where_a_deny_assignment_stops_its_approver() {
    let s = TestServer::start(SNAPSHOT).await;
    let (id, waiting) = file(&s, ask("agent-r", RESTART, HashMap::new())).await;
    approve(&s, "oncall", &id, 1)
        .await
        .expect("oncall holds restart at rg-app");
    let grant = waiting.await.unwrap().unwrap().grant.unwrap();
    assert_eq!(grant.scope, RG);

    // oncall may not restart vm-critical, so neither may the agent through
    // oncall's grant; the refusal takes no use.
    let critical = s
        .authorize("agent-r", RESTART, &vm("vm-critical"), false)
        .await;
    assert_eq!(decision(&critical), NEEDS);
    let other = s.authorize("agent-r", RESTART, &vm("vm1"), false).await;
    assert_eq!(decision(&other), GRANTED);
    // The one use went to vm1.
    let again = s.authorize("agent-r", RESTART, &vm("vm1"), false).await;
    assert_eq!(decision(&again), NEEDS);
    s.stop().await;
}

#[tokio::test]
async fn an_auto_approval_lends_no_more_than_its_on_behalf_of_holds() {
    let s = TestServer::start(SNAPSHOT).await;
    let approved = s
        .authorizer
        .clone()
        .request_elevation(ask("agent-a", RESTART, HashMap::new()))
        .await
        .expect("auto-approved")
        .into_inner();
    assert_eq!(approved.state(), pb::ElevationState::Approved);
    assert_eq!(approved.grant.unwrap().on_behalf_of, "oncall");
    let critical = s
        .authorize("agent-a", RESTART, &vm("vm-critical"), false)
        .await;
    assert_eq!(decision(&critical), NEEDS);
    let other = s.authorize("agent-a", RESTART, &vm("vm1"), false).await;
    assert_eq!(decision(&other), GRANTED);
    s.stop().await;
}

#[tokio::test]
async fn a_grant_under_a_condition_lends_only_what_the_condition_allows() {
    let s = TestServer::start(SNAPSHOT).await;
    let (id, waiting) = file(&s, ask("agent-r", ASSIGN, role(READER))).await;
    approve(&s, "delegate", &id, 0)
        .await
        .expect("delegate may assign Reader");
    let elevation = waiting.await.unwrap().unwrap();
    assert_eq!(elevation.attributes, role(READER));

    assert_eq!(
        authorize_with(&s, "agent-r", ASSIGN, RG, role(READER)).await,
        GRANTED
    );
    // delegate may assign Contributor too, so the grant may.
    assert_eq!(
        authorize_with(&s, "agent-r", ASSIGN, RG, role(CONTRIBUTOR)).await,
        GRANTED
    );
    // delegate may not assign Owner: neither may the agent, here or below.
    assert_eq!(
        authorize_with(&s, "agent-r", ASSIGN, RG, role(OWNER)).await,
        NEEDS
    );
    assert_eq!(
        authorize_with(&s, "agent-r", ASSIGN, &vm("vm1"), role(OWNER)).await,
        NEEDS
    );
    s.stop().await;
}

#[tokio::test]
async fn an_approver_is_judged_with_the_request_attributes() {
    let s = TestServer::start(SNAPSHOT).await;
    // Assigning Owner: delegate's condition refuses it, so delegate may not
    // approve it.
    let (owner, owner_waiting) = file(&s, ask("agent-r", ASSIGN, role(OWNER))).await;
    let refused = approve(&s, "delegate", &owner, 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("rule b"),
        "{}",
        refused.message()
    );

    // strict may assign Reader only when the role is named: with the
    // attributes of the request, strict may approve.
    let (reader, waiting) = file(&s, ask("agent-r", ASSIGN, role(READER))).await;
    assert_ne!(
        reader, owner,
        "different attributes make a different elevation"
    );
    approve(&s, "strict", &reader, 0)
        .await
        .expect("strict may assign Reader");
    waiting.await.unwrap().unwrap();
    assert_eq!(
        authorize_with(&s, "agent-r", ASSIGN, RG, role(READER)).await,
        GRANTED
    );
    // Without the attribute, strict's condition refuses, so the grant does.
    assert_eq!(
        authorize_with(&s, "agent-r", ASSIGN, RG, HashMap::new()).await,
        NEEDS
    );
    assert_eq!(
        authorize_with(&s, "agent-r", ASSIGN, RG, role(OWNER)).await,
        NEEDS
    );
    // The Owner request is still pending; its caller goes away.
    owner_waiting.abort();
    s.stop().await;
}

#[tokio::test]
async fn a_new_snapshot_binds_active_grants_at_their_next_use() {
    let s = TestServer::start(SNAPSHOT).await;
    let (id, waiting) = file(&s, ask("agent-r", RESTART, HashMap::new())).await;
    approve(&s, "oncall", &id, 0).await.unwrap();
    waiting.await.unwrap().unwrap();
    assert_eq!(
        decision(&s.authorize("agent-r", RESTART, &vm("vm2"), false).await),
        GRANTED
    );
    // A deny assignment for oncall lands on vm2: the grant (still active,
    // oncall still holds restart at rg-app) no longer reaches vm2.
    let denied_vm2 = SNAPSHOT.replace(
        "    scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-critical\n",
        "    scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm2\n",
    );
    assert_ne!(denied_vm2, SNAPSHOT);
    s.broker
        .swap_snapshot(rampart::snapshot::load_str(&denied_vm2, "t").unwrap());
    assert!(s.broker.grants().iter().all(|g| g.state.is_active()));
    assert_eq!(
        decision(&s.authorize("agent-r", RESTART, &vm("vm2"), false).await),
        NEEDS
    );
    assert_eq!(
        decision(
            &s.authorize("agent-r", RESTART, &vm("vm-critical"), false)
                .await
        ),
        GRANTED
    );
    s.stop().await;
}

/// Approves a restart at rg-app for agent-r as oncall, on a durable store.
async fn grant_then_stop(dir: &std::path::Path) -> String {
    let s = TestServer::start_with_store(SNAPSHOT, Store::open(dir).unwrap()).await;
    let (id, waiting) = file(&s, ask("agent-r", RESTART, HashMap::new())).await;
    approve(&s, "oncall", &id, 0).await.unwrap();
    let grant = waiting.await.unwrap().unwrap().grant.unwrap();
    s.stop().await;
    grant.id
}

#[tokio::test]
async fn a_restart_ends_grants_whose_lender_lost_the_permission_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let grant_id = grant_then_stop(dir.path()).await;
    let demoted = SNAPSHOT.replace(
        "{ id: ra-oncall-app, principal: oncall, role: Contributor,",
        "{ id: ra-oncall-app, principal: oncall, role: Reader,",
    );
    assert_ne!(demoted, SNAPSHOT);
    let s = TestServer::start_with_store(&demoted, Store::open(dir.path()).unwrap()).await;
    let g = s
        .broker
        .grants()
        .into_iter()
        .find(|g| g.id == grant_id)
        .unwrap();
    assert!(!g.state.is_active());
    assert!(
        g.ended_reason
            .as_deref()
            .unwrap_or_default()
            .contains("oncall no longer holds"),
        "{:?}",
        g.ended_reason
    );
    assert_eq!(
        decision(&s.authorize("agent-r", RESTART, &vm("vm1"), false).await),
        NEEDS
    );
    let trail = s.broker.audit_trail().unwrap();
    assert!(trail
        .iter()
        .any(|e| e["event"] == "grant.ended" && e["grant_id"] == grant_id.as_str()));
    s.stop().await;
}

#[tokio::test]
async fn a_restart_ends_grants_whose_scope_left_the_agent_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let grant_id = grant_then_stop(dir.path()).await;
    let moved = SNAPSHOT.replacen(
        &format!("managedScopes: [{RG}]"),
        "managedScopes: [/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-other]",
        1,
    );
    assert_ne!(moved, SNAPSHOT);
    let s = TestServer::start_with_store(&moved, Store::open(dir.path()).unwrap()).await;
    let g = s
        .broker
        .grants()
        .into_iter()
        .find(|g| g.id == grant_id)
        .unwrap();
    assert!(!g.state.is_active());
    assert!(g
        .ended_reason
        .as_deref()
        .unwrap_or_default()
        .contains("scope was removed"));
    s.stop().await;

    // The same store under the original snapshot: an ended grant stays ended.
    let s = TestServer::start_with_store(SNAPSHOT, Store::open(dir.path()).unwrap()).await;
    assert_eq!(
        decision(&s.authorize("agent-r", RESTART, &vm("vm1"), false).await),
        NEEDS
    );
    s.stop().await;
}

#[tokio::test]
async fn request_elevation_bounds_its_attributes_as_authorize_does() {
    let s = TestServer::start(SNAPSHOT).await;
    let many: HashMap<String, String> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let status = s
        .authorizer
        .clone()
        .request_elevation(ask("agent-r", ASSIGN, many))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("attributes"),
        "{}",
        status.message()
    );
    s.stop().await;
}

/// Asking a lender takes a second entry of the engine's effective-permission
/// cache while the agent's is in use; with many (agent, lender) pairs some
/// share a cache shard, which once deadlocked the decision.
#[test]
fn many_agents_with_many_lenders_decide_without_deadlock() {
    use rampart::engine::{ActiveGrant, Engine, Request, Verdict};
    use std::fmt::Write as _;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    const PAIRS: usize = 200;
    let mut yaml =
        String::from("subscriptions:\n  - id: 11111111-1111-1111-1111-111111111111\nprincipals:\n");
    for i in 0..PAIRS {
        let _ = writeln!(yaml, "  - {{ id: agent-{i}, type: ManagedIdentity }}");
        let _ = writeln!(yaml, "  - {{ id: lender-{i}, type: User }}");
    }
    yaml.push_str("roleAssignments:\n");
    for i in 0..PAIRS {
        let _ = writeln!(
            yaml,
            "  - {{ principal: lender-{i}, role: Contributor, scope: {RG} }}"
        );
    }
    yaml.push_str("agents:\n");
    for i in 0..PAIRS {
        let _ = writeln!(
            yaml,
            "  - {{ id: a{i}, principal: agent-{i}, resource: {RG}/providers/Microsoft.App/agents/a{i}, managedScopes: [{RG}], permissionLevel: Reader, executionMode: Review }}"
        );
    }
    let engine = Engine::new(rampart::snapshot::load_str(&yaml, "pairs").unwrap());
    for i in 0..PAIRS {
        engine.grants.insert(Arc::new(ActiveGrant {
            id: format!("g{i}").into(),
            principal_key: format!("agent-{i}").into(),
            action: RESTART.into(),
            scope_key: RG.to_ascii_lowercase().into(),
            scope: RG.into(),
            data_action: false,
            on_behalf_of: format!("lender-{i}").into(),
            co_lenders: Box::default(),
            request_digest: None,
            expires_at: SystemTime::now() + Duration::from_secs(600),
            max_uses: 0,
            uses: Default::default(),
            reserved: Default::default(),
            wanted: Default::default(),
        }));
    }
    // A deadlock would hang the test run: a watchdog turns it into a failure.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let none: &[(&str, &str)] = &[];
        let vm1 = vm("vm1");
        for round in 0..2 {
            for i in 0..PAIRS {
                let agent = format!("agent-{i}");
                let loaded = engine.current();
                let d = loaded
                    .decide_with(
                        &Request {
                            principal_id: &agent,
                            action: RESTART,
                            scope: &vm1,
                            data_action: false,
                            attributes: &none,
                            explain: false,
                            dry_run: false,
                        },
                        Some(engine.live()),
                    )
                    .unwrap();
                assert_eq!(d.verdict, Verdict::Allow, "round {round}, {agent}");
            }
        }
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(120))
        .expect("decisions through grants finish (a deadlock or a panic stops them)");
}
