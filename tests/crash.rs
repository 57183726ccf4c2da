//! Crash safety of the state directory: the real binary serves continuous
//! approvals and grant uses and is killed with SIGKILL at random moments,
//! then restarted on the same `--state-dir`. After every restart the
//! database opens, no active grant belongs to an elevation that is not
//! APPROVED, every approval the approver was told succeeded is still
//! APPROVED with its grant, and no grant limited to N uses has allowed more
//! than N — whatever was lost in the crash.

mod common;
#[path = "common/process.rs"]
mod process;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{authed, token, ADMIN_TOKEN};
use process::ServerProcess;
use rampart::elevation::{ElevationQuery, ElevationState, GrantQuery, StateStore, Store};
use rampart::proto::{
    self as pb, approvals_client::ApprovalsClient, authorizer_client::AuthorizerClient,
    ApproveElevationRequest, AuthorizeRequest, GetElevationRequest, ListElevationsRequest,
    ListGrantsRequest, RequestElevationRequest,
};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

const SNAPSHOT: &str = include_str!("fixtures/elevation.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const KILLS: usize = 22;
/// The limit on every other grant; the rest are unlimited.
const MAX_USES: u32 = 20;

fn vm(n: usize) -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/crash{n}")
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What the clients were told, across every run.
#[derive(Default)]
struct Told {
    /// Approvals acknowledged OK: elevation id → (n, max_uses).
    approved: HashMap<String, (usize, u32)>,
    /// ALLOW answers through a grant, per VM number.
    allowed: HashMap<usize, u32>,
}

async fn connect(server: &ServerProcess) -> (AuthorizerClient<Channel>, ApprovalsClient<Channel>) {
    let authorizer = AuthorizerClient::connect(format!("http://{}", server.authorizer))
        .await
        .expect("connect to the authorizer");
    let approvals = ApprovalsClient::connect(format!("http://{}", server.admin))
        .await
        .expect("connect to approvals");
    (authorizer, approvals)
}

/// Files, approves and uses grants until the server dies.
async fn work(
    mut authorizer: AuthorizerClient<Channel>,
    mut approvals: ApprovalsClient<Channel>,
    told: Arc<Mutex<Told>>,
    first: usize,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    for n in first.. {
        let scope = vm(n);
        let mut caller = authorizer.clone();
        let req = RequestElevationRequest {
            principal_id: "agent-r".into(),
            action: RESTART.into(),
            scope: scope.clone(),
            justification: "crash test".into(),
            ..Default::default()
        };
        tokio::spawn(async move {
            let _ = caller.request_elevation(req).await;
        });
        // Approve it once it is pending.
        let mut id = None;
        for _ in 0..200 {
            let Ok(list) = approvals
                .list_elevations(authed(
                    ListElevationsRequest {
                        state: pb::ElevationState::Pending as i32,
                        ..Default::default()
                    },
                    ADMIN_TOKEN,
                ))
                .await
            else {
                return;
            };
            id = list
                .into_inner()
                .elevations
                .into_iter()
                .find(|e| e.scope == scope)
                .map(|e| e.id);
            if id.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let Some(id) = id else { return };
        let max_uses = if n % 2 == 0 { MAX_USES } else { 0 };
        let approved = approvals
            .approve_elevation(authed(
                ApproveElevationRequest {
                    id: id.clone(),
                    max_uses,
                    ..Default::default()
                },
                &token("oncall"),
            ))
            .await;
        match approved {
            Ok(_) => {
                told.lock().unwrap().approved.insert(id, (n, max_uses));
            }
            Err(_) => return,
        }
        // Use this grant and an older limited one.
        let older = {
            let t = told.lock().unwrap();
            let limited: Vec<usize> = t
                .approved
                .values()
                .filter(|(_, max)| *max > 0)
                .map(|(n, _)| *n)
                .collect();
            limited
                .get(rng.below(limited.len() as u64) as usize)
                .copied()
                .unwrap_or(n)
        };
        for target in [n, n, n, older, older, older] {
            let Ok(answer) = authorizer
                .authorize(AuthorizeRequest {
                    principal_id: "agent-r".into(),
                    action: RESTART.into(),
                    scope: vm(target),
                    ..Default::default()
                })
                .await
            else {
                return;
            };
            let answer = answer.into_inner();
            if answer.decision() == pb::Decision::Allow
                && answer.reason() == pb::Reason::ElevationGrant
            {
                *told.lock().unwrap().allowed.entry(target).or_default() += 1;
            }
        }
    }
}

/// Every page of elevations and grants, as an admin.
async fn everything(
    approvals: &mut ApprovalsClient<Channel>,
) -> (Vec<pb::Elevation>, Vec<pb::Grant>) {
    let mut elevations = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = approvals
            .list_elevations(authed(
                ListElevationsRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("list elevations")
            .into_inner();
        elevations.extend(page.elevations);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut grants = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = approvals
            .list_grants(authed(
                ListGrantsRequest {
                    include_ended: true,
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("list grants")
            .into_inner();
        grants.extend(page.grants);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    (elevations, grants)
}

/// The invariants, through the API of a freshly restarted server.
async fn check(approvals: &mut ApprovalsClient<Channel>, told: &Told, round: usize) {
    let (elevations, grants) = everything(approvals).await;
    let states: HashMap<&str, pb::ElevationState> = elevations
        .iter()
        .map(|e| (e.id.as_str(), e.state()))
        .collect();
    assert!(
        !states.values().any(|s| *s == pb::ElevationState::Pending),
        "round {round}: a restart leaves nothing pending"
    );
    for g in grants
        .iter()
        .filter(|g| g.state() == pb::GrantState::Active)
    {
        assert_eq!(
            states.get(g.elevation_id.as_str()),
            Some(&pb::ElevationState::Approved),
            "round {round}: active grant {} of an elevation that is not APPROVED",
            g.id
        );
    }
    let by_elevation: HashMap<&str, &pb::Grant> = grants
        .iter()
        .map(|g| (g.elevation_id.as_str(), g))
        .collect();
    for (id, (n, max_uses)) in &told.approved {
        let e = approvals
            .get_elevation(authed(GetElevationRequest { id: id.clone() }, ADMIN_TOKEN))
            .await
            .unwrap_or_else(|s| panic!("round {round}: acknowledged approval {id} lost: {s}"))
            .into_inner();
        assert_eq!(
            e.state(),
            pb::ElevationState::Approved,
            "round {round}: {id}"
        );
        let g = by_elevation
            .get(id.as_str())
            .unwrap_or_else(|| panic!("round {round}: the grant of {id} (vm {n}) is lost"));
        let still =
            g.state() == pb::GrantState::Active || (*max_uses > 0 && g.ended_reason == "used up");
        assert!(
            still,
            "round {round}: grant of {id} ended: {}",
            g.ended_reason
        );
        assert!(g.uses <= g.max_uses || g.max_uses == 0, "round {round}");
    }
    for g in &grants {
        let Some((n, max_uses)) = told.approved.get(&g.elevation_id) else {
            continue;
        };
        if *max_uses > 0 {
            let allowed = told.allowed.get(n).copied().unwrap_or(0);
            assert!(
                allowed <= *max_uses,
                "round {round}: grant {} limited to {max_uses} uses allowed {allowed}",
                g.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged_and_overuses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let snapshot = dir.path().join("snapshot.yaml");
    // Continuous approvals: lift the agent's request rate.
    std::fs::write(
        &snapshot,
        SNAPSHOT.replace(
            "      # Never applied: the agent is in Review mode.\n",
            "      maxRequestsPerMinute: 10000\n",
        ),
    )
    .expect("snapshot");
    let hash = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "- {{sha256: {}, principal: admin, admin: true}}\n- {{sha256: {}, principal: oncall}}\n",
            hash(ADMIN_TOKEN),
            hash(&token("oncall"))
        ),
    )
    .expect("tokens");
    let args = [
        "--snapshot",
        snapshot.to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--watch",
        "false",
    ];
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(11, |d| d.as_nanos() as u64)
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let told = Arc::new(Mutex::new(Told::default()));
    let mut next = 0;
    for round in 0..=KILLS {
        // The first run creates the state directory under a umask that
        // would leave everything open to everyone.
        let server = if round == 0 {
            ServerProcess::start_with_umask("000", &args)
        } else {
            ServerProcess::start(&args)
        };
        let (authorizer, mut approvals) = connect(&server).await;
        {
            let snapshot = {
                let t = told.lock().unwrap();
                Told {
                    approved: t.approved.clone(),
                    allowed: t.allowed.clone(),
                }
            };
            check(&mut approvals, &snapshot, round).await;
        }
        if round == KILLS {
            server.kill9();
            break;
        }
        let worker = tokio::spawn(work(
            authorizer,
            approvals,
            told.clone(),
            next,
            rng.below(u64::MAX),
        ));
        tokio::time::sleep(Duration::from_millis(100 + rng.below(500))).await;
        if round == 0 {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = |p: &std::path::Path| {
                    std::fs::metadata(p)
                        .map(|m| m.permissions().mode() & 0o777)
                        .ok()
                };
                assert_eq!(mode(&state), Some(0o700), "the state dir under umask 000");
                for f in ["rampart.db", "rampart.db-wal", "rampart.db-shm"] {
                    assert_eq!(mode(&state.join(f)), Some(0o600), "{f} under umask 000");
                }
            }
        }
        server.kill9();
        let _ = worker.await;
        next += 1000;
    }

    // The store itself, opened directly after the last crash.
    let store = Store::open(&state).expect("the database opens after a crash");
    let elevations = store
        .elevations(&ElevationQuery::default(), None, 1_000_000)
        .expect("elevations")
        .items;
    let grants = store
        .grants(&GrantQuery::default(), None, 1_000_000)
        .expect("grants")
        .items;
    let approved: HashSet<&str> = elevations
        .iter()
        .filter(|e| e.state == ElevationState::Approved)
        .map(|e| e.id.as_str())
        .collect();
    for g in grants.iter().filter(|g| g.state.is_active()) {
        assert!(approved.contains(g.elevation_id.as_str()), "{}", g.id);
    }
    let told = told.lock().unwrap();
    println!(
        "{} approvals acknowledged, {} grant uses answered ALLOW, {} elevations stored",
        told.approved.len(),
        told.allowed.values().sum::<u32>(),
        elevations.len()
    );
    assert!(
        told.approved.len() >= KILLS,
        "the runs approved too little to test anything"
    );
}
