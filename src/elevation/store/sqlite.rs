//! The state store under `--state-dir`: SQLite (rusqlite, bundled), in WAL
//! mode with `synchronous=FULL`, so a write that returned survives a crash
//! — the broker writes a grant before it acknowledges an approval.
//!
//! SQLite over redb: one file an operator can open with `sqlite3` to audit
//! what was approved, by whom, and why; bundled, so no system library.
//! Each row is the record as JSON, with the columns listings filter and
//! page on (state as the API spells it, creation time, principal, agent).
//!
//! The file is rampart's or it is refused: a new database is created only
//! where no file exists; an existing one must carry rampart's
//! `application_id` (or, written before it had one, rampart's tables) and a
//! `user_version` this rampart knows. [`MIGRATIONS`] bring an older schema
//! up to date, each in one transaction. The directory is created `0700` and
//! the database file is kept `0600` (SQLite gives its `-wal` and `-shm`
//! files the database's mode), whatever the umask.

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{Cursor, ElevationQuery, GrantQuery, Page, Purged, Resolved, StateStore, StoreError};
use crate::elevation::events::AuditEvent;
use crate::elevation::policy::approval::has_approved;
use crate::elevation::policy::freeze::FreezeState;
use crate::elevation::{ApprovalRecord, Elevation, ElevationState, Grant};

pub struct Store {
    conn: Mutex<Connection>,
}

/// The file name of the database under `--state-dir`.
pub const DB_FILE: &str = "rampart.db";

/// `PRAGMA application_id` of a rampart state store ("RAMP").
const APPLICATION_ID: i64 = 0x5241_4d50;

/// The schema version this rampart writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `n` (from 1) brings schema version `n - 1` to `n`.
const MIGRATIONS: [&str; 3] = [
    // 1: the first schema (written before versioning, as `user_version` 0).
    "CREATE TABLE IF NOT EXISTS elevations (
         id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_ms INTEGER NOT NULL, body TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS grants (
         id TEXT PRIMARY KEY, state TEXT NOT NULL, expires_ms INTEGER NOT NULL, body TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS audit (
         seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, event TEXT NOT NULL);",
    // 2: the columns listings page and filter on, and purge by.
    "ALTER TABLE elevations ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE elevations ADD COLUMN principal_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE elevations ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
     UPDATE elevations SET
         created_ms = json_extract(body, '$.created_at.secs_since_epoch') * 1000
                    + json_extract(body, '$.created_at.nanos_since_epoch') / 1000000,
         principal_id = json_extract(body, '$.principal_id'),
         agent_id = json_extract(body, '$.agent_id');
     UPDATE elevations SET state = upper(state) WHERE state IN ('Pending', 'Approved', 'Denied', 'Expired', 'Cancelled');
     UPDATE elevations SET state = 'NOT_NEEDED' WHERE state = 'NotNeeded';
     ALTER TABLE grants ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE grants ADD COLUMN ended_ms INTEGER;
     ALTER TABLE grants ADD COLUMN principal_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE grants ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE grants ADD COLUMN elevation_id TEXT NOT NULL DEFAULT '';
     UPDATE grants SET
         created_ms = json_extract(body, '$.created_at.secs_since_epoch') * 1000
                    + json_extract(body, '$.created_at.nanos_since_epoch') / 1000000,
         ended_ms = json_extract(body, '$.ended_at.secs_since_epoch') * 1000
                  + json_extract(body, '$.ended_at.nanos_since_epoch') / 1000000,
         principal_id = json_extract(body, '$.principal_id'),
         agent_id = json_extract(body, '$.agent_id'),
         elevation_id = json_extract(body, '$.elevation_id'),
         state = upper(state);
     CREATE INDEX elevations_by_creation ON elevations (created_ms, id);
     CREATE INDEX elevations_by_state ON elevations (state, created_ms, id);
     CREATE INDEX grants_by_creation ON grants (created_ms, id);
     CREATE INDEX grants_by_state ON grants (state, created_ms, id);
     CREATE INDEX audit_by_time ON audit (at_ms);",
    // 3: settings that outlive restarts (the freeze switch), one JSON
    // document per name.
    "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, body TEXT NOT NULL);",
];

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn insert_elevation(conn: &Connection, e: &Elevation) -> Result<(), StoreError> {
    let body = serde_json::to_string(e)?;
    let inserted = conn.execute(
        "INSERT INTO elevations (id, state, updated_ms, body, created_ms, principal_id, agent_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO NOTHING",
        params![
            e.id,
            e.state.as_str(),
            unix_ms(SystemTime::now()),
            body,
            unix_ms(e.created_at),
            e.principal_id,
            e.agent_id
        ],
    )?;
    if inserted == 0 {
        return Err(StoreError::Duplicate(e.id.clone()));
    }
    Ok(())
}

fn upsert_elevation(conn: &Connection, e: &Elevation) -> Result<(), StoreError> {
    let body = serde_json::to_string(e)?;
    conn.execute(
        "INSERT INTO elevations (id, state, updated_ms, body, created_ms, principal_id, agent_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET state = ?2, updated_ms = ?3, body = ?4",
        params![
            e.id,
            e.state.as_str(),
            unix_ms(SystemTime::now()),
            body,
            unix_ms(e.created_at),
            e.principal_id,
            e.agent_id
        ],
    )?;
    Ok(())
}

/// Writes a grant as it stands; an ended row stays ended.
fn upsert_grant(conn: &Connection, g: &Grant) -> Result<(), StoreError> {
    let body = serde_json::to_string(g)?;
    conn.execute(
        "INSERT INTO grants (id, state, expires_ms, body, created_ms, ended_ms, principal_id, agent_id, elevation_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(id) DO UPDATE SET state = ?2, expires_ms = ?3, body = ?4, ended_ms = ?6
         WHERE grants.state <> 'ENDED'",
        params![
            g.id,
            g.state.as_str(),
            unix_ms(g.expires_at),
            body,
            unix_ms(g.created_at),
            g.ended_at.map(unix_ms),
            g.principal_id,
            g.agent_id,
            g.elevation_id
        ],
    )?;
    Ok(())
}

/// The most rows one query returns (SQLite's LIMIT is a signed 64-bit
/// integer).
const MAX_ROWS: usize = i32::MAX as usize;

/// `column IN (the JSON array ?n)`, for the agent filter: one parameter
/// however many agents.
fn agent_filter(ids: &Option<Vec<String>>, n: usize) -> Option<(String, String)> {
    let ids = ids.as_ref()?;
    Some((
        format!("agent_id IN (SELECT value FROM json_each(?{n}))"),
        serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()),
    ))
}

/// Runs a paged listing: `filters` and their values, keyset paging on
/// `(created_ms, id)`, one row more than the page to know if one follows.
fn page<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    table: &str,
    (mut filters, mut values): (Vec<String>, Vec<rusqlite::types::Value>),
    after: Option<&Cursor>,
    limit: usize,
    newest_first: bool,
    key: impl Fn(&T) -> Cursor,
) -> Result<Page<T>, StoreError> {
    let (beyond, order) = if newest_first {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some(c) = after {
        let n = values.len();
        filters.push(format!(
            "(created_ms {beyond} ?{} OR (created_ms = ?{} AND id {beyond} ?{}))",
            n + 1,
            n + 1,
            n + 2
        ));
        values.push(c.created_ms.into());
        values.push(c.id.clone().into());
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    let sql = format!(
        "SELECT body FROM {table} {filter} ORDER BY created_ms {order}, id {order} LIMIT {}",
        limit.min(MAX_ROWS).saturating_add(1)
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut items = Vec::new();
    for body in stmt.query_map(rusqlite::params_from_iter(values), |row| {
        row.get::<_, String>(0)
    })? {
        items.push(serde_json::from_str::<T>(&body?)?);
    }
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(&key)
    } else {
        None
    };
    Ok(Page { items, next })
}

impl Store {
    /// Opens the store in `dir`, creating the directory (`0700`) and the
    /// database (`0600`) only when they do not exist; an existing file must
    /// be a rampart state store.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let dir_error = |source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        };
        if !dir.exists() {
            create_private_dir(dir).map_err(dir_error)?;
        }
        let path = dir.join(DB_FILE);
        let fresh = !path.exists();
        if fresh {
            create_private_file(&path).map_err(|source| StoreError::Dir {
                path: path.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        let store = Store::init(conn, fresh, &path.display().to_string())?;
        keep_private(&path);
        Ok(store)
    }

    /// A store that lives only as long as the process (no `--state-dir`).
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?, true, ":memory:")
    }

    fn init(conn: Connection, fresh: bool, path: &str) -> Result<Store, StoreError> {
        let refuse = |problem: String| StoreError::NotRampart {
            path: path.to_owned(),
            problem,
        };
        let application_id: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let mut version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if application_id != 0 && application_id != APPLICATION_ID {
            return Err(refuse(format!(
                "is another program's SQLite database (application_id {application_id:#x})"
            )));
        }
        if version > SCHEMA_VERSION {
            return Err(refuse(format!(
                "has schema version {version}, written by a newer rampart; this one reads up to {SCHEMA_VERSION}"
            )));
        }
        if version == 0 && !fresh {
            // Written before versioning, or not rampart's at all.
            let tables: i64 = conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('elevations', 'grants', 'audit')",
                [],
                |r| r.get(0),
            )?;
            if tables != 3 {
                return Err(refuse(
                    "has no rampart schema (an empty or foreign file)".to_owned(),
                ));
            }
            version = 1;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store {
            conn: Mutex::new(conn),
        };
        store.migrate(version)?;
        Ok(store)
    }

    /// Applies the migrations after `version`, each with its version bump
    /// in one transaction.
    fn migrate(&mut self, version: i64) -> Result<(), StoreError> {
        let conn = self.conn.get_mut().unwrap_or_else(|e| e.into_inner());
        for (n, sql) in MIGRATIONS.iter().enumerate() {
            let to = n as i64 + 1;
            if to <= version {
                continue;
            }
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", to)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.commit()?;
        }
        if version == SCHEMA_VERSION {
            conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        }
        Ok(())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes an elevation as it stands, whatever was stored before (tests
    /// and tools; the broker creates and resolves).
    pub fn put_elevation(&self, e: &Elevation) -> Result<(), StoreError> {
        upsert_elevation(&self.conn(), e)
    }

    /// Every stored elevation and grant (tests and tools: the broker loads
    /// only what is live).
    pub fn load(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError> {
        let elevations = self.elevations(&ElevationQuery::default(), None, MAX_ROWS)?;
        let grants = self.grants(&GrantQuery::default(), None, MAX_ROWS)?;
        Ok((elevations.items, grants.items))
    }

    /// How many rows each table holds: (elevations, grants, audit).
    pub fn row_counts(&self) -> Result<(usize, usize, usize), StoreError> {
        let conn = self.conn();
        let count = |table: &str| -> Result<usize, StoreError> {
            let n: i64 =
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
            Ok(usize::try_from(n).unwrap_or(0))
        };
        Ok((count("elevations")?, count("grants")?, count("audit")?))
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // The umask cannot widen 0700, but an odd one could narrow it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(drop)
}

/// Keeps the database and its WAL files `0600`, as SQLite creates the
/// latter with the former's mode.
fn keep_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut files = vec![path.to_path_buf()];
        for suffix in ["-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            files.push(p.into());
        }
        for file in files.iter().filter(|f| f.exists()) {
            if let Err(e) = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
                tracing::warn!("cannot make {} private: {e}", file.display());
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
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

impl StateStore for Store {
    fn load_live(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError> {
        let pending = ElevationQuery {
            state: Some(ElevationState::Pending),
            ..ElevationQuery::default()
        };
        let active = GrantQuery {
            active_only: true,
            ..GrantQuery::default()
        };
        Ok((
            self.elevations(&pending, None, MAX_ROWS)?.items,
            self.grants(&active, None, MAX_ROWS)?.items,
        ))
    }

    fn create_elevation(&self, e: &Elevation) -> Result<(), StoreError> {
        insert_elevation(&self.conn(), e)
    }

    fn resolve(&self, e: &Elevation, grant: Option<&Grant>) -> Result<Resolved, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let stored: Option<String> = tx
            .query_row(
                "SELECT body FROM elevations WHERE id = ?1",
                params![e.id],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(body) = stored {
            let stored: Elevation = serde_json::from_str(&body)?;
            if !stored.state.is_pending() {
                return Ok(Resolved::AlreadyResolved(Box::new(stored)));
            }
        }
        if let Some(g) = grant {
            upsert_grant(&tx, g)?;
        }
        upsert_elevation(&tx, e)?;
        tx.commit()?;
        Ok(Resolved::Written)
    }

    fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        upsert_grant(&self.conn(), g)
    }

    fn add_approval(
        &self,
        id: &str,
        approval: &ApprovalRecord,
    ) -> Result<Option<Elevation>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let stored: Option<String> = tx
            .query_row(
                "SELECT body FROM elevations WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        let Some(body) = stored else {
            return Ok(None);
        };
        let mut e: Elevation = serde_json::from_str(&body)?;
        if !e.state.is_pending() || has_approved(&e, &approval.by) {
            return Ok(Some(e));
        }
        e.approvals.push(approval.clone());
        upsert_elevation(&tx, &e)?;
        tx.commit()?;
        Ok(Some(e))
    }

    fn elevation(&self, id: &str) -> Result<Option<Elevation>, StoreError> {
        let body: Option<String> = self
            .conn()
            .query_row(
                "SELECT body FROM elevations WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        let body: Option<String> = self
            .conn()
            .query_row(
                "SELECT body FROM grants WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    fn elevations(
        &self,
        query: &ElevationQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Elevation>, StoreError> {
        let mut filters = Vec::new();
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(state) = query.state {
            values.push(state.as_str().to_owned().into());
            filters.push(format!("state = ?{}", values.len()));
        }
        if let Some(p) = &query.principal_id {
            values.push(p.clone().into());
            filters.push(format!("principal_id = ?{}", values.len()));
        }
        if let Some((filter, ids)) = agent_filter(&query.agent_ids, values.len() + 1) {
            values.push(ids.into());
            filters.push(filter);
        }
        page(
            &self.conn(),
            "elevations",
            (filters, values),
            after,
            limit,
            query.newest_first,
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
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if query.active_only {
            filters.push("state = 'ACTIVE'".to_owned());
        }
        if let Some(p) = &query.principal_id {
            values.push(p.clone().into());
            filters.push(format!("principal_id = ?{}", values.len()));
        }
        if let Some((filter, ids)) = agent_filter(&query.agent_ids, values.len() + 1) {
            values.push(ids.into());
            filters.push(filter);
        }
        page(
            &self.conn(),
            "grants",
            (filters, values),
            after,
            limit,
            query.newest_first,
            grant_key,
        )
    }

    fn count_elevations(&self) -> Result<usize, StoreError> {
        Ok(self.row_counts()?.0)
    }

    fn purge(&self, before: SystemTime) -> Result<Purged, StoreError> {
        let before = unix_ms(before);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let grants = tx.execute(
            "DELETE FROM grants WHERE state = 'ENDED' AND ended_ms < ?1",
            params![before],
        )?;
        // An approval stays while its grant is active.
        let elevations = tx.execute(
            "DELETE FROM elevations WHERE state <> 'PENDING' AND updated_ms < ?1
               AND id NOT IN (SELECT elevation_id FROM grants WHERE state = 'ACTIVE')",
            params![before],
        )?;
        let audit = tx.execute("DELETE FROM audit WHERE at_ms < ?1", params![before])?;
        tx.commit()?;
        Ok(Purged {
            elevations,
            grants,
            audit,
        })
    }

    fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let event = serde_json::to_string(event)?;
        self.conn().execute(
            "INSERT INTO audit (at_ms, event) VALUES (?1, ?2)",
            params![unix_ms(SystemTime::now()), event],
        )?;
        Ok(())
    }

    fn audit_events(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT event FROM audit ORDER BY seq")?;
        let mut out = Vec::new();
        for event in stmt.query_map([], |row| row.get::<_, String>(0))? {
            out.push(serde_json::from_str(&event?)?);
        }
        Ok(out)
    }

    fn freeze(&self) -> Result<Option<FreezeState>, StoreError> {
        let body: Option<String> = self
            .conn()
            .query_row("SELECT body FROM settings WHERE name = 'freeze'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    fn put_freeze(&self, state: &FreezeState) -> Result<(), StoreError> {
        let body = serde_json::to_string(state)?;
        self.conn().execute(
            "INSERT INTO settings (name, body) VALUES ('freeze', ?1)
             ON CONFLICT(name) DO UPDATE SET body = excluded.body",
            params![body],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::elevation::events::{ElevationEvent, ElevationEventKind};
    use crate::elevation::policy::fixture::{elevation, AGENT_R, RESTART, VM};
    use crate::elevation::policy::lifecycle::{new_grant, resolve};
    use crate::elevation::GrantState;

    fn store() -> Store {
        Store::in_memory().unwrap_or_else(|e| panic!("{e}"))
    }

    fn state_column(store: &Store, table: &str, id: &str) -> String {
        store
            .conn()
            .query_row(
                &format!("SELECT state FROM {table} WHERE id = ?1"),
                params![id],
                |row| row.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn approvals_are_added_once_per_approver_and_only_while_pending() {
        let store = store();
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let approval = |by: &str| ApprovalRecord {
            by: by.into(),
            at: SystemTime::now(),
            duration: None,
            max_uses: 0,
            comment: None,
            bind: None,
        };
        assert!(store
            .add_approval(&e.id, &approval("oncall"))
            .unwrap_or_else(|err| panic!("{err}"))
            .is_none());
        store
            .create_elevation(&e)
            .unwrap_or_else(|err| panic!("{err}"));
        for by in ["oncall", "oncall", "oncall2"] {
            store
                .add_approval(&e.id, &approval(by))
                .unwrap_or_else(|err| panic!("{err}"));
        }
        let stored = store
            .elevation(&e.id)
            .unwrap_or_else(|err| panic!("{err}"))
            .unwrap_or_else(|| panic!("gone"));
        let by: Vec<&str> = stored.approvals.iter().map(|a| a.by.as_str()).collect();
        assert_eq!(by, ["oncall", "oncall2"]);
        // Resolved: nothing more is added.
        resolve(
            &mut e,
            ElevationState::Denied,
            None,
            "oncall",
            None,
            SystemTime::now(),
        );
        store
            .resolve(&e, None)
            .unwrap_or_else(|err| panic!("{err}"));
        let after = store
            .add_approval(&e.id, &approval("third"))
            .unwrap_or_else(|err| panic!("{err}"))
            .unwrap_or_else(|| panic!("gone"));
        assert_eq!(after.state, ElevationState::Denied);
        assert!(after.approvals.is_empty());
    }

    #[test]
    fn an_approval_writes_the_grant_and_the_elevation_together() {
        let store = store();
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        store
            .create_elevation(&e)
            .unwrap_or_else(|err| panic!("{err}"));
        let now = SystemTime::now();
        let g = new_grant(&e, "oncall", Duration::from_secs(60), 0, now);
        resolve(
            &mut e,
            ElevationState::Approved,
            Some(g.clone()),
            "oncall",
            None,
            now,
        );
        let written = store
            .resolve(&e, Some(&g))
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(matches!(written, Resolved::Written));
        let (elevations, grants) = Store::load(&store).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(elevations.len(), 1);
        assert_eq!(elevations[0].state, ElevationState::Approved);
        assert_eq!(grants.len(), 1);
        assert_eq!(
            (grants[0].id.as_str(), grants[0].state),
            (g.id.as_str(), GrantState::Active)
        );
        assert_eq!(state_column(&store, "elevations", &e.id), "APPROVED");
        assert_eq!(state_column(&store, "grants", &g.id), "ACTIVE");
    }

    #[test]
    fn a_second_resolution_writes_nothing_not_even_its_grant() {
        let store = store();
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        store
            .create_elevation(&e)
            .unwrap_or_else(|err| panic!("{err}"));
        let now = SystemTime::now();
        let mut denied = e.clone();
        resolve(
            &mut denied,
            ElevationState::Denied,
            None,
            "viewer",
            None,
            now,
        );
        assert!(matches!(
            store.resolve(&denied, None),
            Ok(Resolved::Written)
        ));

        let g = new_grant(&e, "oncall", Duration::from_secs(60), 0, now);
        resolve(
            &mut e,
            ElevationState::Approved,
            Some(g.clone()),
            "oncall",
            None,
            now,
        );
        assert!(matches!(
            store.resolve(&e, Some(&g)),
            Ok(Resolved::AlreadyResolved(winner)) if winner.state == ElevationState::Denied
                && winner.resolved_by.as_deref() == Some("viewer")
        ));
        let (elevations, grants) = Store::load(&store).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(elevations[0].state, ElevationState::Denied);
        assert!(grants.is_empty(), "the grant of a lost race is not stored");
    }

    #[test]
    fn a_resolution_of_an_unstored_elevation_is_written() {
        let store = store();
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        resolve(
            &mut e,
            ElevationState::Cancelled,
            None,
            "rampart",
            None,
            SystemTime::now(),
        );
        assert!(matches!(store.resolve(&e, None), Ok(Resolved::Written)));
        assert_eq!(state_column(&store, "elevations", &e.id), "CANCELLED");
    }

    /// A state directory holding `rampart.db` as the first rampart wrote
    /// it: no version, the old spellings, one pending elevation and one
    /// active grant.
    fn legacy_dir(e: &Elevation, g: &Grant) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap_or_else(|err| panic!("{err}"));
        conn.execute_batch(MIGRATIONS[0])
            .unwrap_or_else(|err| panic!("{err}"));
        let old = |json: String| {
            json.replace("\"PENDING\"", "\"Pending\"")
                .replace("\"NEEDS_ELEVATION\"", "\"NeedsElevation\"")
                .replace("\"ACTIVE\"", "\"Active\"")
        };
        let body = old(serde_json::to_string(e).unwrap_or_default());
        assert!(body.contains("\"Pending\""), "{body}");
        conn.execute(
            "INSERT INTO elevations (id, state, updated_ms, body) VALUES (?1, 'Pending', 0, ?2)",
            params![e.id, body],
        )
        .unwrap_or_else(|err| panic!("{err}"));
        conn.execute(
            "INSERT INTO grants (id, state, expires_ms, body) VALUES (?1, 'Active', 0, ?2)",
            params![g.id, old(serde_json::to_string(g).unwrap_or_default())],
        )
        .unwrap_or_else(|err| panic!("{err}"));
        dir
    }

    #[test]
    fn the_freeze_switch_is_kept_across_opens_and_after_a_migration() {
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let g = new_grant(&e, "oncall", Duration::from_secs(60), 0, SystemTime::now());
        let dir = legacy_dir(&e, &g);
        let store = Store::open(dir.path()).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(store.freeze().unwrap_or_else(|err| panic!("{err}")), None);
        let frozen = FreezeState::new(true, "admin", "incident", SystemTime::now());
        store
            .put_freeze(&frozen)
            .unwrap_or_else(|err| panic!("{err}"));
        let thawed = FreezeState::new(false, "admin", "over", SystemTime::now());
        store
            .put_freeze(&thawed)
            .unwrap_or_else(|err| panic!("{err}"));
        store
            .put_freeze(&frozen)
            .unwrap_or_else(|err| panic!("{err}"));
        drop(store);
        let store = Store::open(dir.path()).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            store.freeze().unwrap_or_else(|err| panic!("{err}")),
            Some(frozen)
        );
    }

    #[test]
    fn an_unversioned_store_migrates_and_keeps_its_records() {
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let g = new_grant(&e, "oncall", Duration::from_secs(60), 0, SystemTime::now());
        let dir = legacy_dir(&e, &g);
        let store = Store::open(dir.path()).unwrap_or_else(|err| panic!("{err}"));
        let (pending, active) = store.load_live().unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].state, ElevationState::Pending);
        assert_eq!(active.len(), 1);
        assert_eq!(state_column(&store, "grants", &g.id), "ACTIVE");
        let version: i64 = store
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap_or_default();
        assert_eq!(version, SCHEMA_VERSION);
        // Listing pages on the creation time the migration filled in.
        let page = store
            .elevations(&ElevationQuery::default(), None, 10)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(page.items.len(), 1);
        let mut cancelled = pending[0].clone();
        resolve(
            &mut cancelled,
            ElevationState::Cancelled,
            None,
            "rampart",
            None,
            SystemTime::now(),
        );
        assert!(matches!(
            store.resolve(&cancelled, None),
            Ok(Resolved::Written)
        ));
        assert_eq!(state_column(&store, "elevations", &e.id), "CANCELLED");
        drop(store);
        // And it opens again, now versioned.
        assert!(Store::open(dir.path()).is_ok());
    }

    fn refusal(dir: &Path) -> String {
        match Store::open(dir) {
            Ok(_) => panic!("{} opened", dir.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_empty_or_foreign_file_is_refused_not_started_empty() {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let db = dir.path().join(DB_FILE);
        std::fs::write(&db, b"").unwrap_or_else(|err| panic!("{err}"));
        let text = refusal(dir.path());
        assert!(text.contains("has no rampart schema"), "{text}");
        assert_eq!(
            std::fs::metadata(&db).map(|m| m.len()).ok(),
            Some(0),
            "left as it was"
        );

        // A database without rampart's tables.
        std::fs::remove_file(&db).unwrap_or_else(|err| panic!("{err}"));
        Connection::open(&db)
            .and_then(|c| c.execute_batch("CREATE TABLE notes (x TEXT);"))
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(refusal(dir.path()).contains("has no rampart schema"));

        // Another program's database.
        std::fs::remove_file(&db).unwrap_or_else(|err| panic!("{err}"));
        Connection::open(&db)
            .and_then(|c| c.execute_batch("PRAGMA application_id = 42; CREATE TABLE t (x);"))
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(refusal(dir.path()).contains("another program's SQLite database"));

        // Garbage.
        std::fs::write(&db, vec![7u8; 8192]).unwrap_or_else(|err| panic!("{err}"));
        assert!(Store::open(dir.path()).is_err());
    }

    #[test]
    fn a_store_from_a_newer_rampart_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        drop(Store::open(dir.path()).unwrap_or_else(|err| panic!("{err}")));
        Connection::open(dir.path().join(DB_FILE))
            .and_then(|c| c.pragma_update(None, "user_version", SCHEMA_VERSION + 1))
            .unwrap_or_else(|err| panic!("{err}"));
        let text = refusal(dir.path());
        assert!(text.contains("written by a newer rampart"), "{text}");
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_and_the_database_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let dir = parent.path().join("state");
        let store = Store::open(&dir).unwrap_or_else(|err| panic!("{err}"));
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        store
            .create_elevation(&e)
            .unwrap_or_else(|err| panic!("{err}"));
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .ok()
        };
        assert_eq!(mode(&dir), Some(0o700));
        for file in [DB_FILE, "rampart.db-wal", "rampart.db-shm"] {
            assert_eq!(mode(&dir.join(file)), Some(0o600), "{file}");
        }
    }

    #[test]
    fn a_create_never_overwrites() {
        let store = store();
        let mut e = elevation(AGENT_R, "reviewer", RESTART, VM);
        store
            .create_elevation(&e)
            .unwrap_or_else(|err| panic!("{err}"));
        resolve(
            &mut e,
            ElevationState::Denied,
            None,
            "viewer",
            None,
            SystemTime::now(),
        );
        assert!(matches!(store.resolve(&e, None), Ok(Resolved::Written)));
        let mut again = e.clone();
        again.state = ElevationState::Pending;
        assert!(matches!(
            store.create_elevation(&again),
            Err(StoreError::Duplicate(_))
        ));
        assert_eq!(state_column(&store, "elevations", &e.id), "DENIED");
    }

    #[test]
    fn an_ended_grant_is_never_made_active_again() {
        let store = store();
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let mut g = new_grant(&e, "oncall", Duration::from_secs(60), 5, SystemTime::now());
        store.put_grant(&g).unwrap_or_else(|err| panic!("{err}"));
        let stale = g.clone();
        crate::elevation::policy::lifecycle::end(
            &mut g,
            &crate::elevation::EndReason::Expired,
            SystemTime::now(),
        );
        store.put_grant(&g).unwrap_or_else(|err| panic!("{err}"));
        store
            .put_grant(&stale)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(state_column(&store, "grants", &g.id), "ENDED");
    }

    /// `n` elevations created a millisecond apart (two share each
    /// millisecond, so paging must break ties by id).
    fn many(store: &Store, n: usize, agent: &str) -> Vec<String> {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        (0..n)
            .map(|i| {
                let mut e = elevation(AGENT_R, agent, RESTART, VM);
                e.id = crate::elevation::types::new_id();
                e.created_at = t0 + Duration::from_millis((i / 2) as u64);
                store
                    .create_elevation(&e)
                    .unwrap_or_else(|err| panic!("{err}"));
                e.id
            })
            .collect()
    }

    #[test]
    fn newest_first_pages_run_backwards_and_still_cover_everything_once() {
        let store = store();
        let mut ids = many(&store, 230, "reviewer");
        let query = ElevationQuery {
            newest_first: true,
            ..ElevationQuery::default()
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .elevations(&query, after.as_ref(), 100)
                .unwrap_or_else(|err| panic!("{err}"));
            seen.extend(page.items.iter().map(|e| (e.created_at, e.id.clone())));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        let mut descending = seen.clone();
        descending.sort();
        descending.reverse();
        assert!(seen == descending, "newest first, ties by id");
        let mut got: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
        got.sort();
        ids.sort();
        assert_eq!(got, ids);
    }

    #[test]
    fn pages_list_every_record_once_in_creation_order() {
        let store = store();
        let mut ids = many(&store, 250, "reviewer");
        ids.extend(many(&store, 10, "auto"));
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = store
                .elevations(&ElevationQuery::default(), after.as_ref(), 100)
                .unwrap_or_else(|err| panic!("{err}"));
            pages += 1;
            seen.extend(page.items.iter().map(|e| (e.created_at, e.id.clone())));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let mut sorted = seen.clone();
        sorted.sort();
        assert!(seen == sorted, "oldest first, ties by id");
        let mut got: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
        got.sort();
        ids.sort();
        assert_eq!(got, ids);

        // Filters narrow in the store, so pages stay full.
        let only = ElevationQuery {
            agent_ids: Some(vec!["auto".into()]),
            ..ElevationQuery::default()
        };
        let page = store
            .elevations(&only, None, 100)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!((page.items.len(), page.next.is_none()), (10, true));
        let none = ElevationQuery {
            agent_ids: Some(vec![]),
            ..ElevationQuery::default()
        };
        assert!(store
            .elevations(&none, None, 100)
            .is_ok_and(|p| p.items.is_empty()));
        let approved = ElevationQuery {
            state: Some(ElevationState::Approved),
            ..ElevationQuery::default()
        };
        assert!(store
            .elevations(&approved, None, 100)
            .is_ok_and(|p| p.items.is_empty()));
    }

    #[test]
    fn a_purge_keeps_what_is_live_and_what_is_recent() {
        let store = store();
        let long_ago = SystemTime::now() - Duration::from_secs(90 * 24 * 3600);
        let now = SystemTime::now();
        // Old and resolved: purged.
        let mut denied = elevation(AGENT_R, "reviewer", RESTART, VM);
        denied.id = "denied".into();
        store
            .create_elevation(&denied)
            .unwrap_or_else(|err| panic!("{err}"));
        resolve(
            &mut denied,
            ElevationState::Denied,
            None,
            "viewer",
            None,
            long_ago,
        );
        store
            .resolve(&denied, None)
            .unwrap_or_else(|err| panic!("{err}"));
        // Old and pending: kept.
        let mut pending = elevation(AGENT_R, "reviewer", RESTART, VM);
        pending.id = "pending".into();
        store
            .create_elevation(&pending)
            .unwrap_or_else(|err| panic!("{err}"));
        // Approved, its grant still active: kept, with the grant.
        let mut approved = elevation(AGENT_R, "reviewer", RESTART, VM);
        approved.id = "approved".into();
        let g = new_grant(&approved, "oncall", Duration::from_secs(60), 0, now);
        resolve(
            &mut approved,
            ElevationState::Approved,
            Some(g.clone()),
            "oncall",
            None,
            now,
        );
        store
            .resolve(&approved, Some(&g))
            .unwrap_or_else(|err| panic!("{err}"));
        // An ended grant: purged.
        let mut ended = new_grant(&denied, "oncall", Duration::from_secs(60), 0, long_ago);
        crate::elevation::policy::lifecycle::end(
            &mut ended,
            &crate::elevation::EndReason::Expired,
            long_ago,
        );
        store
            .put_grant(&ended)
            .unwrap_or_else(|err| panic!("{err}"));
        let event = AuditEvent::from(crate::elevation::events::ElevationEvent::new(
            crate::elevation::events::ElevationEventKind::Requested,
            &pending,
            None,
            "r1",
        ));
        store
            .append_audit(&event)
            .unwrap_or_else(|err| panic!("{err}"));

        // Everything was written just now: a purge of what is older than
        // a day keeps it all (the updated time is the write's).
        let purged = store
            .purge(now - Duration::from_secs(24 * 3600))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(purged.grants, 1, "ended_at is long ago");
        assert_eq!((purged.elevations, purged.audit), (0, 0));
        // A purge of everything before a minute from now.
        let purged = store
            .purge(now + Duration::from_secs(60))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(purged.elevations, 1, "only the denied one");
        assert_eq!(purged.audit, 1);
        let (elevations, grants) = Store::load(&store).unwrap_or_else(|err| panic!("{err}"));
        let mut left: Vec<&str> = elevations.iter().map(|e| e.id.as_str()).collect();
        left.sort();
        assert_eq!(left, ["approved", "pending"]);
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].id, g.id);
    }

    #[test]
    fn the_audit_trail_keeps_typed_events_in_order() {
        let store = store();
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        for kind in [ElevationEventKind::Requested, ElevationEventKind::Cancelled] {
            let event = AuditEvent::from(ElevationEvent::new(kind, &e, None, "r1"));
            store
                .append_audit(&event)
                .unwrap_or_else(|err| panic!("{err}"));
        }
        let trail = Store::audit_events(&store).unwrap_or_else(|err| panic!("{err}"));
        let events: Vec<&str> = trail.iter().filter_map(|t| t["event"].as_str()).collect();
        assert_eq!(events, ["elevation.requested", "elevation.cancelled"]);
        assert_eq!(trail[0]["state"], "PENDING");
    }
}
