//! A fleet when things break: PostgreSQL stopped and started again under a
//! loop of approvals, and a replica killed with SIGKILL in the middle of
//! one. While the database is away Authorize answers from the snapshot and
//! the grants already known, new elevations and approvals fail with
//! UNAVAILABLE saying why, and everything resumes without a restart once it
//! is back; nothing acknowledged is lost and no grant is duplicated.
//!
//! These tests stop the shared test server (`RAMPART_TEST_POSTGRES_CTL`),
//! so they run one at a time, in a test binary of their own.

mod common;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/process.rs"]
mod process;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{authed, token, ADMIN_TOKEN};
use postgres::{eventually, test_db, TestDb};
use process::ServerProcess;
use rampart::elevation::{
    Approval, Broker, Elevation, ElevationError, ElevationRequest, ElevationState, StoreError,
};
use rampart::engine::{Request, Verdict};
use rampart::proto::{
    self as pb, approvals_client::ApprovalsClient, authorizer_client::AuthorizerClient,
    ApproveElevationRequest, AuthorizeRequest,
};
use sha2::{Digest, Sha256};

const FIXTURE: &str = include_str!("fixtures/elevation.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const NO_ATTRIBUTES: &[(&str, &str)] = &[];

/// One fault test at a time: they stop the server the others use.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn snapshot() -> String {
    FIXTURE.replace(
        "      # Never applied: the agent is in Review mode.\n",
        "      maxRequestsPerMinute: 10000\n",
    )
}

fn vm(name: &str) -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/{name}")
}

fn ask(scope: &str, wait: Duration) -> ElevationRequest<'_> {
    ElevationRequest {
        principal_id: "agent-r",
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

fn authorize(broker: &Broker, scope: &str) -> Verdict {
    let engine = broker.engine();
    let req = Request {
        principal_id: "agent-r",
        action: RESTART,
        scope,
        data_action: false,
        attributes: &NO_ATTRIBUTES,
        explain: false,
        dry_run: false,
    };
    engine
        .current()
        .decide_with(&req, Some(engine.live()))
        .map(|d| d.verdict)
        .unwrap_or(Verdict::Deny)
}

fn approval() -> Approval<'static> {
    Approval {
        duration: None,
        max_uses: 0,
        comment: None,
        bind_to_request: None,
    }
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// `pg_ctl` on the test server, or `None` when the tests cannot control it.
fn pg_ctl() -> Option<String> {
    match std::env::var("RAMPART_TEST_POSTGRES_CTL") {
        Ok(ctl) => Some(ctl),
        Err(_) => {
            eprintln!("skipped: RAMPART_TEST_POSTGRES_CTL is not set (.ci/postgres.sh sets it)");
            None
        }
    }
}

fn server(ctl: &str, action: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("{ctl} {action} >/dev/null")])
        .status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "pg_ctl {action}: {status:?}"
    );
}

/// Whether a failure is the database being away, said as such.
fn unavailable(e: &ElevationError) -> bool {
    matches!(e, ElevationError::Store(StoreError::Unavailable(_)))
        && e.to_string().contains("the state database is unreachable")
}

/// How many rows `sql` counts.
fn count(db: &TestDb, sql: &str) -> i64 {
    db.query_text(&format!("SELECT ({sql})::text"))
        .parse()
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_loop_loses_no_acknowledged_approval_and_duplicates_no_grant() {
    let Some(db) = test_db() else { return };
    let Some(ctl) = pg_ctl() else { return };
    let _serial = SERIAL.lock().await;
    let yaml = snapshot();
    let (a, b) = (db.replica(&yaml), db.replica(&yaml));

    // A grant both replicas know before anything breaks.
    let known = vm("known");
    let caller = {
        let a = a.clone();
        let known = known.clone();
        tokio::spawn(async move { a.request(ask(&known, Duration::from_secs(10))).await })
    };
    let mut first = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            first = b
                .pending_elevations()
                .into_iter()
                .find(|e| e.scope == known);
            first.is_some()
        })
        .await
    );
    let first = first.unwrap_or_else(|| unreachable!());
    ok(b.approve("oncall", &first.id, approval()).await);
    ok(ok(caller.await));
    assert!(
        eventually(Duration::from_secs(10), || authorize(&b, &known)
            == Verdict::Allow)
        .await
    );

    // Approvals in a loop: filed on A, approved on B, while the server is
    // stopped and started twice.
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let callers: Arc<Mutex<Vec<Result<Elevation, ElevationError>>>> = Arc::default();
    let worker = {
        let (a, b) = (a.clone(), b.clone());
        let (acknowledged, callers) = (acknowledged.clone(), callers.clone());
        tokio::spawn(async move {
            let mut waiting = Vec::new();
            for i in 0..60 {
                let scope = vm(&format!("loop-{i}"));
                let caller = {
                    let (a, scope) = (a.clone(), scope.clone());
                    tokio::spawn(
                        async move { a.request(ask(&scope, Duration::from_secs(3))).await },
                    )
                };
                let mut pending = None;
                for _ in 0..100 {
                    pending = b
                        .pending_elevations()
                        .into_iter()
                        .find(|e| e.scope == scope);
                    if pending.is_some() || caller.is_finished() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if let Some(e) = pending {
                    match b.approve("oncall", &e.id, approval()).await {
                        Ok(x) => acknowledged
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(x.id),
                        Err(err) => assert!(
                            unavailable(&err)
                                || matches!(err, ElevationError::AlreadyResolved { .. }),
                            "an approval fails only for want of the database: {err}"
                        ),
                    }
                }
                waiting.push(caller);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            for c in waiting {
                let answer = c.await.unwrap_or_else(|e| panic!("{e}"));
                callers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(answer);
            }
        })
    };

    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        server(&ctl, "-m fast stop");
        // Away: RBAC and the known grant still answer; new work says why
        // it cannot be done.
        assert_eq!(authorize(&a, &known), Verdict::Allow);
        assert_eq!(authorize(&b, &known), Verdict::Allow);
        let refused = a
            .request(ask(&vm("while-down"), Duration::from_secs(1)))
            .await;
        assert!(
            refused.as_ref().is_err_and(unavailable),
            "a new elevation while the database is away: {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        server(&ctl, "-w start");
    }
    ok(worker.await);

    // Resumed without a restart: a new approval goes through.
    let scope = vm("after");
    let mut done = false;
    for _ in 0..60 {
        let caller = {
            let (a, scope) = (a.clone(), scope.clone());
            tokio::spawn(async move { a.request(ask(&scope, Duration::from_secs(5))).await })
        };
        let mut pending = None;
        let _ = eventually(Duration::from_secs(3), || {
            pending = b
                .pending_elevations()
                .into_iter()
                .find(|e| e.scope == scope);
            pending.is_some() || caller.is_finished()
        })
        .await;
        if let Some(e) = pending {
            if b.approve("oncall", &e.id, approval()).await.is_ok()
                && ok(caller.await).is_ok_and(|x| x.state == ElevationState::Approved)
            {
                done = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(done, "approvals work again once the database is back");
    assert!(
        eventually(Duration::from_secs(10), || authorize(&a, &scope)
            == Verdict::Allow)
        .await
    );

    // Every acknowledged approval is stored once, with one grant; no
    // grant belongs to anything but an approval.
    let acknowledged = acknowledged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(!acknowledged.is_empty(), "some approvals went through");
    for id in &acknowledged {
        assert_eq!(
            count(
                &db,
                &format!(
                    "SELECT count(*) FROM elevations WHERE id = '{id}' AND state = 'APPROVED'"
                )
            ),
            1,
            "acknowledged approval {id}"
        );
        assert_eq!(
            count(
                &db,
                &format!("SELECT count(*) FROM grants WHERE elevation_id = '{id}'")
            ),
            1,
            "the grant of {id}"
        );
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM grants g JOIN elevations e ON e.id = g.elevation_id WHERE e.state <> 'APPROVED'"),
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM (SELECT elevation_id FROM grants GROUP BY 1 HAVING count(*) > 1) d"),
        0
    );
    // Callers got an answer or UNAVAILABLE; an APPROVED answer is stored.
    let callers = std::mem::take(&mut *callers.lock().unwrap_or_else(|e| e.into_inner()));
    let approved_ids: HashSet<String> = callers
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .filter(|e| e.state == ElevationState::Approved)
        .map(|e| e.id.clone())
        .collect();
    for c in &callers {
        if let Err(e) = c {
            assert!(
                unavailable(e),
                "a caller's error is the database being away: {e}"
            );
        }
    }
    for id in &approved_ids {
        assert_eq!(
            count(
                &db,
                &format!(
                    "SELECT count(*) FROM elevations WHERE id = '{id}' AND state = 'APPROVED'"
                )
            ),
            1
        );
    }
    // And both replicas hold every active grant.
    let active = count(&db, "SELECT count(*) FROM grants WHERE state = 'ACTIVE'");
    assert!(
        eventually(Duration::from_secs(10), || {
            a.live().1 as i64 == active && b.live().1 as i64 == active
        })
        .await,
        "both replicas hold the {active} active grants"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_a_replica_mid_approval_leaves_one_resolution_or_none() {
    let Some(db) = test_db() else { return };
    let _serial = SERIAL.lock().await;
    let dir = ok(tempfile::tempdir());
    let snapshot = dir.path().join("snapshot.yaml");
    ok(std::fs::write(&snapshot, self::snapshot()));
    let hash = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
    let tokens = dir.path().join("tokens.yaml");
    ok(std::fs::write(
        &tokens,
        format!(
            "- {{sha256: {}, principal: admin, admin: true}}\n- {{sha256: {}, principal: oncall}}\n",
            hash(ADMIN_TOKEN),
            hash(&token("oncall"))
        ),
    ));
    let args = [
        "--snapshot",
        snapshot.to_str().unwrap_or_default(),
        "--tokens",
        tokens.to_str().unwrap_or_default(),
        "--state-db",
        &db.url,
        "--watch",
        "false",
    ];
    let b = db.replica(&self::snapshot());
    for round in 0..6u64 {
        // The agent waits on B; the approval goes to A, which dies in the
        // middle of it.
        let a = ServerProcess::start(&args);
        let scope = vm(&format!("kill-{round}"));
        let caller = {
            let (b, scope) = (b.clone(), scope.clone());
            tokio::spawn(async move { b.request(ask(&scope, Duration::from_secs(20))).await })
        };
        let mut approvals = ok(ApprovalsClient::connect(format!("http://{}", a.admin)).await);
        let mut pending = None;
        assert!(
            eventually(Duration::from_secs(10), || {
                pending = b
                    .pending_elevations()
                    .into_iter()
                    .find(|e| e.scope == scope);
                pending.is_some()
            })
            .await
        );
        let id = pending.map(|e| e.id).unwrap_or_default();
        let approving = {
            let id = id.clone();
            tokio::spawn(async move {
                approvals
                    .approve_elevation(authed(
                        ApproveElevationRequest {
                            id,
                            ..Default::default()
                        },
                        &token("oncall"),
                    ))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_micros(round * 700)).await;
        a.kill9();
        let told = approving.await.ok().and_then(|r| r.ok()).is_some();

        // One resolution or none: approved (with one grant) or still
        // pending, never half of it.
        let state = db.query_text(&format!("SELECT state FROM elevations WHERE id = '{id}'"));
        let grants = count(
            &db,
            &format!("SELECT count(*) FROM grants WHERE elevation_id = '{id}'"),
        );
        match state.as_str() {
            "APPROVED" => assert_eq!(grants, 1, "round {round}"),
            "PENDING" => {
                assert!(!told, "round {round}: an acknowledged approval is stored");
                assert_eq!(grants, 0, "round {round}");
                // The survivor approves it instead.
                ok(b.approve("oncall", &id, approval()).await);
            }
            other => panic!("round {round}: {other}"),
        }
        let answer = ok(ok(caller.await));
        assert_eq!(answer.state, ElevationState::Approved, "round {round}");
        assert_eq!(authorize(&b, &scope), Verdict::Allow, "round {round}");
    }

    // A replica started on the same database honours what the fleet
    // approved while it was dead.
    let again = ServerProcess::start(&args);
    let mut authorizer =
        ok(AuthorizerClient::connect(format!("http://{}", again.authorizer)).await);
    for round in 0..6 {
        let answer = ok(authorizer
            .authorize(AuthorizeRequest {
                principal_id: "agent-r".into(),
                action: RESTART.into(),
                scope: vm(&format!("kill-{round}")),
                ..Default::default()
            })
            .await)
        .into_inner();
        assert_eq!(answer.decision, pb::Decision::Allow as i32, "round {round}");
    }
    again.kill9();
    assert_eq!(
        count(&db, "SELECT count(*) FROM (SELECT elevation_id FROM grants GROUP BY 1 HAVING count(*) > 1) d"),
        0
    );
}

/// The URL from the environment, as a Kubernetes Secret hands it over:
/// the daemon creates its schema in that database and files elevations
/// there; the password is never written to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_database_may_be_named_by_the_environment() {
    use rampart::proto::RequestElevationRequest;
    let Some(db) = test_db() else { return };
    let dir = ok(tempfile::tempdir());
    let snapshot = dir.path().join("snapshot.yaml");
    ok(std::fs::write(&snapshot, self::snapshot()));
    // The test server trusts local connections: any password is accepted.
    let url = db.url.replacen("postgres@", "postgres:hunter2-secret@", 1);
    assert_ne!(url, db.url);
    let daemon = ServerProcess::start_with_env(
        &[("RAMPART_STATE_DB", &url)],
        &[
            "--snapshot",
            snapshot.to_str().unwrap_or_default(),
            "--watch",
            "false",
        ],
    );
    assert_eq!(
        db.query_text("SELECT max(version)::text FROM rampart_schema_migrations"),
        rampart::elevation::store::postgres::PG_SCHEMA_VERSION.to_string()
    );
    let mut authorizer =
        ok(AuthorizerClient::connect(format!("http://{}", daemon.authorizer)).await);
    let caller = tokio::spawn(async move {
        authorizer
            .request_elevation(RequestElevationRequest {
                principal_id: "agent-r".into(),
                action: RESTART.into(),
                scope: vm("from-env"),
                justification: "restart the stuck VM".into(),
                ..Default::default()
            })
            .await
    });
    assert!(
        eventually(Duration::from_secs(10), || {
            count(
                &db,
                "SELECT count(*) FROM elevations WHERE state = 'PENDING'",
            ) == 1
        })
        .await,
        "the elevation is stored in the database the environment named"
    );
    caller.abort();
    let log = daemon.log();
    daemon.kill9();
    assert!(log.contains("state shared through PostgreSQL"), "{log}");
    assert!(
        !log.contains("hunter2-secret"),
        "the password stays out of the log: {log}"
    );
}

#[test]
fn state_db_and_state_dir_are_one_or_the_other() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "serve",
            "--state-dir",
            "/tmp/x",
            "--state-db",
            "postgres://rampart@db/rampart",
        ])
        .output();
    let out = ok(out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--state-db") && stderr.contains("--state-dir"),
        "{stderr}"
    );

    // From the environment (a Kubernetes Secret) too, and a bad URL is
    // named with the fix.
    let out = ok(std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["serve"])
        .env("RAMPART_STATE_DB", "mysql://nope")
        .output());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--state-db") && stderr.contains("postgres://USER:PASSWORD@HOST"),
        "{stderr}"
    );
    assert!(!stderr.contains("nope@"), "{stderr}");
}

/// Over gRPC, as an agent and an approver see it: with the database away
/// the daemon keeps answering Authorize (RBAC and the grants it knows),
/// files nothing and approves nothing, saying UNAVAILABLE and why; once
/// the database is back the same daemon, not restarted, works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_says_unavailable_and_why_while_the_database_is_away_then_resumes() {
    use common::TestServer;
    use rampart::proto::RequestElevationRequest;
    let Some(db) = test_db() else { return };
    let Some(ctl) = pg_ctl() else { return };
    let _serial = SERIAL.lock().await;
    let daemon = TestServer::start_with_store(&snapshot(), db.store()).await;
    let file = |scope: String, wait: i64| {
        let mut authorizer = daemon.authorizer.clone();
        async move {
            authorizer
                .request_elevation(RequestElevationRequest {
                    principal_id: "agent-r".into(),
                    action: RESTART.into(),
                    scope,
                    justification: "restart the stuck VM".into(),
                    wait_timeout: Some(prost_types::Duration {
                        seconds: wait,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
                .await
        }
    };
    let approve = |id: String| {
        let mut approvals = daemon.approvals.clone();
        async move {
            approvals
                .approve_elevation(authed(
                    ApproveElevationRequest {
                        id,
                        ..Default::default()
                    },
                    &token("oncall"),
                ))
                .await
        }
    };

    // A grant known before the database goes, and an elevation left
    // pending.
    let known = vm("known");
    let caller = tokio::spawn(file(known.clone(), 30));
    let mut pending = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            pending = daemon
                .broker
                .pending_elevations()
                .into_iter()
                .find(|e| e.scope == known);
            pending.is_some()
        })
        .await
    );
    ok(approve(pending.map(|e| e.id).unwrap_or_default()).await);
    ok(ok(caller.await));
    let left = vm("left-pending");
    let _left_caller = tokio::spawn(file(left.clone(), 60));
    let mut left_pending = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            left_pending = daemon
                .broker
                .pending_elevations()
                .into_iter()
                .find(|e| e.scope == left);
            left_pending.is_some()
        })
        .await
    );
    let left_id = left_pending.map(|e| e.id).unwrap_or_default();

    server(&ctl, "-m fast stop");
    let restarted = Restart(ctl.clone());

    // Authorize answers: RBAC from the snapshot, the known grant, and a
    // plain DENY where neither gives the right.
    let rbac = daemon.authorize("oncall", RESTART, &vm("any"), false).await;
    assert_eq!(
        rbac.decision,
        pb::Decision::Allow as i32,
        "RBAC from the snapshot"
    );
    let granted = daemon.authorize("agent-r", RESTART, &known, false).await;
    assert_eq!(
        granted.decision,
        pb::Decision::Allow as i32,
        "a grant already known"
    );
    let other = daemon
        .authorize("agent-r", RESTART, &vm("other"), false)
        .await;
    assert_ne!(other.decision, pb::Decision::Allow as i32);

    // New elevations and approvals: UNAVAILABLE, saying why.
    let refused = file(vm("while-down"), 5).await;
    let status = refused
        .err()
        .unwrap_or_else(|| panic!("filed while the database is away"));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("state database is unreachable"),
        "{status:?}"
    );
    let refused = approve(left_id.clone()).await;
    let status = refused
        .err()
        .unwrap_or_else(|| panic!("approved while the database is away"));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("state database is unreachable"),
        "{status:?}"
    );

    // Back, with the same daemon: the elevation left pending is approved
    // and a new one is filed and approved.
    drop(restarted);
    let mut approved = None;
    for _ in 0..100 {
        match approve(left_id.clone()).await {
            Ok(r) => {
                approved = Some(r.into_inner());
                break;
            }
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let approved =
        approved.unwrap_or_else(|| panic!("approvals work again once the database is back"));
    assert_eq!(approved.state, pb::ElevationState::Approved as i32);
    let after = vm("after");
    let mut filed = None;
    for _ in 0..20 {
        let caller = tokio::spawn(file(after.clone(), 30));
        let mut pending = None;
        let _ = eventually(Duration::from_secs(5), || {
            pending = daemon
                .broker
                .pending_elevations()
                .into_iter()
                .find(|e| e.scope == after);
            pending.is_some() || caller.is_finished()
        })
        .await;
        if let Some(e) = pending {
            filed = Some((e, caller));
            break;
        }
        // A connection the restart broke may fail one call, saying so.
        let refused = ok(caller.await).err().map(|s| s.code());
        assert_eq!(refused, Some(tonic::Code::Unavailable));
    }
    let (pending, caller) =
        filed.unwrap_or_else(|| panic!("elevations are filed again once the database is back"));
    ok(approve(pending.id).await);
    assert_eq!(
        ok(ok(caller.await)).into_inner().state,
        pb::ElevationState::Approved as i32
    );
    let granted = daemon.authorize("agent-r", RESTART, &after, false).await;
    assert_eq!(granted.decision, pb::Decision::Allow as i32);
    daemon.stop().await;
}

/// Starts the server again when dropped, so a failing assertion does not
/// leave the other tests without it.
struct Restart(String);

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .args(["-c", &format!("{} -w start >/dev/null", self.0)])
            .status();
    }
}
