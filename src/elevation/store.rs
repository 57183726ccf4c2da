//! The durable state store under `--state-dir`: SQLite (rusqlite, bundled),
//! in WAL mode with `synchronous=FULL`, so a write that returned survives a
//! crash — the broker writes a grant before it acknowledges an approval.
//!
//! SQLite over redb: one file an operator can open with `sqlite3` to audit
//! what was approved, by whom, and why; bundled, so no system library.

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use rusqlite::{params, Connection};

use super::types::{Elevation, Grant};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state store: cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("state store: a stored record does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

pub struct Store {
    conn: Mutex<Connection>,
}

/// The file name of the database under `--state-dir`.
pub const DB_FILE: &str = "rampart.db";

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        Store::init(Connection::open(dir.join(DB_FILE))?)
    }

    /// A store that lives only as long as the process (no `--state-dir`).
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS elevations (
                 id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_ms INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS grants (
                 id TEXT PRIMARY KEY, state TEXT NOT NULL, expires_ms INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS audit (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, event TEXT NOT NULL);",
        )?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put_elevation(&self, e: &Elevation) -> Result<(), StoreError> {
        let body = serde_json::to_string(e)?;
        self.conn().execute(
            "INSERT INTO elevations (id, state, updated_ms, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET state = ?2, updated_ms = ?3, body = ?4",
            params![
                e.id,
                format!("{:?}", e.state),
                unix_ms(SystemTime::now()),
                body
            ],
        )?;
        Ok(())
    }

    pub fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let body = serde_json::to_string(g)?;
        self.conn().execute(
            "INSERT INTO grants (id, state, expires_ms, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET state = ?2, expires_ms = ?3, body = ?4",
            params![g.id, format!("{:?}", g.state), unix_ms(g.expires_at), body],
        )?;
        Ok(())
    }

    /// Appends one audit event (a JSON object).
    pub fn audit(&self, event: &serde_json::Value) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO audit (at_ms, event) VALUES (?1, ?2)",
            params![unix_ms(SystemTime::now()), event.to_string()],
        )?;
        Ok(())
    }

    /// Every stored elevation and grant.
    pub fn load(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError> {
        let conn = self.conn();
        let mut elevations = Vec::new();
        let mut stmt = conn.prepare("SELECT body FROM elevations ORDER BY updated_ms")?;
        for body in stmt.query_map([], |row| row.get::<_, String>(0))? {
            elevations.push(serde_json::from_str(&body?)?);
        }
        let mut grants = Vec::new();
        let mut stmt = conn.prepare("SELECT body FROM grants ORDER BY expires_ms")?;
        for body in stmt.query_map([], |row| row.get::<_, String>(0))? {
            grants.push(serde_json::from_str(&body?)?);
        }
        Ok((elevations, grants))
    }

    /// The audit trail, oldest first.
    pub fn audit_events(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT event FROM audit ORDER BY seq")?;
        let mut out = Vec::new();
        for event in stmt.query_map([], |row| row.get::<_, String>(0))? {
            out.push(serde_json::from_str(&event?)?);
        }
        Ok(out)
    }
}
