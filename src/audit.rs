//! The audit trail as JSON lines (`--audit-log FILE`, docs/operations.md#audit-log): every
//! elevation event and grant, always; decisions at a sampling rate. Each
//! line has the time, principal, operation, scope, decision or state,
//! reason and snapshot revision.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde_json::Value;

pub struct AuditLog {
    out: Mutex<LineWriter<File>>,
    path: String,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditLog({})", self.path)
    }
}

impl AuditLog {
    /// Opens `path` for appending (creating it).
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditLog {
            out: Mutex::new(LineWriter::new(file)),
            path: path.display().to_string(),
        })
    }

    /// Appends one event, stamped with the time, as a line of JSON.
    pub fn write(&self, mut event: Value) {
        if let Value::Object(map) = &mut event {
            map.insert(
                "time".into(),
                Value::String(chrono::Utc::now().to_rfc3339()),
            );
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(out, "{event}") {
            tracing::error!("cannot write the audit log {}: {e}", self.path);
        }
    }
}

/// Whether to record this decision, at `rate` (0 = never, 1 = always).
/// A per-thread generator: no shared state on the hot path.
pub fn sampled(rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut b = [0u8; 8];
            let _ = getrandom::fill(&mut b);
            u64::from_le_bytes(b) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        ((x >> 11) as f64 / (1u64 << 53) as f64) < rate
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_rates_hold_at_the_extremes_and_roughly_between() {
        assert!(!(0..1000).any(|_| sampled(0.0)));
        assert!((0..1000).all(|_| sampled(1.0)));
        let hits = (0..100_000).filter(|_| sampled(0.1)).count();
        assert!((8_000..12_000).contains(&hits), "{hits}");
    }

    #[test]
    fn events_are_json_lines_with_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.write(serde_json::json!({"event": "a"}));
        log.write(serde_json::json!({"event": "b"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"], "b");
        assert!(lines[0]["time"].as_str().unwrap().contains('T'));
    }
}
