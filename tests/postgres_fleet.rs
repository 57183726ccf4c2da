//! Replicas of one agent on one PostgreSQL database (`--state-db`): every
//! replica sees the whole fleet's elevations and grants, a resolution given
//! to any replica answers the callers waiting on another, and what must
//! happen once happens once — one resolution per elevation, one elevation
//! per identical request, `maxUses` and `maxPerHour` across replicas.
//!
//! Each test creates its own database on the server `.ci/run` starts and
//! drops it after; without `RAMPART_TEST_POSTGRES` each test says it was
//! skipped and passes.

mod common;
#[path = "common/pki.rs"]
mod pki;
#[path = "common/postgres.rs"]
mod postgres;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use postgres::{eventually, test_db};
use rampart::elevation::store::{Change, OpenLimits, Opened};
use rampart::elevation::{
    Approval, Broker, Elevation, ElevationError, ElevationQuery, ElevationRequest, ElevationState,
    GrantQuery, Limits, PgStore, Resolved, SharedState, StateStore, StoreError,
};
use rampart::engine::{Request, Verdict};

const FIXTURE: &str = include_str!("fixtures/elevation.yaml");

/// The fixture with a rate that lets the races file hundreds of
/// elevations (the rate has a test of its own).
fn snapshot() -> String {
    let fast = FIXTURE.replace(
        "      # Never applied: the agent is in Review mode.\n",
        "      maxRequestsPerMinute: 10000\n",
    );
    assert_ne!(fast, FIXTURE);
    fast
}
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const NO_ATTRIBUTES: &[(&str, &str)] = &[];

fn vm(name: &str) -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/{name}")
}

fn ask<'a>(principal: &'a str, scope: &'a str, wait: Duration) -> ElevationRequest<'a> {
    ElevationRequest {
        principal_id: principal,
        action: RESTART,
        scope,
        data_action: false,
        justification: "restart the stuck VM",
        requested_duration: Some(Duration::from_secs(600)),
        wait_timeout: Some(wait),
        attributes: BTreeMap::new(),
        ..Default::default()
    }
}

/// Files an elevation on `broker` in the background; the caller's answer.
fn spawn_request(
    broker: &Arc<Broker>,
    principal: &'static str,
    scope: String,
    wait: Duration,
) -> tokio::task::JoinHandle<Result<Elevation, ElevationError>> {
    let broker = broker.clone();
    tokio::spawn(async move { broker.request(ask(principal, &scope, wait)).await })
}

/// Authorize on `broker`'s engine, as the Authorizer asks it (taking a use).
fn authorize(broker: &Broker, principal: &str, scope: &str) -> Verdict {
    let engine = broker.engine();
    let loaded = engine.current();
    let req = Request {
        principal_id: principal,
        action: RESTART,
        scope,
        data_action: false,
        attributes: &NO_ATTRIBUTES,
        explain: false,
        dry_run: false,
    };
    loaded
        .decide_with(&req, Some(engine.live()))
        .map(|d| d.verdict)
        .unwrap_or(Verdict::Deny)
}

/// The pending elevation for `scope` once `broker` holds it.
async fn pending_on(broker: &Broker, scope: &str) -> Elevation {
    let mut found = None;
    let seen = eventually(Duration::from_secs(10), || {
        found = broker
            .pending_elevations()
            .into_iter()
            .find(|e| e.scope == scope);
        found.is_some()
    })
    .await;
    assert!(seen, "the elevation for {scope} reaches the replica");
    found.unwrap_or_else(|| unreachable!())
}

fn approval(max_uses: u32) -> Approval<'static> {
    Approval {
        duration: None,
        max_uses,
        comment: None,
        bind_to_request: None,
    }
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_fresh_database_gets_the_schema_and_a_foreign_or_newer_one_is_refused() {
    let Some(db) = test_db() else { return };
    let store = db.store();
    drop(store);
    assert_eq!(
        db.query_text("SELECT max(version)::text FROM rampart_schema_migrations"),
        rampart::elevation::store::PG_SCHEMA_VERSION.to_string()
    );
    // Opening again (a second replica, a restart) changes nothing.
    drop(db.store());

    // A newer rampart's database.
    ok(db.sql("INSERT INTO rampart_schema_migrations (version) VALUES (999)"));
    let refused = PgStore::open(&db.config()).err().map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("schema version 999, written by a newer rampart")),
        "{refused:?}"
    );

    // Someone else's tables of the same names.
    let Some(foreign) = test_db() else { return };
    ok(foreign.sql("CREATE TABLE grants (id int); CREATE TABLE audit (x text)"));
    let refused = PgStore::open(&foreign.config())
        .err()
        .map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("that rampart did not create") && e.contains("grants")),
        "{refused:?}"
    );
    assert_eq!(
        foreign.query_text(
            "SELECT count(*)::text FROM information_schema.tables WHERE table_name = 'elevations'"
        ),
        "0",
        "a refused database is left as it was"
    );
}

#[test]
fn replicas_starting_at_once_migrate_once() {
    let Some(db) = test_db() else { return };
    let config = db.config();
    let opened: Vec<Result<PgStore, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| PgStore::open(&config))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("open panicked")))
            .collect()
    });
    assert!(opened.iter().all(|r| r.is_ok()), "every replica opens");
    assert_eq!(
        db.query_text("SELECT count(*)::text FROM rampart_schema_migrations"),
        rampart::elevation::store::PG_SCHEMA_VERSION.to_string()
    );
}

fn stored_elevation(scope: &str) -> Elevation {
    let now = SystemTime::now();
    Elevation {
        id: rampart::elevation::types::new_id(),
        principal_id: "agent-r".into(),
        agent_id: "reviewer".into(),
        action: RESTART.into(),
        scope: scope.into(),
        data_action: false,
        read_only: false,
        justification: "j".into(),
        attributes: BTreeMap::new(),
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
        waiters: 0,
    }
}

fn resolved(e: &Elevation, state: ElevationState, by: &str) -> Elevation {
    let mut r = e.clone();
    r.state = state;
    r.resolved_by = Some(by.into());
    r.resolved_at = Some(SystemTime::now());
    r
}

#[test]
fn the_store_keeps_the_embedded_stores_semantics() {
    let Some(db) = test_db() else { return };
    let store = db.store();
    let e = stored_elevation(&vm("a"));
    ok(store.create_elevation(&e));
    assert!(matches!(
        store.create_elevation(&e),
        Err(StoreError::Duplicate(_))
    ));
    // One resolution: the second gets the first back and writes nothing,
    // not even its grant.
    assert!(matches!(
        store.resolve(&resolved(&e, ElevationState::Denied, "viewer"), None),
        Ok(Resolved::Written)
    ));
    let mut approved = resolved(&e, ElevationState::Approved, "oncall");
    let grant = rampart::elevation::policy::lifecycle::new_grant(
        &e,
        "oncall",
        Duration::from_secs(60),
        0,
        SystemTime::now(),
    );
    approved.grant = Some(grant.clone());
    assert!(matches!(
        store.resolve(&approved, Some(&grant)),
        Ok(Resolved::AlreadyResolved(w)) if w.state == ElevationState::Denied
    ));
    assert!(ok(store.grant(&grant.id)).is_none(), "the loser's grant");

    // An ended grant is never made active again.
    let mut g = grant.clone();
    g.id = "g-ended".into();
    ok(store.put_grant(&g));
    let stale = g.clone();
    rampart::elevation::policy::lifecycle::end(
        &mut g,
        &rampart::elevation::EndReason::Expired,
        SystemTime::now(),
    );
    ok(store.put_grant(&g));
    ok(store.put_grant(&stale));
    assert_eq!(
        ok(store.grant("g-ended")).map(|g| g.state.as_str()),
        Some("ENDED")
    );

    // Pages cover every record once, both ways, ties broken by id.
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut ids = vec![e.id.clone()];
    for i in 0..230u64 {
        let mut x = stored_elevation(&vm(&format!("p{i}")));
        x.created_at = t0 + Duration::from_millis(i / 2);
        ok(store.create_elevation(&x));
        ids.push(x.id);
    }
    ids.sort();
    for newest_first in [false, true] {
        let query = ElevationQuery {
            newest_first,
            ..ElevationQuery::default()
        };
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = ok(store.elevations(&query, after.as_ref(), 100));
            seen.extend(page.items.iter().map(|e| (e.created_at, e.id.clone())));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        let mut ordered = seen.clone();
        ordered.sort();
        if newest_first {
            ordered.reverse();
        }
        assert!(seen == ordered, "ordered (newest first: {newest_first})");
        let mut got: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
        got.sort();
        assert_eq!(got, ids);
    }
    let narrowed = ElevationQuery {
        agent_ids: Some(vec!["nobody".into()]),
        ..ElevationQuery::default()
    };
    assert!(ok(store.elevations(&narrowed, None, 10)).items.is_empty());

    // A purge keeps what is pending and deletes what is resolved and old.
    let purged = ok(store.purge(SystemTime::now() + Duration::from_secs(60)));
    assert_eq!((purged.elevations, purged.grants), (1, 1));
    assert_eq!(ok(store.count_elevations()), 230);
    let active = ok(store.grants(
        &GrantQuery {
            active_only: true,
            ..GrantQuery::default()
        },
        None,
        10,
    ));
    assert!(active.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_replica_sees_every_elevation_and_answers_its_own_callers() {
    let Some(db) = test_db() else { return };
    let (a, b) = (db.replica(&snapshot()), db.replica(&snapshot()));
    let mut watch_b = b.subscribe();
    let scope = vm("web-1");
    let caller = spawn_request(&a, "agent-r", scope.clone(), Duration::from_secs(20));

    // B holds A's elevation: pending, listed, watched.
    let e = pending_on(&b, &scope).await;
    let listed = ok(b.list_elevations(&ElevationQuery::default(), 0, ""));
    assert!(listed.items.iter().any(|x| x.id == e.id && x.waiters == 1));
    let event = tokio::time::timeout(Duration::from_secs(10), watch_b.recv()).await;
    assert!(matches!(event, Ok(Ok(ref x)) if x.id == e.id && x.state.is_pending()));

    // Approved on B: A's caller is answered, the grant honoured on both.
    let approved = ok(b.approve("oncall", &e.id, approval(0)).await);
    assert_eq!(approved.state, ElevationState::Approved);
    let answer = ok(ok(caller.await));
    assert_eq!(
        (answer.id.as_str(), answer.state),
        (e.id.as_str(), ElevationState::Approved)
    );
    assert_eq!(authorize(&a, "agent-r", &scope), Verdict::Allow);
    assert_eq!(authorize(&b, "agent-r", &scope), Verdict::Allow);
    let grant_id = answer.grant.map(|g| g.id).unwrap_or_default();
    assert!(ok(a.list_grants(&GrantQuery::default(), 0, ""))
        .items
        .iter()
        .any(|g| g.id == grant_id));
    // B's watchers saw the approval too.
    let resolved = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch_b.recv().await {
                Ok(x) if x.id == e.id && x.state == ElevationState::Approved => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(resolved, Ok(true));

    // Revoked on A: B stops honouring it.
    ok(a.revoke("oncall", false, &grant_id, Some("done")));
    assert_eq!(authorize(&a, "agent-r", &scope), Verdict::ApprovalRequired);
    assert!(
        eventually(Duration::from_secs(10), || authorize(&b, "agent-r", &scope)
            == Verdict::ApprovalRequired)
        .await,
        "B drops the revoked grant"
    );
    // The revocation was audited once, by A.
    let ended: Vec<_> = ok(a.audit_trail())
        .into_iter()
        .filter(|e| e["event"] == "grant.ended" && e["grant_id"] == grant_id.as_str())
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approve_and_deny_on_two_replicas_at_once_resolve_each_elevation_once() {
    let Some(db) = test_db() else { return };
    let (a, b) = (db.replica(&snapshot()), db.replica(&snapshot()));
    const ROUNDS: usize = 100;
    let mut approved = 0;
    for i in 0..ROUNDS {
        let scope = vm(&format!("race-{i}"));
        let origin = if i % 2 == 0 { &a } else { &b };
        let caller = spawn_request(origin, "agent-r", scope.clone(), Duration::from_secs(20));
        let e = pending_on(origin, &scope).await;
        // The approver on one replica, the denier on the other, at once.
        let (approver, denier) = if i % 3 == 0 {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        let id = e.id.clone();
        let approve =
            tokio::spawn(async move { approver.approve("oncall", &id, approval(0)).await });
        let id = e.id.clone();
        let deny = tokio::spawn(async move { denier.deny("viewer", &id, None).await });
        let (approve, deny) = (ok(approve.await), ok(deny.await));
        let answer = ok(ok(caller.await));
        match (&approve, &deny) {
            (Ok(x), Err(ElevationError::AlreadyResolved { state, .. })) => {
                assert_eq!(
                    (x.state, *state),
                    (ElevationState::Approved, ElevationState::Approved)
                );
                assert_eq!(answer.state, ElevationState::Approved);
                approved += 1;
            }
            (Err(ElevationError::AlreadyResolved { state, .. }), Ok(x)) => {
                assert_eq!(
                    (x.state, *state),
                    (ElevationState::Denied, ElevationState::Denied)
                );
                assert_eq!(answer.state, ElevationState::Denied);
            }
            other => panic!("round {i}: not exactly one winner: {other:?}"),
        }
        let stored = ok(a.find(&e.id)).map(|x| x.state);
        assert_eq!(stored, Some(answer.state), "round {i}: the store agrees");
    }
    // A grant exactly for each approval, honoured by both replicas.
    let grants = ok(a.list_grants(&GrantQuery::default(), 1000, "")).items;
    assert_eq!(grants.len(), approved);
    let ids: HashSet<&str> = grants.iter().map(|g| g.elevation_id.as_str()).collect();
    assert_eq!(ids.len(), approved, "one grant per approved elevation");
    let audited = ok(a.audit_trail())
        .into_iter()
        .filter(|e| e["event"] == "elevation.approved" || e["event"] == "elevation.denied")
        .count();
    assert_eq!(
        audited, ROUNDS,
        "each resolution audited once, by its winner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_requests_on_two_replicas_join_one_elevation() {
    let Some(db) = test_db() else { return };
    let (a, b) = (db.replica(&snapshot()), db.replica(&snapshot()));
    for i in 0..20 {
        let scope = vm(&format!("join-{i}"));
        let first = spawn_request(&a, "agent-r", scope.clone(), Duration::from_secs(20));
        let second = spawn_request(&b, "agent-r", scope.clone(), Duration::from_secs(20));
        let mut joined = None;
        let both = eventually(Duration::from_secs(10), || {
            joined = a
                .pending_elevations()
                .into_iter()
                .find(|e| e.scope == scope && e.waiters == 2);
            joined.is_some()
        })
        .await;
        assert!(both, "round {i}: one elevation, two waiters");
        let e = joined.unwrap_or_else(|| unreachable!());
        ok(a.approve("oncall", &e.id, approval(0)).await);
        let (x, y) = (ok(ok(first.await)), ok(ok(second.await)));
        assert_eq!(
            (x.id.as_str(), y.id.as_str()),
            (e.id.as_str(), e.id.as_str())
        );
        assert_eq!(
            (x.state, y.state),
            (ElevationState::Approved, ElevationState::Approved)
        );
    }
    assert_eq!(
        ok(a.list_elevations(&ElevationQuery::default(), 1000, ""))
            .items
            .len(),
        20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_leaving_one_replica_leaves_the_elevation_to_the_other_replicas_callers() {
    let Some(db) = test_db() else { return };
    let (a, b) = (db.replica(&snapshot()), db.replica(&snapshot()));
    let scope = vm("leave");
    let stays = spawn_request(&a, "agent-r", scope.clone(), Duration::from_secs(20));
    let e = pending_on(&a, &scope).await;
    let goes = spawn_request(&b, "agent-r", scope.clone(), Duration::from_secs(20));
    assert!(
        eventually(Duration::from_secs(10), || a
            .pending_elevations()
            .iter()
            .any(|x| x.id == e.id && x.waiters == 2))
        .await
    );
    goes.abort();
    assert!(
        eventually(Duration::from_secs(10), || a
            .pending_elevations()
            .iter()
            .any(|x| x.id == e.id && x.waiters == 1))
        .await,
        "B's caller left; the elevation stays pending for A's"
    );
    ok(b.approve("oncall", &e.id, approval(0)).await);
    assert_eq!(ok(ok(stays.await)).state, ElevationState::Approved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn max_uses_holds_across_three_replicas_using_one_grant_at_once() {
    let Some(db) = test_db() else { return };
    let replicas = [
        db.replica(&snapshot()),
        db.replica(&snapshot()),
        db.replica(&snapshot()),
    ];
    const MAX_USES: u32 = 30;
    let scope = vm("limited");
    let caller = spawn_request(
        &replicas[0],
        "agent-r",
        scope.clone(),
        Duration::from_secs(20),
    );
    let e = pending_on(&replicas[2], &scope).await;
    ok(replicas[2]
        .approve("oncall", &e.id, approval(MAX_USES))
        .await);
    let grant_id = ok(ok(caller.await)).grant.map(|g| g.id).unwrap_or_default();

    // Every replica takes uses as fast as it can until none is left
    // anywhere; the reservations move between them meanwhile.
    let allowed = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::new();
    for r in &replicas {
        let (r, allowed, scope) = (r.clone(), allowed.clone(), scope.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while allowed.load(Ordering::Acquire) < MAX_USES
                && tokio::time::Instant::now() < deadline
            {
                if authorize(&r, "agent-r", &scope) == Verdict::Allow {
                    mine += 1;
                    allowed.fetch_add(1, Ordering::AcqRel);
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            // Past the limit: every further ask is refused.
            for _ in 0..200 {
                if authorize(&r, "agent-r", &scope) == Verdict::Allow {
                    mine += 1;
                    allowed.fetch_add(1, Ordering::AcqRel);
                }
            }
            mine
        }));
    }
    let mut per_replica = Vec::new();
    for w in workers {
        per_replica.push(ok(w.await));
    }
    assert_eq!(
        allowed.load(Ordering::Acquire),
        MAX_USES,
        "uses across the fleet: {per_replica:?}"
    );
    // The fleet's uses are recorded and the grant ends used up.
    let ended = eventually(Duration::from_secs(15), || {
        replicas[0]
            .find(&e.id)
            .ok()
            .flatten()
            .and_then(|e| e.grant)
            .is_some_and(|g| g.uses == MAX_USES && !g.state.is_active())
    })
    .await;
    assert!(ended, "grant {grant_id} recorded {MAX_USES} uses and ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_per_hour_counts_auto_approvals_on_every_replica() {
    let Some(db) = test_db() else { return };
    let (a, b) = (db.replica(&snapshot()), db.replica(&snapshot()));
    // auto-reader's first rule approves restarts on rg-app twice an hour.
    let mut calls = Vec::new();
    for i in 0..6 {
        let r = if i % 2 == 0 { &a } else { &b };
        calls.push(spawn_request(
            r,
            "agent-a",
            vm(&format!("auto-{i}")),
            Duration::from_millis(800),
        ));
    }
    let mut states = Vec::new();
    for c in calls {
        states.push(ok(c.await).map(|e| e.state));
    }
    let approved = states
        .iter()
        .filter(|s| matches!(s, Ok(ElevationState::Approved)))
        .count();
    assert_eq!(approved, 2, "{states:?}");
    assert!(
        states
            .iter()
            .all(|s| matches!(s, Ok(ElevationState::Approved | ElevationState::Expired))),
        "the rest waited for a person: {states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_limits_count_the_whole_fleet() {
    let Some(db) = test_db() else { return };
    let limits = Limits {
        max_pending: 3,
        ..Limits::default()
    };
    let (a, b) = (
        db.replica_with(&snapshot(), limits.clone()),
        db.replica_with(&snapshot(), limits),
    );
    let mut calls = Vec::new();
    for i in 0..3 {
        calls.push(spawn_request(
            &a,
            "agent-r",
            vm(&format!("cap-{i}")),
            Duration::from_secs(5),
        ));
    }
    assert!(
        eventually(Duration::from_secs(10), || a.pending_elevations().len()
            == 3)
        .await
    );
    let refused = b
        .request(ask("agent-r", &vm("cap-b"), Duration::from_secs(5)))
        .await;
    assert!(
        matches!(
            refused,
            Err(ElevationError::PendingLimit {
                pending: 3,
                limit: 3
            })
        ),
        "{refused:?}"
    );
    for c in calls {
        c.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_spreading_its_requests_over_replicas_gets_no_more_than_its_rate() {
    let Some(db) = test_db() else { return };
    // reviewer files 60 a minute, 20 at once: across the fleet.
    let (a, b) = (db.replica(FIXTURE), db.replica(FIXTURE));
    let mut calls = Vec::new();
    for i in 0..20 {
        let r = if i % 2 == 0 { &a } else { &b };
        calls.push(spawn_request(
            r,
            "agent-r",
            vm(&format!("rate-{i}")),
            Duration::from_secs(5),
        ));
    }
    assert!(
        eventually(Duration::from_secs(10), || b.pending_elevations().len()
            == 20)
        .await
    );
    for r in [&a, &b] {
        let refused = r
            .request(ask("agent-r", &vm("one-more"), Duration::from_secs(5)))
            .await;
        assert!(
            matches!(
                refused,
                Err(ElevationError::RateLimited { per_minute: 60, .. })
            ),
            "{refused:?}"
        );
    }
    for c in calls {
        c.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_elevation_is_expired_once_by_one_of_the_replicas() {
    let Some(db) = test_db() else { return };
    let (a, b) = (db.replica(&snapshot()), db.replica(&snapshot()));
    // Filed by a replica that died: nobody waits, its deadline passed.
    let store = db.store();
    let mut e = stored_elevation(&vm("abandoned"));
    e.wait_deadline = SystemTime::now() - Duration::from_secs(60);
    ok(store.create_elevation(&e));
    let gone = eventually(Duration::from_secs(10), || {
        a.find(&e.id)
            .ok()
            .flatten()
            .is_some_and(|x| x.state == ElevationState::Expired)
            && b.pending_elevations().iter().all(|x| x.id != e.id)
            && a.pending_elevations().iter().all(|x| x.id != e.id)
    })
    .await;
    assert!(gone, "expired, and no replica keeps it pending");
    let expired = ok(store.audit_events())
        .into_iter()
        .filter(|x| x["event"] == "elevation.expired" && x["elevation_id"] == e.id.as_str())
        .count();
    assert_eq!(expired, 1, "one replica won the expiry and audited it");
}

#[test]
fn changes_are_read_in_order_and_an_approvals_grant_comes_before_it() {
    let Some(db) = test_db() else { return };
    let store = db.store();
    let e = stored_elevation(&vm("order"));
    let limits = OpenLimits {
        max_pending: 10,
        max_per_principal: 10,
        per_minute: 60,
    };
    assert!(matches!(
        ok(store.open_elevation(&e, &limits)),
        Opened::Created
    ));
    let mut twin = e.clone();
    twin.id = "twin".into();
    assert!(
        matches!(ok(store.open_elevation(&twin, &limits)), Opened::Joined(j) if j.id == e.id && j.waiters == 2)
    );
    let mut approved = resolved(&e, ElevationState::Approved, "oncall");
    let grant = rampart::elevation::policy::lifecycle::new_grant(
        &e,
        "oncall",
        Duration::from_secs(60),
        0,
        SystemTime::now(),
    );
    approved.grant = Some(grant.clone());
    assert!(matches!(
        ok(store.resolve(&approved, Some(&grant))),
        Resolved::Written
    ));
    let changes = ok(store.changes(0));
    let kinds: Vec<&str> = changes
        .items
        .iter()
        .map(|c| match c {
            Change::Grant(_) => "grant",
            Change::Elevation(..) => "elevation",
        })
        .collect();
    assert_eq!(
        kinds,
        ["grant", "elevation"],
        "the latest state of each record"
    );
    assert!(
        matches!(&changes.items[1], Change::Elevation(x, true) if x.state == ElevationState::Approved)
    );
    let again = ok(store.changes(changes.through));
    assert!(again.items.is_empty());
    assert_eq!(again.through, changes.through);
}

#[test]
fn tls_require_encrypts_and_verify_full_refuses_an_unknown_certificate() {
    let Some(db) = test_db() else { return };
    let ssl_on = db.query_text("SELECT current_setting('ssl')");
    if ssl_on != "on" {
        eprintln!("skipped: the test server has no TLS (.ci/postgres.sh turns it on with openssl)");
        return;
    }
    let required =
        rampart::elevation::DbConfig::parse(&format!("{}?sslmode=require", db.url), None)
            .unwrap_or_else(|e| panic!("{e}"));
    let store = ok(PgStore::open(&required));
    ok(store.create_elevation(&stored_elevation(&vm("tls"))));
    assert_eq!(ok(store.count_elevations()), 1);

    // The server's certificate is self-signed: a full check refuses it.
    let full =
        rampart::elevation::DbConfig::parse(&format!("{}?sslmode=verify-full", db.url), None)
            .unwrap_or_else(|e| panic!("{e}"));
    let refused = PgStore::open(&full).err().map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("unreachable") && e.to_lowercase().contains("certificate")),
        "{refused:?}"
    );
}

/// With the CA that signed the server's certificate (`sslrootcert` or
/// `--state-db-ca`), `verify-full` connects to the name in the certificate
/// and refuses any other; `verify-ca` checks only the chain.
#[test]
fn verify_full_with_the_servers_ca_connects_and_checks_the_name() {
    let Some(db) = test_db() else { return };
    let Ok(ca) = std::env::var("RAMPART_TEST_POSTGRES_CA") else {
        eprintln!("skipped: RAMPART_TEST_POSTGRES_CA is not set (.ci/postgres.sh makes a CA with openssl)");
        return;
    };
    let pem = ok(std::fs::read(&ca));
    let open = |url: String, pem: Option<Vec<u8>>| {
        let config =
            rampart::elevation::DbConfig::parse(&url, pem).unwrap_or_else(|e| panic!("{e}"));
        PgStore::open(&config)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // The certificate names 127.0.0.1.
    ok(open(
        format!("{}?sslmode=verify-full&sslrootcert={ca}", db.url),
        None,
    ));
    ok(open(
        format!("{}?sslmode=verify-full", db.url),
        Some(pem.clone()),
    ));
    // Reached as "localhost": the chain is good, the name is not.
    let localhost = db.url.replacen("127.0.0.1", "localhost", 1);
    assert_ne!(localhost, db.url);
    let refused = open(
        format!("{localhost}?sslmode=verify-full"),
        Some(pem.clone()),
    );
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_lowercase().contains("certificate")),
        "{refused:?}"
    );
    ok(open(format!("{localhost}?sslmode=verify-ca"), Some(pem)));
    // Another CA's word is not taken.
    let other = pki::Pki::new().ca_pem.into_bytes();
    let refused = open(format!("{}?sslmode=verify-ca", db.url), Some(other));
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_lowercase().contains("certificate")),
        "{refused:?}"
    );
}

/// Notifications sent while a replica's listening connection is down are
/// lost: the replica catches up by re-reading everything after the last
/// sequence it saw, so it misses nothing the fleet did meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_listening_connection_is_cut_catches_up_by_sequence() {
    let Some(db) = test_db() else { return };
    let (a, b) = (db.replica(&snapshot()), db.replica(&snapshot()));
    // Cut every listening connection to this test's database, again and
    // again, while B works.
    let cutting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let cuts = Arc::new(AtomicU32::new(0));
    let cutter = {
        let (cutting, cuts, url) = (cutting.clone(), cuts.clone(), db.url.clone());
        tokio::task::spawn_blocking(move || {
            while cutting.load(Ordering::Relaxed) {
                let cut = postgres::query_text_at(
                    &url,
                    "SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND query ILIKE 'LISTEN%'",
                );
                cuts.fetch_add(cut.parse().unwrap_or(0), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // B files and approves its own elevations; nobody waits on A.
    let mut granted = Vec::new();
    for i in 0..12 {
        let scope = vm(&format!("cut-{i}"));
        let caller = spawn_request(&b, "agent-r", scope.clone(), Duration::from_secs(30));
        let e = pending_on(&b, &scope).await;
        let mut approved = None;
        for _ in 0..50 {
            // A cut may take one of B's pooled connections with it.
            match b.approve("oncall", &e.id, approval(0)).await {
                Ok(x) => {
                    approved = Some(x);
                    break;
                }
                Err(ElevationError::Store(StoreError::Unavailable(_))) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(approved.is_some(), "B approves {scope}");
        ok(ok(caller.await));
        granted.push(scope);
    }
    // The last few revoked again.
    for scope in &granted[9..] {
        let grant = ok(b.list_grants(&GrantQuery::default(), 1000, ""))
            .items
            .into_iter()
            .find(|g| &g.scope == scope)
            .unwrap_or_else(|| panic!("the grant of {scope}"));
        ok(b.revoke("oncall", false, &grant.id, Some("done")));
    }
    cutting.store(false, Ordering::Relaxed);
    ok(cutter.await);
    assert!(
        cuts.load(Ordering::Relaxed) > 0,
        "listening connections were cut"
    );

    // A holds exactly what the fleet did.
    assert!(
        eventually(Duration::from_secs(10), || {
            granted[..9]
                .iter()
                .all(|s| authorize(&a, "agent-r", s) == Verdict::Allow)
                && granted[9..]
                    .iter()
                    .all(|s| authorize(&a, "agent-r", s) == Verdict::ApprovalRequired)
        })
        .await,
        "A honours the 9 grants and none of the 3 revoked"
    );
    assert_eq!(a.live().1, 9);
}

/// Two daemons serving gRPC on one database, as two pods would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_on_one_database_share_one_approval_queue_over_grpc() {
    use common::{authed, token, TestServer};
    use rampart::proto::{
        self as pb, ApproveElevationRequest, ListElevationsRequest, ListGrantsRequest,
        RequestElevationRequest, WatchElevationsRequest,
    };
    let Some(db) = test_db() else { return };
    let yaml = snapshot();
    let a = TestServer::start_with_store(&yaml, db.store()).await;
    let b = TestServer::start_with_store(&yaml, db.store()).await;
    let mut watch = ok(b
        .approvals
        .clone()
        .watch_elevations(authed(WatchElevationsRequest {}, &token("oncall")))
        .await)
    .into_inner();
    let scope = vm("grpc");
    let caller = {
        let mut authorizer = a.authorizer.clone();
        let scope = scope.clone();
        tokio::spawn(async move {
            authorizer
                .request_elevation(RequestElevationRequest {
                    principal_id: "agent-r".into(),
                    action: RESTART.into(),
                    scope,
                    justification: "over grpc".into(),
                    ..Default::default()
                })
                .await
        })
    };
    // B's watcher sees A's elevation.
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(event)) = watch.message().await {
            if let Some(e) = event.elevation.filter(|e| e.scope == scope) {
                return Some(e.id);
            }
        }
        None
    })
    .await;
    let id = seen
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("B's watcher sees A's elevation"));
    // Listed on B for those who may see it, not for those who may not.
    let list = |who: &str| {
        let mut approvals = b.approvals.clone();
        let who = token(who);
        async move {
            approvals
                .list_elevations(authed(ListElevationsRequest::default(), &who))
                .await
                .map(|r| {
                    r.into_inner()
                        .elevations
                        .into_iter()
                        .map(|e| e.id)
                        .collect::<Vec<_>>()
                })
        }
    };
    assert!(ok(list("oncall").await).contains(&id));
    assert!(
        !ok(list("outsider").await).contains(&id),
        "rule (a) still filters"
    );

    ok(b.approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: id.clone(),
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await);
    let answer = ok(ok(caller.await)).into_inner();
    assert_eq!(answer.state, pb::ElevationState::Approved as i32);
    for server in [&a, &b] {
        let r = server.authorize("agent-r", RESTART, &scope, false).await;
        assert_eq!(r.decision, pb::Decision::Allow as i32);
    }
    let grants = ok(a
        .approvals
        .clone()
        .list_grants(authed(ListGrantsRequest::default(), &token("oncall")))
        .await)
    .into_inner()
    .grants;
    assert!(grants.iter().any(|g| g.elevation_id == id));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freeze_given_to_one_replica_holds_for_the_fleet_and_survives_a_restart() {
    let Some(db) = test_db() else { return };
    let (a, b) = (db.replica(&snapshot()), db.replica(&snapshot()));
    let scope = vm("web-1");
    // A pending elevation filed on B, and a grant in force.
    let caller = spawn_request(&b, "agent-r", scope.clone(), Duration::from_secs(30));
    let e = pending_on(&a, &scope).await;
    ok(a.approve("oncall", &e.id, approval(0)).await);
    ok(ok(caller.await));
    assert_eq!(authorize(&b, "agent-r", &scope), Verdict::Allow);
    let other = vm("web-2");
    let waiting = spawn_request(&b, "agent-r", other.clone(), Duration::from_secs(30));
    pending_on(&a, &other).await;

    ok(a.set_freeze(true, "it-admin", "incident 42"));
    assert!(
        eventually(Duration::from_secs(10), || b.freeze_state().frozen).await,
        "B follows A's freeze"
    );
    // The grant is suspended on both, the pending elevation cancelled.
    assert_eq!(authorize(&a, "agent-r", &scope), Verdict::Deny);
    assert_eq!(authorize(&b, "agent-r", &scope), Verdict::Deny);
    assert_eq!(ok(ok(waiting.await)).state, ElevationState::Cancelled);

    // A replica started now starts frozen.
    let c = db.replica(&snapshot());
    assert!(c.freeze_state().frozen);
    assert_eq!(authorize(&c, "agent-r", &scope), Verdict::Deny);

    // Unfrozen on C: the grant counts again everywhere.
    ok(c.set_freeze(false, "it-admin", "resolved"));
    assert!(eventually(Duration::from_secs(10), || !a.freeze_state().frozen).await);
    assert!(
        eventually(Duration::from_secs(10), || authorize(&b, "agent-r", &scope)
            == Verdict::Allow)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_approvers_on_two_replicas_make_one_two_person_approval() {
    let Some(db) = test_db() else { return };
    let policies = include_str!("fixtures/approval_policies.yaml");
    let (a, b) = (db.replica(policies), db.replica(policies));
    let scope = vm("web-1");
    let caller = {
        let a = a.clone();
        let scope = scope.clone();
        tokio::spawn(async move {
            a.request(ask("agent-r", &scope, Duration::from_secs(30)))
                .await
        })
    };
    let e = pending_on(&b, &scope).await;

    // The first approval, on B, is recorded; the elevation stays pending.
    let first = ok(b.approve("oncall", &e.id, approval(0)).await);
    assert_eq!(first.state, ElevationState::Pending);
    // The same approver again, on A, counts once.
    assert!(a.approve("oncall", &e.id, approval(0)).await.is_err());
    assert_eq!(authorize(&a, "agent-r", &scope), Verdict::ApprovalRequired);

    // The second, on A: approved, the caller answered, both lenders named.
    let second = ok(a.approve("oncall2", &e.id, approval(0)).await);
    assert_eq!(second.state, ElevationState::Approved);
    let answer = ok(ok(caller.await));
    assert_eq!(answer.state, ElevationState::Approved);
    assert!(
        eventually(Duration::from_secs(10), || authorize(&b, "agent-r", &scope)
            == Verdict::Allow)
        .await,
        "B honours the two-person grant"
    );
}

/// Notifications follow each replica's own changes: with every replica
/// notifying, a change filed on A and approved on B is announced once for
/// each step — pending by A, approved by B — though both replicas' watchers
/// see both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_change_is_announced_by_the_replica_that_made_it_only() {
    let Some(db) = test_db() else { return };
    let (a, b) = (db.replica(&snapshot()), db.replica(&snapshot()));
    let (mut own_a, mut own_b) = (a.subscribe_own(), b.subscribe_own());
    let mut watch_b = b.subscribe();
    let scope = vm("web-announce");
    let caller = spawn_request(&a, "agent-r", scope.clone(), Duration::from_secs(20));
    let e = pending_on(&b, &scope).await;
    let seen = tokio::time::timeout(Duration::from_secs(10), watch_b.recv()).await;
    assert!(matches!(seen, Ok(Ok(ref x)) if x.id == e.id && x.state.is_pending()));

    ok(b.approve("oncall", &e.id, approval(0)).await);
    ok(ok(caller.await));

    // B's own stream starts with its approval, not A's filing.
    let first_b = tokio::time::timeout(Duration::from_secs(10), own_b.recv()).await;
    assert!(
        matches!(first_b, Ok(Ok(ref x)) if x.id == e.id && x.state == ElevationState::Approved),
        "{first_b:?}"
    );
    // A's own stream: its filing, then (A files another) its next filing,
    // not B's approval in between.
    let first_a = tokio::time::timeout(Duration::from_secs(10), own_a.recv()).await;
    assert!(
        matches!(first_a, Ok(Ok(ref x)) if x.id == e.id && x.state.is_pending()),
        "{first_a:?}"
    );
    let other = vm("web-announce-2");
    let second = spawn_request(&a, "agent-r", other.clone(), Duration::from_secs(20));
    let next_a = tokio::time::timeout(Duration::from_secs(10), own_a.recv()).await;
    assert!(
        matches!(next_a, Ok(Ok(ref x)) if x.scope == other && x.state.is_pending()),
        "{next_a:?}"
    );
    let e2 = pending_on(&a, &other).await;
    ok(a.deny("oncall", &e2.id, None).await);
    let _ = second.await;
}
