//! The shared state store (`--state-db postgres://…`): one PostgreSQL
//! database that every replica of a fleet reads and writes, so an agent
//! scaled to three pods has one approval queue, and an approval given to
//! any replica is honoured by all of them.
//!
//! What keeps the replicas exact is in the database, not in any one
//! process:
//! - every write takes the one row of `rampart_changes` first (`UPDATE …
//!   SET seq = seq + 1`), which both numbers the change and orders the
//!   writers: a transaction holding sequence `n` commits before the next
//!   can take `n + 1`, so a reader that sees `n` sees everything before it.
//!   Rows carry the sequence of their last change; a replica re-reads
//!   "everything after the last sequence I saw" whenever `NOTIFY
//!   rampart_changes` wakes it, and every second in case a notification
//!   was lost (they are, while a connection is down);
//! - a resolution is `… WHERE state = 'PENDING'` in the transaction that
//!   writes its grant: one winner, the others read what won;
//! - one pending elevation per request: a unique partial index on the
//!   pending key, so identical requests on two replicas join one;
//! - the uses of a limited grant are reserved in blocks (`reserved +
//!   k <= max_uses`), so replicas together never exceed `maxUses`;
//! - `maxPerHour` auto-approvals, the per-agent rate of new elevations and
//!   the pending caps are counted in the transaction that files or
//!   resolves, across the fleet.
//!
//! The broker is synchronous (its writer lock is held across a store call),
//! so this store runs its own small tokio runtime: a call is sent there and
//! the calling thread waits — inside `block_in_place` on a multi-threaded
//! runtime, so the async workers serving Authorize keep running while the
//! database is slow or away. Every call is bounded
//! ([`CALL_TIMEOUT`]); an unreachable database fails a call with
//! [`StoreError::Unavailable`] instead of hanging it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Row};

use super::{
    Change, Changes, Cursor, ElevationQuery, GrantQuery, OpenLimits, Opened, Page, Purged,
    Resolved, SharedState, StateStore, StoreError,
};
use crate::elevation::events::AuditEvent;
use crate::elevation::policy::approval::has_approved;
use crate::elevation::policy::rate::Bucket;
use crate::elevation::policy::request;
use crate::elevation::store::FreezeState;
use crate::elevation::{ApprovalRecord, Elevation, ElevationState, Grant};
use crate::model::principal_key;

mod tls;

pub use tls::{DbTls, TlsMode};

/// The schema version this rampart writes (rows of
/// `rampart_schema_migrations`).
pub const PG_SCHEMA_VERSION: i32 = PG_MIGRATIONS.len() as i32;

/// Migration `n` (from 1) brings schema version `n - 1` to `n`.
const PG_MIGRATIONS: [&str; 2] = [
    // 1: the first schema.
    "CREATE TABLE rampart_schema_migrations (
         version integer PRIMARY KEY,
         applied_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE rampart_changes (
         one boolean PRIMARY KEY DEFAULT true CHECK (one),
         seq bigint NOT NULL);
     INSERT INTO rampart_changes (one, seq) VALUES (true, 0);
     CREATE TABLE elevations (
         id text PRIMARY KEY,
         state text NOT NULL,
         created_ms bigint NOT NULL,
         updated_ms bigint NOT NULL,
         principal_id text NOT NULL,
         principal_key text NOT NULL,
         agent_id text NOT NULL,
         pending_key text NOT NULL,
         waiters integer NOT NULL DEFAULT 0,
         writer text NOT NULL,
         seq bigint NOT NULL,
         body text NOT NULL);
     CREATE UNIQUE INDEX elevations_one_pending_per_key ON elevations (pending_key)
         WHERE state = 'PENDING';
     CREATE INDEX elevations_by_creation ON elevations (created_ms, id);
     CREATE INDEX elevations_by_state ON elevations (state, created_ms, id);
     CREATE INDEX elevations_by_seq ON elevations (seq);
     CREATE TABLE grants (
         id text PRIMARY KEY,
         state text NOT NULL,
         created_ms bigint NOT NULL,
         expires_ms bigint NOT NULL,
         ended_ms bigint,
         principal_id text NOT NULL,
         agent_id text NOT NULL,
         elevation_id text NOT NULL,
         max_uses integer NOT NULL,
         uses integer NOT NULL,
         reserved integer NOT NULL,
         seq bigint NOT NULL,
         body text NOT NULL,
         CHECK (max_uses = 0 OR reserved <= max_uses));
     CREATE INDEX grants_by_creation ON grants (created_ms, id);
     CREATE INDEX grants_by_state ON grants (state, created_ms, id);
     CREATE INDEX grants_by_seq ON grants (seq);
     CREATE INDEX grants_by_elevation ON grants (elevation_id);
     CREATE TABLE audit (
         seq bigserial PRIMARY KEY,
         at_ms bigint NOT NULL,
         event text NOT NULL);
     CREATE INDEX audit_by_time ON audit (at_ms);
     CREATE TABLE auto_approvals (
         agent_id text NOT NULL,
         rule integer NOT NULL,
         at_ms bigint NOT NULL);
     CREATE INDEX auto_approvals_by_rule ON auto_approvals (agent_id, rule, at_ms);
     CREATE TABLE rate_buckets (
         agent_id text PRIMARY KEY,
         tokens double precision NOT NULL,
         at_ms bigint NOT NULL);",
    // 2: settings that outlive restarts and hold for the whole fleet (the
    // freeze switch), one JSON body each.
    "CREATE TABLE rampart_settings (name text PRIMARY KEY, body text NOT NULL);",
];

/// The tables rampart creates: found without `rampart_schema_migrations`,
/// they are someone else's, and rampart refuses the database.
const TABLES: [&str; 8] = [
    "rampart_changes",
    "rampart_settings",
    "elevations",
    "grants",
    "audit",
    "auto_approvals",
    "rate_buckets",
    "rampart_schema_migrations",
];

/// The channel a write notifies (at commit) and every replica listens on.
const CHANNEL: &str = "rampart_changes";
/// A key for `pg_advisory_xact_lock`: replicas starting at once migrate
/// one after the other ("RAMP" "STOR").
const MIGRATION_LOCK: i64 = 0x5241_4d50_5354_4f52;
/// The longest any one store call may take, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections a replica keeps to the database (the listener aside).
const POOL_SIZE: usize = 8;
/// The most changes one catch-up read returns; a longer backlog is read in
/// several.
const CHANGES_PAGE: i64 = 1000;
/// The most rows one listing query returns.
const MAX_ROWS: usize = i32::MAX as usize;

/// Where the shared database is and how to reach it.
#[derive(Clone)]
pub struct DbConfig {
    pub pg: tokio_postgres::Config,
    pub tls: DbTls,
    /// The URL without its password, for messages.
    pub display: String,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

impl DbConfig {
    /// Reads a `postgres://` URL (or `key=value` connection string); the
    /// TLS settings are `sslmode` (`disable`, `prefer`, `require`,
    /// `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file), or
    /// `ca_pem` when given (`--state-db-ca`).
    pub fn parse(url: &str, ca_pem: Option<Vec<u8>>) -> Result<DbConfig, String> {
        let (rest, mode, root_cert) = tls::split_tls_params(url)?;
        let mut pg: tokio_postgres::Config = rest.parse().map_err(|e| {
            format!("--state-db is not a PostgreSQL connection URL ({e}); write postgres://USER:PASSWORD@HOST:5432/DATABASE")
        })?;
        if pg.get_hosts().is_empty() {
            return Err(
                "--state-db names no host; write postgres://USER:PASSWORD@HOST:5432/DATABASE"
                    .into(),
            );
        }
        if pg.get_user().is_none() {
            return Err(
                "--state-db names no user; write postgres://USER:PASSWORD@HOST:5432/DATABASE"
                    .into(),
            );
        }
        pg.connect_timeout(CONNECT_TIMEOUT);
        pg.keepalives_idle(Duration::from_secs(30));
        pg.application_name("rampart");
        let ca = match (ca_pem, root_cert) {
            (Some(pem), _) => Some(pem),
            (None, Some(path)) => Some(
                std::fs::read(&path)
                    .map_err(|e| format!("--state-db sslrootcert {path}: cannot read it ({e})"))?,
            ),
            (None, None) => None,
        };
        let tls = DbTls::new(mode, ca.as_deref())?;
        pg.ssl_mode(tls.ssl_mode());
        Ok(DbConfig {
            display: tls::redact(url),
            pg,
            tls,
        })
    }
}

/// The PostgreSQL state store, shared by every replica that opens it.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// This process's name in the `writer` column: a replica tells its own
    /// writes from the others'.
    writer: Arc<str>,
    changed: Arc<tokio::sync::Notify>,
    display: String,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping may happen inside an async context, where a blocking
        // shutdown would panic.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Whether a database error means "not reachable" rather than "refused
/// this statement": connection exceptions (class 08), the server shutting
/// down or starting (57P01–57P03), and anything without a server answer.
fn unavailable(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
    }
}

/// An error with its causes ("error performing TLS handshake: invalid
/// peer certificate: UnknownIssuer").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

fn db_error(e: tokio_postgres::Error) -> StoreError {
    if unavailable(&e) {
        StoreError::Unavailable(with_causes(&e))
    } else {
        let text = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        StoreError::Database(text)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        db_error(e)
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => db_error(e),
            other => StoreError::Unavailable(with_causes(&other)),
        }
    }
}

/// The text the unique index keys pending elevations on (a digest of
/// principal, operation, scope, plane and attributes).
pub fn pending_key_text(e: &Elevation) -> String {
    let key = request::pending_key(e);
    let json = serde_json::to_string(&key).unwrap_or_default();
    hex::encode(Sha256::digest(json.as_bytes()))
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn elevation_row(row: &Row) -> Result<Elevation, StoreError> {
    let mut e: Elevation = serde_json::from_str(row.try_get::<_, &str>("body")?)?;
    e.waiters = u32::try_from(row.try_get::<_, i32>("waiters")?).unwrap_or(0);
    Ok(e)
}

fn grant_row(row: &Row) -> Result<Grant, StoreError> {
    let mut g: Grant = serde_json::from_str(row.try_get::<_, &str>("body")?)?;
    // The columns are the truth for what replicas count together.
    g.uses = u32::try_from(row.try_get::<_, i32>("uses")?).unwrap_or(0);
    g.reserved_uses = u32::try_from(row.try_get::<_, i32>("reserved")?).unwrap_or(0);
    Ok(g)
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Takes the next change sequence: the one row every writer updates first,
/// so writers commit in sequence order.
async fn next_seq(tx: &deadpool_postgres::Transaction<'_>) -> Result<i64, StoreError> {
    let stmt = tx
        .prepare_cached("UPDATE rampart_changes SET seq = seq + 1 RETURNING seq")
        .await?;
    Ok(tx.query_one(&stmt, &[]).await?.try_get(0)?)
}

async fn notify(tx: &deadpool_postgres::Transaction<'_>, seq: i64) -> Result<(), StoreError> {
    let stmt = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
    tx.execute(&stmt, &[&CHANNEL, &seq.to_string()]).await?;
    Ok(())
}

const ELEVATION_COLUMNS: &str = "body, waiters";
const GRANT_COLUMNS: &str = "body, uses, reserved";

async fn upsert_elevation(
    tx: &deadpool_postgres::Transaction<'_>,
    e: &Elevation,
    seq: i64,
    writer: &str,
) -> Result<(), StoreError> {
    let body = serde_json::to_string(e)?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO elevations (id, state, created_ms, updated_ms, principal_id, principal_key,
                 agent_id, pending_key, waiters, writer, seq, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (id) DO UPDATE SET state = $2, updated_ms = $4, writer = $10, seq = $11,
                 body = $12, waiters = CASE WHEN $2 = 'PENDING' THEN elevations.waiters ELSE 0 END",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &e.id,
            &e.state.as_str(),
            &unix_ms(e.created_at),
            &unix_ms(SystemTime::now()),
            &e.principal_id,
            &principal_key(&e.principal_id).as_ref(),
            &e.agent_id,
            &pending_key_text(e),
            &int(e.waiters),
            &writer,
            &seq,
            &body,
        ],
    )
    .await?;
    Ok(())
}

/// Writes a grant as it stands; an ended row stays ended, and the counted
/// uses and reservation only grow.
async fn upsert_grant(
    tx: &deadpool_postgres::Transaction<'_>,
    g: &Grant,
    seq: i64,
) -> Result<u64, StoreError> {
    let body = serde_json::to_string(g)?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO grants (id, state, created_ms, expires_ms, ended_ms, principal_id, agent_id,
                 elevation_id, max_uses, uses, reserved, seq, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (id) DO UPDATE SET state = $2, expires_ms = $4, ended_ms = $5,
                 uses = GREATEST(grants.uses, $10), reserved = GREATEST(grants.reserved, $11),
                 seq = $12, body = $13
             WHERE grants.state <> 'ENDED'",
        )
        .await?;
    Ok(tx
        .execute(
            &stmt,
            &[
                &g.id,
                &g.state.as_str(),
                &unix_ms(g.created_at),
                &unix_ms(g.expires_at),
                &g.ended_at.map(unix_ms),
                &g.principal_id,
                &g.agent_id,
                &g.elevation_id,
                &int(g.max_uses),
                &int(g.uses),
                &int(g.reserved_uses),
                &seq,
                &body,
            ],
        )
        .await?)
}

impl PgStore {
    /// Connects, checks the schema is rampart's (creating or migrating it
    /// as needed) and starts listening for other replicas' changes.
    pub fn open(config: &DbConfig) -> Result<PgStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rampart-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(format!("cannot start its runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let manager = match &config.tls {
            DbTls::Off => Manager::from_config(
                config.pg.clone(),
                tokio_postgres::NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            ),
            DbTls::Rustls(connect, _) => Manager::from_config(
                config.pg.clone(),
                connect.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            ),
        };
        let pool = {
            let _enter = handle.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(CALL_TIMEOUT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| StoreError::Database(format!("cannot build a pool: {e}")))?
        };
        let store = PgStore {
            runtime: Some(runtime),
            handle,
            pool,
            writer: crate::elevation::types::new_id().into(),
            changed: Arc::new(tokio::sync::Notify::new()),
            display: config.display.clone(),
        };
        store.migrate()?;
        store
            .handle
            .spawn(listen(config.clone(), store.changed.clone()));
        Ok(store)
    }

    /// Where the store is (the URL without its password).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Runs `work` on the store's runtime and waits for it, bounded by
    /// [`CALL_TIMEOUT`].
    fn run<T, F>(&self, work: impl FnOnce(Pool, Arc<str>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let future = work(self.pool.clone(), self.writer.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let result = match tokio::time::timeout(CALL_TIMEOUT, future).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "no answer within {}s",
                    CALL_TIMEOUT.as_secs()
                ))),
            };
            let _ = tx.send(result);
        });
        let wait = move || rx.recv();
        let on_async_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let received = if on_async_worker {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        received.unwrap_or_else(|_| Err(StoreError::Unavailable("the store stopped".into())))
    }

    /// Creates the schema in an empty database, migrates an older one, and
    /// refuses one that is newer or not rampart's.
    fn migrate(&self) -> Result<(), StoreError> {
        let display = self.display.clone();
        self.run(move |pool, _| async move {
            let mut client = pool.get().await?;
            let refuse = |problem: String| StoreError::NotRampart {
                path: display.clone(),
                problem,
            };
            loop {
                let tx = client.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                    .await?;
                let names: Vec<String> = tx
                    .query(
                        "SELECT table_name::text FROM information_schema.tables
                         WHERE table_schema = current_schema() AND table_name = ANY($1)",
                        &[&TABLES.to_vec()],
                    )
                    .await?
                    .iter()
                    .filter_map(|r| r.try_get::<_, String>(0).ok())
                    .collect();
                let version: i32 = if names.iter().any(|n| n == "rampart_schema_migrations") {
                    tx.query_one(
                        "SELECT coalesce(max(version), 0) FROM rampart_schema_migrations",
                        &[],
                    )
                    .await
                    .map_err(|e| {
                        refuse(format!(
                            "has a rampart_schema_migrations table rampart cannot read ({e})"
                        ))
                    })?
                    .try_get(0)?
                } else if !names.is_empty() {
                    return Err(refuse(format!(
                        "has tables named {} that rampart did not create (no rampart_schema_migrations); use a database of its own",
                        names.join(", ")
                    )));
                } else {
                    0
                };
                if version > PG_SCHEMA_VERSION {
                    return Err(refuse(format!(
                        "has schema version {version}, written by a newer rampart; this one reads up to {PG_SCHEMA_VERSION}"
                    )));
                }
                if version == PG_SCHEMA_VERSION {
                    tx.commit().await?;
                    return Ok(());
                }
                let next = version + 1;
                tx.batch_execute(PG_MIGRATIONS[(next - 1) as usize]).await?;
                tx.execute(
                    "INSERT INTO rampart_schema_migrations (version) VALUES ($1)",
                    &[&next],
                )
                .await?;
                tx.commit().await?;
                tracing::info!(version = next, "state database migrated");
            }
        })
    }

    /// Every stored elevation and grant (tests and tools).
    pub fn load(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError> {
        let e = self.elevations(&ElevationQuery::default(), None, MAX_ROWS)?;
        let g = self.grants(&GrantQuery::default(), None, MAX_ROWS)?;
        Ok((e.items, g.items))
    }

    /// One paged listing query.
    #[allow(clippy::too_many_arguments)]
    fn page<T: Send + 'static>(
        &self,
        table: &'static str,
        columns: &'static str,
        (mut filters, mut params): (Vec<String>, Params),
        after: Option<&Cursor>,
        limit: usize,
        newest_first: bool,
        decode: fn(&Row) -> Result<T, StoreError>,
        key: fn(&T) -> Cursor,
    ) -> Result<Page<T>, StoreError> {
        let (beyond, order) = if newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(c) = after {
            let n = params.len();
            filters.push(format!(
                "(created_ms, id) {beyond} (${}, ${})",
                n + 1,
                n + 2
            ));
            params.push(Box::new(c.created_ms));
            params.push(Box::new(c.id.clone()));
        }
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filters.join(" AND "))
        };
        let rows = limit.min(MAX_ROWS).saturating_add(1);
        let sql = format!(
            "SELECT {columns} FROM {table} {filter} ORDER BY created_ms {order}, id {order} LIMIT {rows}"
        );
        let mut items = self.run(move |pool, _| async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let rows = client.query(&stmt, &refs(&params)).await?;
            rows.iter().map(decode).collect::<Result<Vec<T>, _>>()
        })?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(key)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// How many rows each table holds: (elevations, grants, audit).
    pub fn row_counts(&self) -> Result<(usize, usize, usize), StoreError> {
        self.run(|pool, _| async move {
            let client = pool.get().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM elevations), (SELECT count(*) FROM grants),
                            (SELECT count(*) FROM audit)",
                    &[],
                )
                .await?;
            let n = |i| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
            Ok((n(0), n(1), n(2)))
        })
    }
}

/// Listens on [`CHANNEL`] and wakes `changed` on every notification and
/// after every (re)connection, reconnecting for as long as the runtime
/// runs: soon after a connection that was listening, with a growing wait
/// (up to 5s) while the database cannot be reached. Notifications sent
/// while the connection is down are lost: the wake-up after reconnecting
/// makes the broker re-read by sequence, which loses nothing.
async fn listen(config: DbConfig, changed: Arc<tokio::sync::Notify>) {
    const FIRST_WAIT: Duration = Duration::from_millis(100);
    let mut backoff = FIRST_WAIT;
    loop {
        let ended = match &config.tls {
            DbTls::Off => listen_once(&config, tokio_postgres::NoTls, &changed).await,
            DbTls::Rustls(connect, _) => listen_once(&config, connect.clone(), &changed).await,
        };
        let failed = match ended {
            // It was listening: try again soon, from the shortest wait.
            Ok(()) => {
                backoff = FIRST_WAIT;
                false
            }
            Err(e) => {
                tracing::warn!(
                    "the state database is unreachable: {e}; listening again in {}ms",
                    backoff.as_millis()
                );
                true
            }
        };
        tokio::time::sleep(backoff).await;
        if failed {
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        // Whatever ended the connection, catch up once it is back.
        changed.notify_one();
    }
}

/// One listening connection, until it ends: `Ok` once it was listening,
/// an error when it could not connect or `LISTEN`.
async fn listen_once<T>(
    config: &DbConfig,
    tls: T,
    changed: &Arc<tokio::sync::Notify>,
) -> Result<(), StoreError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    use futures_util::StreamExt;
    let (client, mut connection) = config.pg.connect(tls).await?;
    let wake = changed.clone();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(e) => return Err(StoreError::from(e)),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Anything written before LISTEN took effect is read now.
    changed.notify_one();
    let ended = driver
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    drop(client);
    let why = ended
        .err()
        .map_or_else(|| "the connection closed".to_owned(), |e| e.to_string());
    tracing::warn!("the state database's notifications stopped ({why}); listening again");
    Ok(())
}

fn elevation_key(e: &Elevation) -> Cursor {
    Cursor {
        created_ms: unix_ms(e.created_at),
        id: e.id.clone(),
    }
}

fn grant_key(g: &Grant) -> Cursor {
    Cursor {
        created_ms: unix_ms(g.created_at),
        id: g.id.clone(),
    }
}

/// The conditional resolution, in one transaction; `count`, for an
/// auto-approval with a `maxPerHour`, is counted (and checked) in it.
async fn resolve_tx(
    pool: Pool,
    writer: Arc<str>,
    e: Elevation,
    grant: Option<Grant>,
    count: Option<AutoCount>,
) -> Result<Resolved, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let seq = next_seq(&tx).await?;
    let stmt = tx
        .prepare_cached("SELECT body, waiters, state FROM elevations WHERE id = $1 FOR UPDATE")
        .await?;
    if let Some(row) = tx.query_opt(&stmt, &[&e.id]).await? {
        let state: &str = row.try_get("state")?;
        if state != ElevationState::Pending.as_str() {
            return Ok(Resolved::AlreadyResolved(Box::new(elevation_row(&row)?)));
        }
    }
    if let Some(c) = &count {
        let stmt = tx
            .prepare_cached(
                "SELECT count(*) FROM auto_approvals WHERE agent_id = $1 AND rule = $2 AND at_ms > $3",
            )
            .await?;
        let since = unix_ms(c.now) - i64::try_from(c.window.as_millis()).unwrap_or(i64::MAX);
        let n: i64 = tx
            .query_one(&stmt, &[&c.agent_id, &c.rule, &since])
            .await?
            .try_get(0)?;
        if n >= i64::from(c.max_per_hour) {
            return Ok(Resolved::LimitReached);
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO auto_approvals (agent_id, rule, at_ms) VALUES ($1, $2, $3)",
            )
            .await?;
        tx.execute(&stmt, &[&c.agent_id, &c.rule, &unix_ms(c.now)])
            .await?;
    }
    if let Some(g) = &grant {
        upsert_grant(&tx, g, seq).await?;
    }
    upsert_elevation(&tx, &e, seq, &writer).await?;
    notify(&tx, seq).await?;
    tx.commit().await?;
    Ok(Resolved::Written)
}

/// An auto-approval counted against its rule's `maxPerHour`, fleet-wide.
#[derive(Debug, Clone)]
pub struct AutoCount {
    pub agent_id: String,
    pub rule: i32,
    pub max_per_hour: u32,
    pub window: Duration,
    pub now: SystemTime,
}

impl StateStore for PgStore {
    fn load_live(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError> {
        let (e, g, _) = self.load_live_at()?;
        Ok((e, g))
    }

    fn create_elevation(&self, e: &Elevation) -> Result<(), StoreError> {
        let e = e.clone();
        self.run(move |pool, writer| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let seq = next_seq(&tx).await?;
            let exists = tx
                .query_opt("SELECT 1 FROM elevations WHERE id = $1", &[&e.id])
                .await?;
            if exists.is_some() {
                return Err(StoreError::Duplicate(e.id.clone()));
            }
            upsert_elevation(&tx, &e, seq, &writer).await?;
            notify(&tx, seq).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn resolve(&self, e: &Elevation, grant: Option<&Grant>) -> Result<Resolved, StoreError> {
        let (e, grant) = (e.clone(), grant.cloned());
        self.run(move |pool, writer| resolve_tx(pool, writer, e, grant, None))
    }

    fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let g = g.clone();
        self.run(move |pool, _| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let seq = next_seq(&tx).await?;
            upsert_grant(&tx, &g, seq).await?;
            notify(&tx, seq).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn add_approval(
        &self,
        id: &str,
        approval: &ApprovalRecord,
    ) -> Result<Option<Elevation>, StoreError> {
        let id = id.to_owned();
        let approval = approval.clone();
        self.run(move |pool, writer| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            // The sequence row first, as every writer takes it.
            let seq = next_seq(&tx).await?;
            let stmt = tx
                .prepare_cached("SELECT body, waiters FROM elevations WHERE id = $1 FOR UPDATE")
                .await?;
            let Some(row) = tx.query_opt(&stmt, &[&id]).await? else {
                return Ok(None);
            };
            let mut e = elevation_row(&row)?;
            if !e.state.is_pending() || has_approved(&e, &approval.by) {
                return Ok(Some(e));
            }
            e.approvals.push(approval);
            let body = serde_json::to_string(&e)?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE elevations SET body = $2, seq = $3, writer = $4, updated_ms = $5
                     WHERE id = $1 AND state = 'PENDING'",
                )
                .await?;
            tx.execute(
                &stmt,
                &[&id, &body, &seq, &&*writer, &unix_ms(SystemTime::now())],
            )
            .await?;
            notify(&tx, seq).await?;
            tx.commit().await?;
            Ok(Some(e))
        })
    }

    fn elevation(&self, id: &str) -> Result<Option<Elevation>, StoreError> {
        let id = id.to_owned();
        self.run(move |pool, _| async move {
            let client = pool.get().await?;
            let stmt = client
                .prepare_cached("SELECT body, waiters FROM elevations WHERE id = $1")
                .await?;
            client
                .query_opt(&stmt, &[&id])
                .await?
                .map(|r| elevation_row(&r))
                .transpose()
        })
    }

    fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        let id = id.to_owned();
        self.run(move |pool, _| async move {
            let client = pool.get().await?;
            let stmt = client
                .prepare_cached("SELECT body, uses, reserved FROM grants WHERE id = $1")
                .await?;
            client
                .query_opt(&stmt, &[&id])
                .await?
                .map(|r| grant_row(&r))
                .transpose()
        })
    }

    fn elevations(
        &self,
        query: &ElevationQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Elevation>, StoreError> {
        let mut filters = Vec::new();
        let mut params: Params = Vec::new();
        if let Some(state) = query.state {
            params.push(Box::new(state.as_str().to_owned()));
            filters.push(format!("state = ${}", params.len()));
        }
        if let Some(p) = &query.principal_id {
            params.push(Box::new(p.clone()));
            filters.push(format!("principal_id = ${}", params.len()));
        }
        if let Some(ids) = &query.agent_ids {
            params.push(Box::new(ids.clone()));
            filters.push(format!("agent_id = ANY(${})", params.len()));
        }
        self.page(
            "elevations",
            ELEVATION_COLUMNS,
            (filters, params),
            after,
            limit,
            query.newest_first,
            elevation_row,
            elevation_key,
        )
    }

    fn grants(
        &self,
        query: &GrantQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Grant>, StoreError> {
        let mut filters = Vec::new();
        let mut params: Params = Vec::new();
        if query.active_only {
            filters.push("state = 'ACTIVE'".to_owned());
        }
        if let Some(p) = &query.principal_id {
            params.push(Box::new(p.clone()));
            filters.push(format!("principal_id = ${}", params.len()));
        }
        if let Some(ids) = &query.agent_ids {
            params.push(Box::new(ids.clone()));
            filters.push(format!("agent_id = ANY(${})", params.len()));
        }
        self.page(
            "grants",
            GRANT_COLUMNS,
            (filters, params),
            after,
            limit,
            query.newest_first,
            grant_row,
            grant_key,
        )
    }

    fn count_elevations(&self) -> Result<usize, StoreError> {
        Ok(self.row_counts()?.0)
    }

    fn purge(&self, before: SystemTime) -> Result<Purged, StoreError> {
        let before = unix_ms(before);
        self.run(move |pool, _| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let grants = tx
                .execute(
                    "DELETE FROM grants WHERE state = 'ENDED' AND ended_ms < $1",
                    &[&before],
                )
                .await?;
            // An approval stays while its grant is active.
            let elevations = tx
                .execute(
                    "DELETE FROM elevations WHERE state <> 'PENDING' AND updated_ms < $1
                       AND id NOT IN (SELECT elevation_id FROM grants WHERE state = 'ACTIVE')",
                    &[&before],
                )
                .await?;
            let audit = tx
                .execute("DELETE FROM audit WHERE at_ms < $1", &[&before])
                .await?;
            // What counts against maxPerHour or a rate is at most an hour old.
            let hour_ago = unix_ms(SystemTime::now()) - 3_600_000;
            tx.execute("DELETE FROM auto_approvals WHERE at_ms < $1", &[&hour_ago])
                .await?;
            tx.execute("DELETE FROM rate_buckets WHERE at_ms < $1", &[&hour_ago])
                .await?;
            tx.commit().await?;
            let n = |x: u64| usize::try_from(x).unwrap_or(usize::MAX);
            Ok(Purged {
                elevations: n(elevations),
                grants: n(grants),
                audit: n(audit),
            })
        })
    }

    fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let event = serde_json::to_string(event)?;
        self.run(move |pool, _| async move {
            let client = pool.get().await?;
            let stmt = client
                .prepare_cached("INSERT INTO audit (at_ms, event) VALUES ($1, $2)")
                .await?;
            client
                .execute(&stmt, &[&unix_ms(SystemTime::now()), &event])
                .await?;
            Ok(())
        })
    }

    fn audit_events(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        self.run(|pool, _| async move {
            let client = pool.get().await?;
            let rows = client
                .query("SELECT event FROM audit ORDER BY seq", &[])
                .await?;
            rows.iter()
                .map(|r| Ok(serde_json::from_str(r.try_get::<_, &str>(0)?)?))
                .collect()
        })
    }

    fn freeze(&self) -> Result<Option<FreezeState>, StoreError> {
        self.run(|pool, _| async move {
            let client = pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT body FROM rampart_settings WHERE name = 'freeze'",
                    &[],
                )
                .await?;
            match row {
                Some(r) => Ok(Some(serde_json::from_str(r.try_get::<_, &str>(0)?)?)),
                None => Ok(None),
            }
        })
    }

    fn put_freeze(&self, state: &FreezeState) -> Result<(), StoreError> {
        let body = serde_json::to_string(state)?;
        self.run(move |pool, _| async move {
            let client = pool.get().await?;
            client
                .execute(
                    "INSERT INTO rampart_settings (name, body) VALUES ('freeze', $1)
                     ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                    &[&body],
                )
                .await?;
            Ok(())
        })
    }

    fn shared(&self) -> Option<&dyn SharedState> {
        Some(self)
    }
}

impl SharedState for PgStore {
    fn load_live_at(&self) -> Result<(Vec<Elevation>, Vec<Grant>, i64), StoreError> {
        self.run(|pool, _| async move {
            let mut client = pool.get().await?;
            // One snapshot for the three reads.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let seq: i64 = tx
                .query_one("SELECT seq FROM rampart_changes", &[])
                .await?
                .try_get(0)?;
            let elevations = tx
                .query(
                    "SELECT body, waiters FROM elevations WHERE state = 'PENDING' ORDER BY created_ms, id",
                    &[],
                )
                .await?
                .iter()
                .map(elevation_row)
                .collect::<Result<Vec<_>, _>>()?;
            let grants = tx
                .query(
                    "SELECT body, uses, reserved FROM grants WHERE state = 'ACTIVE' ORDER BY created_ms, id",
                    &[],
                )
                .await?
                .iter()
                .map(grant_row)
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit().await?;
            Ok((elevations, grants, seq))
        })
    }

    fn changes(&self, since: i64) -> Result<Changes, StoreError> {
        self.run(move |pool, writer| async move {
            let client = pool.get().await?;
            // Grants sort before elevations of the same change: an
            // approval's grant is known before its waiters are answered.
            let stmt = client
                .prepare_cached(
                    "SELECT seq, 0 AS kind, body, waiters, 0 AS uses, 0 AS reserved, writer
                       FROM elevations WHERE seq > $1
                     UNION ALL
                     SELECT seq, -1 AS kind, body, 0, uses, reserved, '' FROM grants WHERE seq > $1
                     ORDER BY seq, kind LIMIT $2",
                )
                .await?;
            let rows = client.query(&stmt, &[&since, &CHANGES_PAGE]).await?;
            let full = rows.len() as i64 >= CHANGES_PAGE;
            let last = rows
                .last()
                .map(|r| r.try_get::<_, i64>("seq"))
                .transpose()?;
            // A full page may have cut a change in two: its rows are read
            // again next time.
            let through = match last {
                Some(last) if full && last - 1 > since => last - 1,
                Some(last) => last,
                None => since,
            };
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                if seq > through {
                    break;
                }
                let kind: i32 = row.try_get("kind")?;
                if kind == 0 {
                    let mine = row.try_get::<_, &str>("writer")? == &*writer;
                    items.push(Change::Elevation(Box::new(elevation_row(row)?), mine));
                } else {
                    items.push(Change::Grant(Box::new(grant_row(row)?)));
                }
            }
            Ok(Changes { items, through })
        })
    }

    fn changed(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    fn open_elevation(&self, e: &Elevation, limits: &OpenLimits) -> Result<Opened, StoreError> {
        let (e, limits) = (e.clone(), limits.clone());
        self.run(move |pool, writer| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let seq = next_seq(&tx).await?;
            let key = pending_key_text(&e);
            let stmt = tx
                .prepare_cached(
                    "UPDATE elevations SET waiters = waiters + 1, seq = $2
                     WHERE pending_key = $1 AND state = 'PENDING' RETURNING body, waiters",
                )
                .await?;
            if let Some(row) = tx.query_opt(&stmt, &[&key, &seq]).await? {
                let joined = elevation_row(&row)?;
                notify(&tx, seq).await?;
                tx.commit().await?;
                return Ok(Opened::Joined(Box::new(joined)));
            }
            let stmt = tx
                .prepare_cached(
                    "SELECT count(*), count(*) FILTER (WHERE principal_key = $1)
                     FROM elevations WHERE state = 'PENDING'",
                )
                .await?;
            let pkey = principal_key(&e.principal_id).into_owned();
            let row = tx.query_one(&stmt, &[&pkey]).await?;
            let all = usize::try_from(row.try_get::<_, i64>(0)?).unwrap_or(usize::MAX);
            let mine = usize::try_from(row.try_get::<_, i64>(1)?).unwrap_or(usize::MAX);
            if all >= limits.max_pending {
                return Ok(Opened::PendingLimit(all));
            }
            if mine >= limits.max_per_principal {
                return Ok(Opened::TooManyPending(mine));
            }
            let now = e.created_at;
            let stmt = tx
                .prepare_cached(
                    "SELECT tokens, at_ms FROM rate_buckets WHERE agent_id = $1 FOR UPDATE",
                )
                .await?;
            let mut bucket = match tx.query_opt(&stmt, &[&e.agent_id]).await? {
                Some(row) => Bucket::from_parts(row.try_get(0)?, from_ms(row.try_get(1)?)),
                None => Bucket::full(limits.per_minute, now),
            };
            if let Err(retry) = bucket.check(limits.per_minute, now) {
                return Ok(Opened::RateLimited(retry));
            }
            bucket.take(limits.per_minute, now);
            let (tokens, at) = bucket.parts();
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO rate_buckets (agent_id, tokens, at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (agent_id) DO UPDATE SET tokens = $2, at_ms = $3",
                )
                .await?;
            tx.execute(&stmt, &[&e.agent_id, &tokens, &unix_ms(at)])
                .await?;
            let mut created = e.clone();
            created.waiters = 1;
            let stmt = tx
                .prepare_cached("SELECT 1 FROM elevations WHERE id = $1")
                .await?;
            if tx.query_opt(&stmt, &[&created.id]).await?.is_some() {
                return Err(StoreError::Duplicate(created.id.clone()));
            }
            upsert_elevation(&tx, &created, seq, &writer).await?;
            notify(&tx, seq).await?;
            tx.commit().await?;
            Ok(Opened::Created)
        })
    }

    fn join(&self, id: &str) -> Result<Option<Elevation>, StoreError> {
        self.waiters(id, 1)
    }

    fn leave(&self, id: &str, n: u32) -> Result<Option<Elevation>, StoreError> {
        self.waiters(id, -int(n))
    }

    fn resolve_counted(
        &self,
        e: &Elevation,
        grant: Option<&Grant>,
        count: &AutoCount,
    ) -> Result<Resolved, StoreError> {
        let (e, grant, count) = (e.clone(), grant.cloned(), count.clone());
        self.run(move |pool, writer| resolve_tx(pool, writer, e, grant, Some(count)))
    }

    fn auto_approvals(
        &self,
        agent_id: &str,
        since: SystemTime,
    ) -> Result<Vec<(usize, SystemTime)>, StoreError> {
        let (agent_id, since) = (agent_id.to_owned(), unix_ms(since));
        self.run(move |pool, _| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "SELECT rule, at_ms FROM auto_approvals WHERE agent_id = $1 AND at_ms > $2 ORDER BY at_ms",
                    &[&agent_id, &since],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        usize::try_from(r.try_get::<_, i32>(0)?).unwrap_or(usize::MAX),
                        from_ms(r.try_get(1)?),
                    ))
                })
                .collect()
        })
    }

    fn reserve_uses(&self, grant_id: &str, block: u32) -> Result<Reservation, StoreError> {
        let (id, block) = (grant_id.to_owned(), int(block));
        self.run(move |pool, _| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let seq = next_seq(&tx).await?;
            let stmt = tx
                .prepare_cached(
                    "SELECT reserved, max_uses FROM grants
                     WHERE id = $1 AND state = 'ACTIVE' AND max_uses > 0 FOR UPDATE",
                )
                .await?;
            let Some(row) = tx.query_opt(&stmt, &[&id]).await? else {
                return Ok(Reservation::default());
            };
            let (reserved, max): (i32, i32) = (row.try_get(0)?, row.try_get(1)?);
            let k = block.min(max - reserved).max(0);
            if k > 0 {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE grants SET reserved = reserved + $2, seq = $3
                         WHERE id = $1 AND reserved + $2 <= max_uses",
                    )
                    .await?;
                if tx.execute(&stmt, &[&id, &k, &seq]).await? != 1 {
                    return Ok(Reservation::default());
                }
                notify(&tx, seq).await?;
                tx.commit().await?;
            }
            Ok(Reservation {
                reserved: u32::try_from(k).unwrap_or(0),
                exhausted: reserved + k >= max,
            })
        })
    }

    fn add_uses(&self, grant_id: &str, n: u32) -> Result<Option<Grant>, StoreError> {
        let (id, n) = (grant_id.to_owned(), int(n));
        self.run(move |pool, _| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let seq = next_seq(&tx).await?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE grants SET uses = uses + $2, seq = $3 WHERE id = $1
                     RETURNING body, uses, reserved",
                )
                .await?;
            let row = tx.query_opt(&stmt, &[&id, &n, &seq]).await?;
            let grant = row.as_ref().map(grant_row).transpose()?;
            notify(&tx, seq).await?;
            tx.commit().await?;
            Ok(grant)
        })
    }

    fn end_grant(&self, g: &Grant) -> Result<bool, StoreError> {
        let g = g.clone();
        self.run(move |pool, _| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let seq = next_seq(&tx).await?;
            let body = serde_json::to_string(&g)?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE grants SET state = 'ENDED', ended_ms = $2, seq = $3, body = $4
                     WHERE id = $1 AND state = 'ACTIVE'",
                )
                .await?;
            let ended = tx
                .execute(&stmt, &[&g.id, &g.ended_at.map(unix_ms), &seq, &body])
                .await?;
            if ended == 0 {
                return Ok(false);
            }
            notify(&tx, seq).await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}

impl PgStore {
    /// Adds `delta` waiters to a pending elevation: it as it stands after,
    /// `None` once it is no longer pending.
    fn waiters(&self, id: &str, delta: i32) -> Result<Option<Elevation>, StoreError> {
        let id = id.to_owned();
        self.run(move |pool, _| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let seq = next_seq(&tx).await?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE elevations SET waiters = GREATEST(waiters + $2, 0), seq = $3
                     WHERE id = $1 AND state = 'PENDING' RETURNING body, waiters",
                )
                .await?;
            let Some(row) = tx.query_opt(&stmt, &[&id, &delta, &seq]).await? else {
                return Ok(None);
            };
            let e = elevation_row(&row)?;
            notify(&tx, seq).await?;
            tx.commit().await?;
            Ok(Some(e))
        })
    }
}

/// What [`SharedState::reserve_uses`] got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Uses newly reserved for this replica (0: none were left).
    pub reserved: u32,
    /// Every use of the grant is reserved now, by some replica.
    pub exhausted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_requests_share_a_pending_key_and_others_do_not() {
        use crate::elevation::policy::fixture::{elevation, AGENT_R, RESTART, VM};
        let a = elevation(AGENT_R, "reviewer", RESTART, VM);
        let mut b = a.clone();
        b.id = "another".into();
        b.action = RESTART.to_ascii_uppercase();
        assert_eq!(pending_key_text(&a), pending_key_text(&b));
        let mut c = a.clone();
        c.attributes.insert("k".into(), "v".into());
        assert_ne!(pending_key_text(&a), pending_key_text(&c));
        let mut d = a.clone();
        d.data_action = !a.data_action;
        assert_ne!(pending_key_text(&a), pending_key_text(&d));
    }

    #[test]
    fn connection_failures_read_as_unavailable() {
        assert!(StoreError::Unavailable("x".into())
            .to_string()
            .starts_with("the state database is unreachable: "));
    }
}
