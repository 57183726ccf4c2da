//! A failed write changes nothing: when the store refuses a write, the
//! broker's memory and the engine stay as they were and the call fails
//! UNAVAILABLE; once the store works again, so does the call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rampart::elevation::events::AuditEvent;
use rampart::elevation::policy::freeze::FreezeState;
use rampart::elevation::{
    Approval, Broker, Cursor, Elevation, ElevationError, ElevationQuery, ElevationRequest,
    ElevationState, Grant, GrantQuery, Page, Purged, Resolved, StateStore, Store, StoreError,
};
use rampart::engine::{Engine, Request, Verdict};

const SNAPSHOT: &str = include_str!("fixtures/elevation.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";

/// A store whose writes fail while `failing` is set.
struct Flaky {
    inner: Store,
    failing: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::Acquire) {
            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some("disk I/O error (test)".into()),
            )));
        }
        Ok(())
    }
}

impl StateStore for Flaky {
    fn load_live(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError> {
        self.inner.load_live()
    }
    fn create_elevation(&self, e: &Elevation) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_elevation(e)
    }
    fn resolve(&self, e: &Elevation, grant: Option<&Grant>) -> Result<Resolved, StoreError> {
        self.check()?;
        self.inner.resolve(e, grant)
    }
    fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        self.check()?;
        StateStore::put_grant(&self.inner, g)
    }
    fn add_approval(
        &self,
        id: &str,
        approval: &rampart::elevation::ApprovalRecord,
    ) -> Result<Option<Elevation>, StoreError> {
        self.check()?;
        self.inner.add_approval(id, approval)
    }
    fn elevation(&self, id: &str) -> Result<Option<Elevation>, StoreError> {
        self.inner.elevation(id)
    }
    fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        self.inner.grant(id)
    }
    fn elevations(
        &self,
        q: &ElevationQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Elevation>, StoreError> {
        self.inner.elevations(q, after, limit)
    }
    fn grants(
        &self,
        q: &GrantQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Grant>, StoreError> {
        self.inner.grants(q, after, limit)
    }
    fn count_elevations(&self) -> Result<usize, StoreError> {
        self.inner.count_elevations()
    }
    fn purge(&self, before: SystemTime) -> Result<Purged, StoreError> {
        self.inner.purge(before)
    }
    fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner.append_audit(event)
    }
    fn audit_events(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        self.inner.audit_events()
    }
    fn freeze(&self) -> Result<Option<FreezeState>, StoreError> {
        self.inner.freeze()
    }
    fn put_freeze(&self, state: &FreezeState) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_freeze(state)
    }
}

fn vm(n: usize) -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm{n}")
}

fn engine() -> Arc<Engine> {
    Arc::new(Engine::new(
        rampart::snapshot::load_str(SNAPSHOT, "test").expect("snapshot"),
    ))
}

const NO_ATTRIBUTES: &[(&str, &str)] = &[];

fn restart(scope: &str, dry_run: bool) -> Request<'_> {
    Request {
        principal_id: "agent-r",
        action: RESTART,
        scope,
        data_action: false,
        attributes: &NO_ATTRIBUTES,
        explain: false,
        dry_run,
    }
}

fn allowed(broker: &Broker, scope: &str) -> bool {
    let loaded = broker.engine().current();
    loaded
        .decide_with(&restart(scope, false), Some(broker.engine().live()))
        .is_ok_and(|d| d.verdict == Verdict::Allow)
}

fn ask(scope: &str) -> ElevationRequest<'_> {
    ElevationRequest {
        principal_id: "agent-r",
        action: RESTART,
        scope,
        data_action: false,
        justification: "durability",
        requested_duration: None,
        wait_timeout: Some(Duration::from_secs(30)),
        attributes: Default::default(),
        ticket: "",
        exact: None,
    }
}

/// Files an elevation for `scope` in the background; its id once pending.
async fn file(broker: &Arc<Broker>, scope: &str) -> String {
    let b = broker.clone();
    let owned = scope.to_owned();
    tokio::spawn(async move {
        let _ = b.request(ask(&owned)).await;
    });
    for _ in 0..1000 {
        if let Some(e) = broker
            .pending_elevations()
            .into_iter()
            .find(|e| e.scope == scope)
        {
            return e.id;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("never pending");
}

fn unavailable(e: ElevationError) {
    assert!(matches!(e, ElevationError::Store(_)), "{e}");
}

#[tokio::test]
async fn a_failed_write_leaves_memory_and_the_engine_as_they_were() {
    let flaky = Arc::new(Flaky {
        inner: Store::in_memory().expect("store"),
        failing: AtomicBool::new(false),
    });
    let broker = Broker::start(engine(), flaky.clone()).expect("broker");

    // Filing: nothing pending, nothing stored.
    flaky.failing.store(true, Ordering::Release);
    let scope = vm(1);
    let refused = broker.request(ask(&scope)).await.expect_err("refused");
    unavailable(refused);
    assert_eq!(broker.live(), (0, 0));
    flaky.failing.store(false, Ordering::Release);

    // Approving: still pending, no grant anywhere.
    let id = file(&broker, &scope).await;
    flaky.failing.store(true, Ordering::Release);
    let approval = || Approval {
        duration: None,
        max_uses: 0,
        comment: None,
        bind_to_request: None,
    };
    unavailable(
        broker
            .approve("oncall", &id, approval())
            .await
            .expect_err("approve"),
    );
    assert_eq!(broker.live(), (1, 0));
    assert_eq!(
        broker.get(&id).map(|e| e.state),
        Some(ElevationState::Pending)
    );
    assert!(!allowed(&broker, &scope), "no grant was honoured");
    unavailable(broker.deny("oncall", &id, None).await.expect_err("deny"));
    assert_eq!(
        broker.get(&id).map(|e| e.state),
        Some(ElevationState::Pending)
    );

    // Once the store works, the approval goes through, and is honoured.
    flaky.failing.store(false, Ordering::Release);
    let approved = broker
        .approve("oncall", &id, approval())
        .await
        .expect("approve");
    let grant = approved.grant.expect("grant").id;
    assert!(allowed(&broker, &scope));

    // Revoking: durable first; a failed write keeps the grant honoured.
    flaky.failing.store(true, Ordering::Release);
    unavailable(
        broker
            .revoke("oncall", false, &grant, None)
            .expect_err("revoke"),
    );
    assert_eq!(broker.live(), (0, 1));
    assert!(allowed(&broker, &scope), "the grant is still honoured");
    assert!(flaky
        .grant(&grant)
        .expect("read")
        .is_some_and(|g| g.state.is_active()));
    flaky.failing.store(false, Ordering::Release);
    let ended = broker
        .revoke("oncall", false, &grant, None)
        .expect("revoke");
    assert!(!ended.state.is_active());
    assert!(!allowed(&broker, &scope));
    assert_eq!(broker.live(), (0, 0));
}

/// A freeze is durable before it acts: one whose write fails leaves
/// agents, pending elevations and grants as they were.
#[tokio::test]
async fn a_freeze_that_cannot_be_written_changes_nothing() {
    let flaky = Arc::new(Flaky {
        inner: Store::in_memory().expect("store"),
        failing: AtomicBool::new(false),
    });
    let broker = Broker::start(engine(), flaky.clone()).expect("broker");
    let scope = vm(1);
    let id = file(&broker, &scope).await;
    flaky.failing.store(true, Ordering::Release);
    unavailable(
        broker
            .set_freeze(true, "admin", "incident")
            .expect_err("freeze"),
    );
    assert!(!broker.engine().is_frozen());
    assert!(!broker.freeze_state().frozen);
    assert_eq!(
        broker.get(&id).map(|e| e.state),
        Some(ElevationState::Pending)
    );
    flaky.failing.store(false, Ordering::Release);
    broker
        .set_freeze(true, "admin", "incident")
        .expect("freeze");
    assert!(broker.engine().is_frozen());
    assert_eq!(
        broker.find(&id).expect("find").map(|e| e.state),
        Some(ElevationState::Cancelled)
    );
    assert_eq!(
        flaky
            .freeze()
            .expect("read")
            .map(|f| (f.frozen, f.by, f.reason)),
        Some((true, "admin".to_owned(), "incident".to_owned()))
    );
}

#[tokio::test]
async fn a_crash_never_lets_a_limited_grant_be_used_more_than_its_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scope = vm(2);
    let broker = Broker::start(engine(), Store::open(dir.path()).expect("store")).expect("broker");
    let id = file(&broker, &scope).await;
    broker
        .approve(
            "oncall",
            &id,
            Approval {
                duration: None,
                max_uses: 10,
                comment: None,
                bind_to_request: None,
            },
        )
        .await
        .expect("approve");
    // Asking takes no use.
    let loaded = broker.engine().current();
    for _ in 0..20 {
        assert!(loaded
            .decide_with(&restart(&scope, true), Some(broker.engine().live()))
            .is_ok_and(|d| d.verdict == Verdict::Allow));
    }
    drop(loaded);
    let mut used = 0;
    for _ in 0..5 {
        used += u32::from(allowed(&broker, &scope));
    }
    assert_eq!(used, 5);
    // A crash: no sweep, no shutdown; another process opens the file.
    let restarted =
        Broker::start(engine(), Store::open(dir.path()).expect("store")).expect("restart");
    let mut after = 0;
    for _ in 0..20 {
        after += u32::from(allowed(&restarted, &scope));
        restarted.reserve_uses();
    }
    assert!(
        used + after <= 10,
        "{used} uses before the crash and {after} after, of 10"
    );
    drop(broker);
}
