//! The audit trail as JSON lines (`--audit-log FILE`, docs/operations.md#audit-log): every
//! elevation event and grant, always; decisions at a sampling rate. Each
//! line has the time, principal, operation, scope, decision or state,
//! reason and snapshot revision, with the API's spelling of every enum.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use crate::engine::{Decision, DecisionId, Reason, Verdict};

/// A sampled Authorize decision, as one audit line:
/// `{"event":"decision",…}`. Borrowed from the request and the decision.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename = "decision")]
pub struct DecisionEvent<'a> {
    pub decision_id: DecisionId,
    pub principal: &'a str,
    pub action: &'a str,
    pub scope: &'a str,
    pub data_action: bool,
    pub decision: Verdict,
    pub reason: Reason,
    pub revision: &'a str,
    /// Set when the question came through Envoy's ext_authz.
    #[serde(flatten)]
    pub http: Option<HttpOrigin<'a>>,
}

/// The HTTP request an ext_authz decision answered.
#[derive(Debug, Serialize)]
pub struct HttpOrigin<'a> {
    pub via: &'static str,
    pub request_id: &'a str,
    pub method: &'a str,
    /// Where in the body an inner operation (a batch item, a deployment's
    /// resource) was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner: Option<&'a str>,
}

impl<'a> DecisionEvent<'a> {
    /// The event for `decision`, answering the request's principal,
    /// operation and scope.
    pub fn new(
        principal: &'a str,
        action: &'a str,
        scope: &'a str,
        data_action: bool,
        decision: &Decision<'a>,
    ) -> Self {
        DecisionEvent {
            decision_id: decision.decision_id,
            principal,
            action,
            scope,
            data_action,
            decision: decision.verdict,
            reason: decision.reason,
            revision: decision.snapshot_revision,
            http: None,
        }
    }
}

/// An event with the time it was written, last on the line.
#[derive(Serialize)]
struct Stamped<'a, E: Serialize> {
    #[serde(flatten)]
    event: &'a E,
    time: String,
}

pub struct AuditLog {
    out: Mutex<LineWriter<File>>,
    path: std::path::PathBuf,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditLog({})", self.path.display())
    }
}

impl AuditLog {
    /// Opens `path` for appending (creating it `0600`, whatever the umask:
    /// it records who may do what).
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        Ok(AuditLog {
            out: Mutex::new(LineWriter::new(open_append(path)?)),
            path: path.to_owned(),
        })
    }

    /// Opens the path again and writes there from now on: after a log
    /// rotation moved the file away (SIGHUP). On failure the old file
    /// stays in use.
    pub fn reopen(&self) -> std::io::Result<()> {
        let file = open_append(&self.path)?;
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.flush();
        *out = LineWriter::new(file);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event (a struct or an internally tagged enum, so it
    /// serialises as a JSON object), stamped with the time, as a line.
    pub fn write<E: Serialize>(&self, event: &E) {
        let stamped = Stamped {
            event,
            time: chrono::Utc::now().to_rfc3339(),
        };
        let line = match serde_json::to_string(&stamped) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(
                    "cannot encode an audit event for {}: {e}",
                    self.path.display()
                );
                return;
            }
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(out, "{line}") {
            tracing::error!("cannot write the audit log {}: {e}", self.path.display());
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
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
    use serde_json::Value;

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
        log.write(&serde_json::json!({"event": "a"}));
        log.write(&serde_json::json!({"event": "b"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"], "b");
        assert!(lines[0]["time"].as_str().unwrap().contains('T'));
    }

    #[test]
    fn a_decision_line_uses_the_api_spellings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.write(&DecisionEvent {
            decision_id: DecisionId(7),
            principal: "agent-r",
            action: "Microsoft.Compute/virtualMachines/restart/action",
            scope: "/subscriptions/s1",
            data_action: false,
            decision: Verdict::ApprovalRequired,
            reason: Reason::NeedsElevation,
            revision: "r1",
            http: None,
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(r#"{"event":"decision","decision_id":"00000000-"#),
            "{text}"
        );
        let line: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["decision"], "APPROVAL_REQUIRED");
        assert_eq!(line["reason"], "NEEDS_ELEVATION");
        assert_eq!(line["principal"], "agent-r");
        assert_eq!(line["data_action"], false);
        assert_eq!(line["revision"], "r1");
        assert!(line["time"].as_str().unwrap().contains('T'));
        assert!(text.trim_end().ends_with("\"}"), "time comes last: {text}");
    }
}
