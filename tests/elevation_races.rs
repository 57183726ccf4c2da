//! Exactly one resolution per elevation: approvals race the caller's wait
//! timeout, the caller going away and denials, hundreds of times, and every
//! view — the caller's answer, the approver's and denier's, watchers,
//! GetElevation, the store and the engine's grants — agrees on the one
//! outcome; an active grant exists exactly when the outcome is APPROVED.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{authed, token, TestServer, ADMIN_TOKEN};
use rampart::elevation::{Broker, ElevationState, GrantQuery, StateStore, Store};
use rampart::proto::{
    self as pb, approvals_client::ApprovalsClient, authorizer_client::AuthorizerClient,
    ApproveElevationRequest, DenyElevationRequest, GetElevationRequest, RequestElevationRequest,
    WatchElevationsRequest,
};
use tonic::transport::Channel;
use tonic::Code;

const SNAPSHOT: &str = include_str!("fixtures/elevation.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const ITERATIONS: usize = 400;
const AT_ONCE: usize = 8;
/// The caller's wait timeout in the races against it.
const WAIT: Duration = Duration::from_millis(40);

/// A small deterministic generator (xorshift), seeded per run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[derive(Clone)]
struct Parts {
    authorizer: AuthorizerClient<Channel>,
    approvals: ApprovalsClient<Channel>,
    broker: Arc<Broker>,
}

/// What each party saw of one elevation.
struct Seen {
    id: String,
    caller: Option<Result<pb::ElevationState, Code>>,
    approve: Option<Result<pb::ElevationState, Code>>,
    deny: Option<Result<pb::ElevationState, Code>>,
}

fn api(state: ElevationState) -> pb::ElevationState {
    match state {
        ElevationState::Pending => pb::ElevationState::Pending,
        ElevationState::Approved => pb::ElevationState::Approved,
        ElevationState::Denied => pb::ElevationState::Denied,
        ElevationState::Expired => pb::ElevationState::Expired,
        ElevationState::Cancelled => pb::ElevationState::Cancelled,
        ElevationState::NotNeeded => pb::ElevationState::NotNeeded,
    }
}

/// The id of the elevation filed for `scope`, from the broker's changes.
async fn filed(
    changes: &mut tokio::sync::broadcast::Receiver<rampart::elevation::Elevation>,
    scope: &str,
) -> Option<String> {
    let wait = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match changes.recv().await {
                Ok(e) if e.scope == scope => return Some(e.id),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    });
    wait.await.ok().flatten()
}

/// One race: `kind` 0 approve vs the wait timeout, 1 approve vs the
/// caller going away, 2 approve vs deny, 3 all of them.
async fn race(p: Parts, i: usize, kind: usize, delays: [u64; 3]) -> Seen {
    let scope = format!("{RG}/providers/Microsoft.Compute/virtualMachines/race{i}");
    let mut req = RequestElevationRequest {
        principal_id: "agent-r".into(),
        action: RESTART.into(),
        scope: scope.clone(),
        justification: "race".into(),
        ..Default::default()
    };
    if kind == 0 || kind == 3 {
        req.wait_timeout = Some(prost_types::Duration {
            seconds: 0,
            nanos: WAIT.as_nanos() as i32,
        });
    }
    let mut changes = p.broker.subscribe();
    let mut authorizer = p.authorizer.clone();
    let caller = tokio::spawn(async move {
        authorizer
            .request_elevation(req)
            .await
            .map(|r| r.into_inner().state())
            .map_err(|s| s.code())
    });
    let id = filed(&mut changes, &scope)
        .await
        .unwrap_or_else(|| panic!("race {i}: never filed"));
    drop(changes);
    let sleep = |ms: u64| tokio::time::sleep(Duration::from_micros(ms));

    let approve = {
        let mut approvals = p.approvals.clone();
        let id = id.clone();
        let at = delays[0];
        tokio::spawn(async move {
            sleep(at).await;
            approvals
                .approve_elevation(authed(
                    ApproveElevationRequest {
                        id,
                        ..Default::default()
                    },
                    &token("oncall"),
                ))
                .await
                .map(|r| r.into_inner().state())
                .map_err(|s| s.code())
        })
    };
    let deny = (kind >= 2).then(|| {
        let mut approvals = p.approvals.clone();
        let id = id.clone();
        let at = delays[1];
        tokio::spawn(async move {
            sleep(at).await;
            approvals
                .deny_elevation(authed(
                    DenyElevationRequest {
                        id,
                        comment: "no".into(),
                    },
                    &token("oncall"),
                ))
                .await
                .map(|r| r.into_inner().state())
                .map_err(|s| s.code())
        })
    });
    let abort = kind == 1 || kind == 3;
    if abort {
        sleep(delays[2]).await;
        caller.abort();
    }
    let caller = match caller.await {
        Ok(answer) => Some(answer),
        Err(e) if e.is_cancelled() => None,
        Err(e) => panic!("race {i}: caller task: {e}"),
    };
    let approve = approve.await.ok();
    let deny = match deny {
        Some(d) => d.await.ok(),
        None => None,
    };
    Seen {
        id,
        caller,
        approve,
        deny,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_race_ends_in_exactly_one_resolution_everyone_sees() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Many new elevations at once: lift the agent's request rate.
    let snapshot = SNAPSHOT.replace(
        "      # Never applied: the agent is in Review mode.\n",
        "      maxRequestsPerMinute: 10000\n",
    );
    assert_ne!(snapshot, SNAPSHOT);
    let s = TestServer::start_with_store(&snapshot, Store::open(dir.path()).expect("store")).await;
    // A second connection to the same file: the store as written.
    let store = Store::open(dir.path()).expect("second connection");

    // A watcher for the whole run.
    let watched: Arc<Mutex<HashMap<String, Vec<pb::ElevationState>>>> = Arc::default();
    let mut stream = s
        .approvals
        .clone()
        .watch_elevations(authed(WatchElevationsRequest {}, ADMIN_TOKEN))
        .await
        .expect("watch")
        .into_inner();
    let sink = watched.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(event)) = stream.message().await {
            if let Some(e) = event.elevation {
                let state = e.state();
                sink.lock().unwrap().entry(e.id).or_default().push(state);
            }
        }
    });

    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let parts = Parts {
        authorizer: s.authorizer.clone(),
        approvals: s.approvals.clone(),
        broker: s.broker.clone(),
    };
    let mut seen = Vec::new();
    let wait_us = WAIT.as_micros() as u64;
    for batch in (0..ITERATIONS).collect::<Vec<_>>().chunks(AT_ONCE) {
        let mut set = tokio::task::JoinSet::new();
        for &i in batch {
            let kind = i % 4;
            // Around the wait timeout for the races against it, else soon.
            let around = if kind == 0 || kind == 3 {
                wait_us - 10_000 + rng.below(20_000)
            } else {
                rng.below(3_000)
            };
            let delays = [around, rng.below(3_000), rng.below(3_000)];
            set.spawn(race(parts.clone(), i, kind, delays));
        }
        while let Some(result) = set.join_next().await {
            seen.push(result.expect("race task"));
        }
    }

    let mut outcomes: HashMap<pb::ElevationState, usize> = HashMap::new();
    for (n, seen) in seen.iter().enumerate() {
        // The caller's going away resolves in the background: wait for it.
        let mut stored = None;
        for _ in 0..5000 {
            stored = store.elevation(&seen.id).expect("read the store");
            if stored.as_ref().is_some_and(|e| !e.state.is_pending()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let stored = stored.unwrap_or_else(|| panic!("{}: not stored", seen.id));
        let outcome = api(stored.state);
        assert_ne!(outcome, pb::ElevationState::Pending, "{n}: never resolved");
        *outcomes.entry(outcome).or_default() += 1;
        let approved = outcome == pb::ElevationState::Approved;

        if let Some(answer) = seen.caller {
            assert_eq!(answer, Ok(outcome), "{n}: the caller saw otherwise");
        }
        match seen.approve {
            Some(Ok(state)) => assert!(approved && state == outcome, "{n}: approve said OK"),
            Some(Err(code)) => {
                assert!(!approved, "{n}: approval refused ({code:?}) yet stored");
                assert_eq!(code, Code::FailedPrecondition, "{n}");
            }
            None => panic!("{n}: the approval task failed"),
        }
        if let Some(Ok(state)) = seen.deny {
            assert_eq!(
                (state, outcome),
                (pb::ElevationState::Denied, pb::ElevationState::Denied),
                "{n}: deny said OK"
            );
        }
        let got = s
            .approvals
            .clone()
            .get_elevation(authed(
                GetElevationRequest {
                    id: seen.id.clone(),
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(got.state(), outcome, "{n}: GetElevation");

        let grants: Vec<_> = store
            .grants(&GrantQuery::default(), None, 10_000)
            .expect("grants")
            .items
            .into_iter()
            .filter(|g| g.elevation_id == seen.id)
            .collect();
        assert_eq!(
            grants.len(),
            usize::from(approved),
            "{n}: a grant is stored exactly for an approval"
        );
        assert!(grants.iter().all(|g| g.state.is_active()), "{n}");
        let in_engine = s
            .engine
            .grants
            .all()
            .iter()
            .filter(|a| grants.iter().any(|g| *g.id == *a.id))
            .count();
        assert_eq!(in_engine, usize::from(approved), "{n}: engine");
    }

    // Watchers saw each elevation resolve once, as stored.
    for _ in 0..2000 {
        let done = {
            let w = watched.lock().unwrap();
            seen.iter().all(|x| {
                w.get(&x.id)
                    .is_some_and(|v| v.iter().any(|s| *s != pb::ElevationState::Pending))
            })
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    {
        let w = watched.lock().unwrap();
        for x in &seen {
            let stored = store.elevation(&x.id).expect("read").expect("stored");
            let terminal: Vec<_> = w
                .get(&x.id)
                .map(|v| {
                    v.iter()
                        .filter(|s| **s != pb::ElevationState::Pending)
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(terminal, [api(stored.state)], "{}: watchers", x.id);
        }
    }
    println!("outcomes: {outcomes:?}");
    // The races were races: more than one outcome happened.
    assert!(outcomes.len() >= 3, "{outcomes:?}");
    watcher.abort();
    s.stop().await;
}
