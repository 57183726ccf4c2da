//! The state store under `--state-dir`: SQLite (rusqlite, bundled), in WAL
//! mode with `synchronous=FULL`, so a write that returned survives a crash
//! — the broker writes a grant before it acknowledges an approval.
//!
//! SQLite over redb: one file an operator can open with `sqlite3` to audit
//! what was approved, by whom, and why; bundled, so no system library.
//! Each row is the record as JSON, with its state (as the API spells it)
//! in a column of its own.

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Resolved, StateStore, StoreError};
use crate::elevation::events::AuditEvent;
use crate::elevation::{Elevation, ElevationState, Grant};

pub struct Store {
    conn: Mutex<Connection>,
}

/// The file name of the database under `--state-dir`.
pub const DB_FILE: &str = "rampart.db";

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn upsert_elevation(conn: &Connection, e: &Elevation) -> Result<(), StoreError> {
    let body = serde_json::to_string(e)?;
    conn.execute(
        "INSERT INTO elevations (id, state, updated_ms, body) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET state = ?2, updated_ms = ?3, body = ?4",
        params![e.id, e.state.as_str(), unix_ms(SystemTime::now()), body],
    )?;
    Ok(())
}

fn upsert_grant(conn: &Connection, g: &Grant) -> Result<(), StoreError> {
    let body = serde_json::to_string(g)?;
    conn.execute(
        "INSERT INTO grants (id, state, expires_ms, body) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET state = ?2, expires_ms = ?3, body = ?4",
        params![g.id, g.state.as_str(), unix_ms(g.expires_at), body],
    )?;
    Ok(())
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

    /// Writes an elevation as it stands, whatever was stored before.
    pub fn put_elevation(&self, e: &Elevation) -> Result<(), StoreError> {
        upsert_elevation(&self.conn(), e)
    }

    /// Writes a grant as it stands.
    pub fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        upsert_grant(&self.conn(), g)
    }

    /// Every stored elevation (oldest change first) and grant.
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

impl StateStore for Store {
    fn load(&self) -> Result<(Vec<Elevation>, Vec<Grant>), StoreError> {
        Store::load(self)
    }

    fn create_elevation(&self, e: &Elevation) -> Result<(), StoreError> {
        self.put_elevation(e)
    }

    fn resolve(&self, e: &Elevation, grant: Option<&Grant>) -> Result<Resolved, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let stored: Option<String> = tx
            .query_row(
                "SELECT state FROM elevations WHERE id = ?1",
                params![e.id],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(state) = stored {
            // Rows written before the API spelling say `Pending`; both read.
            let state: ElevationState = serde_json::from_value(serde_json::Value::String(state))?;
            if !state.is_pending() {
                return Ok(Resolved::AlreadyResolved(state));
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
        Store::put_grant(self, g)
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
        Store::audit_events(self)
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
        assert_eq!(written, Resolved::Written);
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
        assert_eq!(store.resolve(&denied, None).ok(), Some(Resolved::Written));

        let g = new_grant(&e, "oncall", Duration::from_secs(60), 0, now);
        resolve(
            &mut e,
            ElevationState::Approved,
            Some(g.clone()),
            "oncall",
            None,
            now,
        );
        assert_eq!(
            store.resolve(&e, Some(&g)).ok(),
            Some(Resolved::AlreadyResolved(ElevationState::Denied))
        );
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
        assert_eq!(store.resolve(&e, None).ok(), Some(Resolved::Written));
        assert_eq!(state_column(&store, "elevations", &e.id), "CANCELLED");
    }

    #[test]
    fn rows_written_with_the_old_spellings_still_load_and_resolve() {
        let store = store();
        let e = elevation(AGENT_R, "reviewer", RESTART, VM);
        let body = serde_json::to_string(&e)
            .unwrap_or_default()
            .replace("\"PENDING\"", "\"Pending\"")
            .replace("\"NEEDS_ELEVATION\"", "\"NeedsElevation\"");
        assert!(body.contains("\"Pending\""), "{body}");
        store
            .conn()
            .execute(
                "INSERT INTO elevations (id, state, updated_ms, body) VALUES (?1, 'Pending', 0, ?2)",
                params![e.id, body],
            )
            .unwrap_or_else(|err| panic!("{err}"));
        let (elevations, _) = Store::load(&store).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(elevations[0].state, ElevationState::Pending);
        let mut cancelled = elevations[0].clone();
        resolve(
            &mut cancelled,
            ElevationState::Cancelled,
            None,
            "rampart",
            None,
            SystemTime::now(),
        );
        assert_eq!(
            store.resolve(&cancelled, None).ok(),
            Some(Resolved::Written)
        );
        assert_eq!(state_column(&store, "elevations", &e.id), "CANCELLED");
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
