//! Bounded durable state (docs/agents-and-elevation.md#limits): the
//! Authorizer is unauthenticated, so anyone may file elevations in any
//! agent's name. A global cap on pending elevations and a per-agent rate
//! bound what a flood can store; retention purges history; listings page
//! through the store; inputs echoed in errors are bounded.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{authed, token, TestServer, ADMIN_TOKEN};
use rampart::elevation::policy::lifecycle;
use rampart::elevation::{types::new_id, Elevation, ElevationState, EndReason, Limits, Store};
use rampart::engine::Reason;
use rampart::proto::{
    self as pb, ApproveElevationRequest, DenyElevationRequest, GetElevationRequest,
    ListElevationsRequest, ListGrantsRequest, RequestElevationRequest, RevokeGrantRequest,
};
use tonic::Code;

const SUB: &str = "/subscriptions/11111111-1111-1111-1111-111111111111";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const DELETE: &str = "Microsoft.Compute/virtualMachines/delete";
const DEALLOCATE: &str = "Microsoft.Compute/virtualMachines/deallocate/action";

fn rg() -> String {
    format!("{SUB}/resourceGroups/rg-app")
}

fn vm(n: usize) -> String {
    format!("{}/providers/Microsoft.Compute/virtualMachines/vm{n}", rg())
}

/// A tenant of `agents` Reader agents `flood-0`… (each with its own
/// identity and `extra` elevation settings) and an approver, `oncall`.
fn tenant(agents: usize, extra: &str) -> String {
    let mut y = "revision: limits-1\nsubscriptions:\n  - id: 11111111-1111-1111-1111-111111111111\nprincipals:\n  - { id: oncall, type: User }\n".to_owned();
    for i in 0..agents {
        y += &format!("  - {{ id: flood-{i}, type: ManagedIdentity }}\n");
    }
    y += &format!(
        "roleAssignments:\n  - {{ id: ra-app, principal: oncall, role: Contributor, scope: {SUB}/resourceGroups/rg-app }}\n  - {{ id: ra-agents, principal: oncall, role: Contributor, scope: {SUB}/resourceGroups/rg-agents }}\nagents:\n"
    );
    for i in 0..agents {
        y += &format!(
            "  - id: flood-{i}\n    principal: flood-{i}\n    resource: {SUB}/resourceGroups/rg-agents/providers/Microsoft.App/agents/flood-{i}\n    managedScopes: [{SUB}/resourceGroups/rg-app]\n    permissionLevel: Reader\n    executionMode: Review\n    elevation: {{ {extra} }}\n"
        );
    }
    y
}

fn ask(agent: usize, action: &str, scope: &str, wait: Duration) -> RequestElevationRequest {
    RequestElevationRequest {
        principal_id: format!("flood-{agent}"),
        action: action.into(),
        scope: scope.into(),
        justification: "j".repeat(1024),
        wait_timeout: Some(prost_types::Duration {
            seconds: wait.as_secs() as i64,
            nanos: wait.subsec_nanos() as i32,
        }),
        ..Default::default()
    }
}

fn spawn(
    s: &TestServer,
    req: RequestElevationRequest,
) -> tokio::task::JoinHandle<Result<pb::Elevation, tonic::Status>> {
    let mut client = s.authorizer.clone();
    tokio::spawn(async move { client.request_elevation(req).await.map(|r| r.into_inner()) })
}

async fn until_pending(s: &TestServer, n: usize) {
    for _ in 0..1000 {
        if s.broker.pending_elevations().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "{} pending, waited for {n}",
        s.broker.pending_elevations().len()
    );
}

fn file_bytes(dir: &std::path::Path) -> u64 {
    ["rampart.db", "rampart.db-wal", "rampart.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_requests_stores_what_the_limits_allow() {
    const AGENTS: usize = 20;
    const REQUESTS: usize = 4000;
    let dir = tempfile::tempdir().expect("tempdir");
    let s =
        TestServer::start_with_store(&tenant(AGENTS, ""), Store::open(dir.path()).expect("store"))
            .await;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let (mut filed, mut limited, mut refused) = (0usize, 0usize, 0usize);
    for i in 0..REQUESTS {
        // Many agents, operations and scopes, and names that are no agent.
        // Every tenth round of agents is a name that is no agent, so every
        // agent is asked in the other rounds.
        let req = if (i / AGENTS) % 10 == 9 {
            let mut r = ask(0, RESTART, &vm(i), Duration::from_millis(300));
            r.principal_id = format!("nobody-{i}");
            r
        } else {
            let action = [RESTART, DELETE, DEALLOCATE][i % 3];
            ask(i % AGENTS, action, &vm(i), Duration::from_millis(300))
        };
        set.spawn(spawn(&s, req));
        while set.len() >= 256 {
            tally(
                set.join_next().await,
                &mut filed,
                &mut limited,
                &mut refused,
            );
        }
    }
    while let Some(r) = set.join_next().await {
        tally(Some(r), &mut filed, &mut limited, &mut refused);
    }
    let elapsed = started.elapsed();

    // What the limits allow: a burst of 20 per agent, then 60 a minute.
    let per_agent = 20 + (elapsed.as_secs() as usize + 1);
    assert!(filed <= AGENTS * per_agent, "{filed} filed in {elapsed:?}");
    assert!(filed >= AGENTS * 20, "each agent's burst is filed: {filed}");
    assert_eq!(filed + limited + refused, REQUESTS);
    assert_eq!(
        refused,
        REQUESTS / 10,
        "names that are no agent file nothing"
    );

    let store = Store::open(dir.path()).expect("second connection");
    let (elevations, grants, audit) = store.row_counts().expect("counts");
    assert_eq!(elevations, filed, "the store holds exactly what was filed");
    assert_eq!(grants, 0);
    // Requested and expired (or cancelled), each once.
    assert!(audit <= 2 * filed, "{audit} audit rows for {filed}");
    let bytes = file_bytes(dir.path());
    assert!(
        bytes < 16 << 20,
        "rampart.db and its WAL hold {bytes} bytes"
    );
    println!(
        "{REQUESTS} requests: {filed} filed, {limited} rate-limited, {refused} refused; {elevations} rows, {bytes} bytes"
    );
    s.stop().await;
}

/// A request's answer, through its task and the join set's.
type Joined = Option<
    Result<
        Result<Result<pb::Elevation, tonic::Status>, tokio::task::JoinError>,
        tokio::task::JoinError,
    >,
>;

fn tally(joined: Joined, filed: &mut usize, limited: &mut usize, refused: &mut usize) {
    let Some(Ok(Ok(answer))) = joined else {
        panic!("a request task failed");
    };
    match answer {
        Ok(e) => {
            assert_eq!(e.state(), pb::ElevationState::Expired);
            *filed += 1;
        }
        Err(s) if s.code() == Code::ResourceExhausted => {
            assert!(
                s.message().contains("elevation.maxRequestsPerMinute"),
                "{}",
                s.message()
            );
            *limited += 1;
        }
        Err(s) if s.code() == Code::FailedPrecondition => *refused += 1,
        Err(s) => panic!("unexpected {s}"),
    }
}

#[tokio::test]
async fn pending_elevations_are_capped_across_agents() {
    let limits = Limits {
        max_pending: 30,
        ..Limits::default()
    };
    let s = TestServer::start_with_limits(
        &tenant(5, "maxRequestsPerMinute: 10000"),
        Store::in_memory().expect("store"),
        None,
        limits,
    )
    .await;
    let waiting: Vec<_> = (0..30)
        .map(|i| spawn(&s, ask(i % 5, RESTART, &vm(i), Duration::from_secs(60))))
        .collect();
    until_pending(&s, 30).await;
    let status = s
        .authorizer
        .clone()
        .request_elevation(ask(4, DELETE, &vm(99), Duration::from_secs(60)))
        .await
        .expect_err("over the cap");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains(
            "30 elevations are pending, the most rampart keeps (--max-pending-elevations 30)"
        ),
        "{}",
        status.message()
    );
    // Joining one already pending files nothing: still allowed.
    let joiner = spawn(&s, ask(0, RESTART, &vm(0), Duration::from_secs(60)));
    for _ in 0..500 {
        if s.broker.pending_elevations().iter().any(|e| e.waiters == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(s.broker.pending_elevations().iter().any(|e| e.waiters == 2));
    assert_eq!(s.broker.pending_elevations().len(), 30);
    joiner.abort();
    for w in waiting {
        w.abort();
    }
    s.stop().await;
}

#[tokio::test]
async fn an_agent_filing_too_fast_is_refused_and_joining_is_free() {
    // 3 a minute: a burst of one.
    let s = TestServer::start(&tenant(2, "maxRequestsPerMinute: 3")).await;
    let first = spawn(&s, ask(0, RESTART, &vm(1), Duration::from_secs(60)));
    until_pending(&s, 1).await;
    let joiner = spawn(&s, ask(0, RESTART, &vm(1), Duration::from_secs(60)));
    let status = s
        .authorizer
        .clone()
        .request_elevation(ask(0, DELETE, &vm(1), Duration::from_secs(60)))
        .await
        .expect_err("a second new elevation at once");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().starts_with(
            "agent flood-0 may file 3 new elevations a minute (elevation.maxRequestsPerMinute); retry in"
        ),
        "{}",
        status.message()
    );
    // Another agent has its own bucket.
    let other = spawn(&s, ask(1, DELETE, &vm(1), Duration::from_secs(60)));
    until_pending(&s, 2).await;
    assert!(s.broker.pending_elevations().iter().any(|e| e.waiters == 2));
    assert!(
        !joiner.is_finished(),
        "the joiner waits, it was not refused"
    );
    for w in [first, joiner, other] {
        w.abort();
    }
    s.stop().await;
}

/// A resolved elevation of `flood-0`, filed long ago (resolved, as far as
/// retention goes, when it is written).
fn resolved(n: usize, state: ElevationState) -> Elevation {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n as u64);
    let mut e = Elevation {
        id: new_id(),
        principal_id: "flood-0".into(),
        agent_id: "flood-0".into(),
        action: RESTART.into(),
        scope: vm(n),
        data_action: false,
        read_only: false,
        justification: "history".into(),
        attributes: Default::default(),
        reason: Reason::NeedsElevation,
        requested_duration: Duration::from_secs(60),
        state: ElevationState::Pending,
        created_at: at,
        wait_deadline: at,
        resolved_at: None,
        resolved_by: None,
        comment: None,
        grant: None,
        ticket: None,
        required_approvals: 0,
        approvals: Vec::new(),
        shadow: Vec::new(),
        request: None,
        waiters: 0,
    };
    lifecycle::resolve(&mut e, state, None, "rampart", None, at);
    e
}

async fn list_page(
    s: &TestServer,
    req: ListElevationsRequest,
    who: &str,
) -> Result<pb::ListElevationsResponse, tonic::Status> {
    s.approvals
        .clone()
        .list_elevations(authed(req, who))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn listings_page_through_history_the_broker_does_not_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("store");
        for n in 0..250 {
            store
                .put_elevation(&resolved(n, ElevationState::Denied))
                .expect("put");
        }
        for n in 0..150 {
            let e = resolved(n, ElevationState::Approved);
            let mut g =
                lifecycle::new_grant(&e, "oncall", Duration::from_secs(60), 0, e.created_at);
            // Ended just now: within the retention period.
            lifecycle::end(&mut g, &EndReason::Expired, SystemTime::now());
            rampart::elevation::StateStore::put_grant(&store, &g).expect("put grant");
        }
    }
    let s =
        TestServer::start_with_store(&tenant(2, ""), Store::open(dir.path()).expect("store")).await;
    assert_eq!(s.broker.live(), (0, 0), "history stays in the store");

    for who in [ADMIN_TOKEN.to_owned(), token("oncall")] {
        let mut ids = Vec::new();
        let mut page_token = String::new();
        let mut pages = 0;
        loop {
            let page = list_page(
                &s,
                ListElevationsRequest {
                    page_token,
                    ..Default::default()
                },
                &who,
            )
            .await
            .expect("list");
            pages += 1;
            assert!(page.elevations.len() <= 100, "the default page is 100");
            ids.extend(page.elevations.into_iter().map(|e| e.id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!((pages, ids.len()), (3, 250), "{who}");
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 250, "no record twice");
    }
    // A caller who may not interact with the agents sees none of it.
    let none = list_page(&s, ListElevationsRequest::default(), &token("flood-1"))
        .await
        .expect("list");
    assert!(none.elevations.is_empty() && none.next_page_token.is_empty());

    let big = list_page(
        &s,
        ListElevationsRequest {
            page_size: 5000,
            ..Default::default()
        },
        ADMIN_TOKEN,
    )
    .await
    .expect("list");
    assert_eq!(big.elevations.len(), 250);
    let approved = list_page(
        &s,
        ListElevationsRequest {
            state: pb::ElevationState::Approved as i32,
            ..Default::default()
        },
        ADMIN_TOKEN,
    )
    .await
    .expect("list");
    assert!(approved.elevations.is_empty(), "the filter is applied");

    for (req, field) in [
        (
            ListElevationsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            ListElevationsRequest {
                state: 42,
                ..Default::default()
            },
            "state: 42 is not an elevation state",
        ),
    ] {
        let status = list_page(&s, req, ADMIN_TOKEN).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(field), "{}", status.message());
    }

    let mut grants = 0;
    let mut page_token = String::new();
    loop {
        let page = s
            .approvals
            .clone()
            .list_grants(authed(
                ListGrantsRequest {
                    include_ended: true,
                    page_size: 60,
                    page_token,
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("grants")
            .into_inner();
        assert!(page.grants.len() <= 60);
        grants += page.grants.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(grants, 150);
    s.stop().await;
}

#[tokio::test]
async fn ids_echoed_in_errors_are_bounded_and_escaped() {
    let s = TestServer::start(&tenant(1, "")).await;
    let long = "x".repeat(60_000);
    let forged = "e1\nlevel=INFO msg=\"approved\"";
    let mut approvals = s.approvals.clone();
    for id in [long.as_str(), forged] {
        let statuses = [
            approvals
                .get_elevation(authed(GetElevationRequest { id: id.into() }, ADMIN_TOKEN))
                .await
                .expect_err("get"),
            approvals
                .approve_elevation(authed(
                    ApproveElevationRequest {
                        id: id.into(),
                        ..Default::default()
                    },
                    &token("oncall"),
                ))
                .await
                .expect_err("approve"),
            approvals
                .deny_elevation(authed(
                    DenyElevationRequest {
                        id: id.into(),
                        ..Default::default()
                    },
                    &token("oncall"),
                ))
                .await
                .expect_err("deny"),
            approvals
                .revoke_grant(authed(
                    RevokeGrantRequest {
                        id: id.into(),
                        ..Default::default()
                    },
                    ADMIN_TOKEN,
                ))
                .await
                .expect_err("revoke"),
        ];
        for status in statuses {
            assert_eq!(status.code(), Code::NotFound);
            let m = status.message();
            assert!(m.chars().count() < 200, "{} characters echoed", m.len());
            assert!(!m.contains('\n'), "{m}");
        }
    }
    let status = approvals
        .get_elevation(authed(
            GetElevationRequest { id: forged.into() },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("get");
    assert!(
        status.message().contains("e1\\nlevel"),
        "{}",
        status.message()
    );
    s.stop().await;
}

#[tokio::test]
async fn pending_elevations_of_an_agent_that_leaves_the_snapshot_are_cancelled() {
    let s = TestServer::start(&tenant(2, "")).await;
    let leaving = spawn(&s, ask(1, RESTART, &vm(1), Duration::from_secs(60)));
    let staying = spawn(&s, ask(0, RESTART, &vm(1), Duration::from_secs(60)));
    until_pending(&s, 2).await;
    let id = s
        .broker
        .pending_elevations()
        .into_iter()
        .find(|e| e.agent_id == "flood-1")
        .expect("pending")
        .id;
    let mut fewer = tenant(1, "");
    fewer = fewer.replace("revision: limits-1", "revision: limits-2");
    s.broker
        .swap_snapshot(rampart::snapshot::load_str(&fewer, "test").expect("snapshot"));

    let answer = leaving.await.expect("task").expect("answered");
    assert_eq!(answer.state(), pb::ElevationState::Cancelled);
    assert_eq!(answer.comment, "the agent is no longer in the snapshot");
    let stored = s.broker.find(&id).expect("store").expect("stored");
    assert_eq!(stored.state, ElevationState::Cancelled);
    // Nobody may act on it any longer, an admin included.
    let status = s
        .approvals
        .clone()
        .deny_elevation(authed(
            DenyElevationRequest {
                id: id.clone(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("resolved");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        s.broker.pending_elevations().len(),
        1,
        "flood-0 still waits"
    );
    staying.abort();
    s.stop().await;
}

#[tokio::test]
async fn retention_purges_history_but_never_what_is_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        retention: Duration::ZERO,
        ..Limits::default()
    };
    let s = TestServer::start_with_limits(
        &tenant(1, ""),
        Store::open(dir.path()).expect("store"),
        None,
        limits,
    )
    .await;
    let store = Store::open(dir.path()).expect("second connection");
    // One denied, one approved (its grant active), one pending.
    let mut ids = Vec::new();
    for n in 0..3 {
        drop(spawn(&s, ask(0, RESTART, &vm(n), Duration::from_secs(60))));
        until_pending(&s, n + 1).await;
        let e = s
            .broker
            .pending_elevations()
            .into_iter()
            .find(|e| e.scope == vm(n))
            .expect("pending");
        ids.push(e.id);
    }
    let mut approvals = s.approvals.clone();
    approvals
        .deny_elevation(authed(
            DenyElevationRequest {
                id: ids[0].clone(),
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .expect("deny");
    let approved = approvals
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: ids[1].clone(),
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .expect("approve")
        .into_inner();
    // Past the (zero) retention period.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let purged = s.broker.purge().expect("purge");
    assert_eq!((purged.elevations, purged.grants), (1, 0), "{purged:?}");
    assert!(purged.audit > 0, "the store's audit trail is bounded too");
    let left = |id: &str| s.broker.find(id).expect("store").map(|e| e.state);
    assert_eq!(left(&ids[0]), None);
    assert_eq!(left(&ids[1]), Some(ElevationState::Approved));
    assert_eq!(left(&ids[2]), Some(ElevationState::Pending));

    // Once its grant ends, the approval goes too.
    let grant = approved.grant.expect("grant").id;
    approvals
        .revoke_grant(authed(
            RevokeGrantRequest {
                id: grant,
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .expect("revoke");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let purged = s.broker.purge().expect("purge");
    assert_eq!((purged.elevations, purged.grants), (1, 1), "{purged:?}");
    let (elevations, grants, _) = store.row_counts().expect("counts");
    assert_eq!((elevations, grants), (1, 0), "only the pending one is left");
    s.stop().await;
}
