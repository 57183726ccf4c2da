#![allow(dead_code)]
//! A database of its own for each test, on the PostgreSQL server that
//! `.ci/run` starts (`.ci/postgres.sh` exports `RAMPART_TEST_POSTGRES`).
//! Without the variable the PostgreSQL tests say so and pass.

use std::sync::Arc;
use std::time::Duration;

use rampart::elevation::{Broker, DbConfig, Limits, PgStore};
use rampart::engine::Engine;

pub const SKIPPED: &str = "skipped: RAMPART_TEST_POSTGRES is not set (.ci/run starts a server)";

/// `rampart_test_<random>`, dropped (with its connections) when dropped.
pub struct TestDb {
    pub url: String,
    admin: String,
    pub name: String,
}

/// A fresh database, or `None` (the skip printed) without a server.
pub fn test_db() -> Option<TestDb> {
    let Ok(admin) = std::env::var("RAMPART_TEST_POSTGRES") else {
        eprintln!("{SKIPPED}");
        return None;
    };
    let name = format!(
        "rampart_test_{}",
        rampart::elevation::types::new_id().replace('-', "")
    );
    run_sql(&admin, &format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE on RAMPART_TEST_POSTGRES: {e}"));
    let base = admin.split('?').next().unwrap_or(&admin);
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Some(TestDb {
        url: format!("{base}/{name}"),
        admin,
        name,
    })
}

impl TestDb {
    pub fn config(&self) -> DbConfig {
        DbConfig::parse(&self.url, None).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn store(&self) -> PgStore {
        PgStore::open(&self.config()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs SQL on this database, outside rampart.
    pub fn sql(&self, sql: &str) -> Result<(), String> {
        run_sql(&self.url, sql)
    }

    /// One value a query returns (as text).
    pub fn query_text(&self, sql: &str) -> String {
        query_text_at(&self.url, sql)
    }

    /// A replica: a broker on its own store of this database, following it
    /// and sweeping every 200ms.
    pub fn replica(&self, snapshot_yaml: &str) -> Arc<Broker> {
        self.replica_with(snapshot_yaml, Limits::default())
    }

    pub fn replica_with(&self, snapshot_yaml: &str, limits: Limits) -> Arc<Broker> {
        let snapshot =
            rampart::snapshot::load_str(snapshot_yaml, "fleet").unwrap_or_else(|e| panic!("{e}"));
        let broker = Broker::start_with(Arc::new(Engine::new(snapshot)), self.store(), limits)
            .unwrap_or_else(|e| panic!("{e}"));
        broker.spawn_sweeper(Duration::from_millis(200));
        broker
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = run_sql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// One value a query on the database at `url` returns (as text).
pub fn query_text_at(url: &str, sql: &str) -> String {
    let (url, text) = (url.to_owned(), sql.to_owned());
    on_own_runtime(async move {
        let client = connect(&url).await?;
        let row = client
            .query_one(&text, &[])
            .await
            .map_err(|e| e.to_string())?;
        row.try_get::<_, String>(0).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

fn run_sql(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    on_own_runtime(async move {
        connect(&url)
            .await?
            .batch_execute(&sql)
            .await
            .map_err(|e| e.to_string())
    })
}

/// Runs `work` on a runtime of its own, on a thread of its own (callable
/// from async tests and from `Drop`).
fn on_own_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(work)
    })
    .join()
    .unwrap_or_else(|_| Err("the SQL thread panicked".into()))
}

/// Polls `check` every 10ms until it holds, up to `limit` (a bound on a
/// wait for replicas to converge, not a timing assertion).
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
