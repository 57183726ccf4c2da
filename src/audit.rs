//! The audit trail as JSON lines (`--audit-log FILE`, docs/operations.md#audit-log): every
//! elevation event and grant, always; decisions at a sampling rate. Each
//! line has the time, principal, operation, scope, decision or state,
//! reason and snapshot revision, with the API's spelling of every enum,
//! and ends with its link in a hash chain; with a signing key, signed
//! checkpoints seal it ([`chain`]). The chain goes on across restarts
//! (the last line is read back at open) and rotations (a moved-away file
//! is sealed, and the new one begins with a line naming its last hash).

pub mod chain;
pub mod keys;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde::Serialize;

use chain::{Hash, Head, HexHash, Link, FILE_EVENT};

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

/// An event with the time it was written and its link in the chain,
/// last on the line.
#[derive(Serialize)]
struct Stamped<'a, E: Serialize> {
    #[serde(flatten)]
    event: &'a E,
    time: &'a str,
    #[serde(flatten)]
    link: Link,
}

/// The first line rampart writes in a new file (`audit.file`): its `prev`
/// names the previous file's last line.
#[derive(Serialize)]
struct FileStart {
    event: &'static str,
}

/// Signed checkpoints: every `records` records or `interval`, whichever
/// comes first, and when the log closes or rotates.
pub struct Sealing {
    pub key: SigningKey,
    pub records: u64,
    pub interval: Duration,
}

impl fmt::Debug for Sealing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sealing(key {}, every {} records or {:?})",
            chain::key_id(&self.key.verifying_key()),
            self.records,
            self.interval
        )
    }
}

/// How often the writer looks whether its file was moved away (rotated).
const ROTATION_CHECK: Duration = Duration::from_secs(1);

/// The JSON-lines audit file, hash-chained and (with [`Sealing`]) signed.
pub struct AuditLog {
    path: PathBuf,
    sealing: Option<Sealing>,
    state: Mutex<Writer>,
}

struct Writer {
    file: File,
    head: Head,
    /// Records since the last checkpoint.
    unsealed: u64,
    /// The last line is a closing checkpoint.
    closed: bool,
    last_checkpoint: Instant,
    last_rotation_check: Instant,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditLog({})", self.path.display())
    }
}

impl AuditLog {
    /// Opens `path` for appending (creating it), chained, unsigned.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        AuditLog::open_with(path, None)
    }

    /// Opens `path` for appending (creating it `0600`, whatever the umask):
    /// the chain continues from its last record, or a new one begins with
    /// an `audit.file` line.
    pub fn open_with(path: &Path, sealing: Option<Sealing>) -> std::io::Result<AuditLog> {
        let (file, resumed) = open_file(path)?;
        let now = Instant::now();
        let log = AuditLog {
            path: path.to_owned(),
            sealing,
            state: Mutex::new(Writer {
                file,
                head: Head::START,
                unsealed: 0,
                closed: false,
                last_checkpoint: now,
                last_rotation_check: now,
            }),
        };
        {
            let mut w = log.lock();
            match resumed {
                Resumed::Chain { head, closing } => {
                    w.head = head;
                    w.closed = closing;
                }
                Resumed::Before(hash) => {
                    w.head = Head { seq: 0, hash };
                    log.append_event(&mut w, &FileStart { event: FILE_EVENT });
                }
            }
        }
        Ok(log)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one event (a struct or an internally tagged enum, so it
    /// serialises as a JSON object), stamped with the time and chained, as
    /// a line; a checkpoint follows every `records` records.
    pub fn write<E: Serialize>(&self, event: &E) {
        let mut w = self.lock();
        if w.last_rotation_check.elapsed() >= ROTATION_CHECK {
            let _ = self.follow_rotation(&mut w);
        }
        self.append_event(&mut w, event);
        if let Some(sealing) = &self.sealing {
            if w.unsealed >= sealing.records {
                self.checkpoint(&mut w, sealing, false);
            }
        }
    }

    /// Called every second or so: follows a rotation, and writes a
    /// checkpoint when records wait and the interval has passed.
    pub fn tick(&self) {
        let mut w = self.lock();
        let _ = self.follow_rotation(&mut w);
        if let Some(sealing) = &self.sealing {
            if w.unsealed > 0 && w.last_checkpoint.elapsed() >= sealing.interval {
                self.checkpoint(&mut w, sealing, false);
            }
        }
    }

    /// Seals the log with a closing checkpoint (unless its last line is
    /// one) and syncs it. Writing after it continues the chain.
    pub fn close(&self) {
        let mut w = self.lock();
        if let Some(sealing) = &self.sealing {
            if !w.closed {
                self.checkpoint(&mut w, sealing, true);
            }
        }
        if let Err(e) = w.file.sync_data() {
            tracing::error!("cannot sync the audit log {}: {e}", self.path.display());
        }
    }

    /// Follows a rotation now (SIGHUP): when the file at the path is no
    /// longer the one written, the old one is sealed and a new one begun.
    /// On failure the old file stays in use.
    pub fn reopen(&self) -> std::io::Result<()> {
        let mut w = self.lock();
        self.follow_rotation(&mut w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the file at `path` is no longer the one written (logrotate
    /// moved it away): seals the old one, and begins the new one with an
    /// `audit.file` line naming the old one's last hash.
    fn follow_rotation(&self, w: &mut Writer) -> std::io::Result<()> {
        w.last_rotation_check = Instant::now();
        let moved = match (std::fs::metadata(&self.path), w.file.metadata()) {
            (Ok(at_path), Ok(open)) => (at_path.dev(), at_path.ino()) != (open.dev(), open.ino()),
            (Err(_), _) => true,
            (Ok(_), Err(_)) => false,
        };
        if !moved {
            return Ok(());
        }
        let file = match open_append(&self.path) {
            Ok(file) => file,
            Err(e) => {
                tracing::error!(
                    "the audit log {} was moved away and cannot be created again ({e}); writing on to the moved file",
                    self.path.display()
                );
                return Err(e);
            }
        };
        if let Some(sealing) = &self.sealing {
            if !w.closed {
                self.checkpoint(w, sealing, true);
            }
        }
        let _ = w.file.sync_data();
        w.file = file;
        tracing::info!(target: "rampart::audit", file = %self.path.display(), seq = w.head.seq + 1, "audit log rotated: the new file continues the chain");
        self.append_event(w, &FileStart { event: FILE_EVENT });
        Ok(())
    }

    fn checkpoint(&self, w: &mut Writer, sealing: &Sealing, closing: bool) {
        let time = chrono::Utc::now().to_rfc3339();
        let line = chain::checkpoint_line(&w.head, closing, &time, &sealing.key);
        let prev = HexHash(w.head.hash);
        if self.append_line(w, line) {
            w.unsealed = 0;
            w.closed = closing;
            w.last_checkpoint = Instant::now();
            tracing::info!(target: "rampart::audit", seq = w.head.seq, head = %prev, closing, "audit checkpoint");
        }
    }

    fn append_event<E: Serialize>(&self, w: &mut Writer, event: &E) {
        let time = chrono::Utc::now().to_rfc3339();
        let stamped = Stamped {
            event,
            time: &time,
            link: w.head.link(),
        };
        match serde_json::to_string(&stamped) {
            Ok(line) => {
                if self.append_line(w, line) {
                    w.unsealed += 1;
                }
            }
            Err(e) => {
                tracing::error!(
                    "cannot encode an audit event for {}: {e}",
                    self.path.display()
                )
            }
        }
    }

    /// Writes `line` and its newline in one call; the head moves only when
    /// the write succeeded.
    fn append_line(&self, w: &mut Writer, mut line: String) -> bool {
        let head = w.head.after(line.as_bytes());
        line.push('\n');
        match w.file.write_all(line.as_bytes()) {
            Ok(()) => {
                w.head = head;
                w.closed = false;
                true
            }
            Err(e) => {
                tracing::error!("cannot write the audit log {}: {e}", self.path.display());
                false
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Where an opened file's chain stands.
#[derive(Debug, PartialEq, Eq)]
enum Resumed {
    /// After its last chained line.
    Chain { head: Head, closing: bool },
    /// No chained line: a new chain begins after this hash (the last
    /// line's, or [`chain::GENESIS`] for an empty file).
    Before(Hash),
}

/// Opens `path` for appending and finds where its chain stands. A partial
/// last line (a write cut by a crash) is completed when it is a whole
/// record, removed otherwise.
fn open_file(path: &Path) -> std::io::Result<(File, Resumed)> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut lines = LinesBackwards::new(&mut file, len)?;
    let mut resumed = None;
    let mut last_line: Option<Vec<u8>> = None;
    // What follows the last newline.
    let torn = lines.torn.take();
    if let Some(torn) = torn {
        if chain::resume_after(&torn).is_some() {
            lines.file.write_all(b"\n")?;
            resumed =
                chain::resume_after(&torn).map(|(head, closing)| Resumed::Chain { head, closing });
        } else {
            let keep = len - torn.len() as u64;
            tracing::warn!(
                "the audit log {} ended in {} bytes of a cut line (a crash mid-write); removed them: {:?}",
                path.display(),
                torn.len(),
                String::from_utf8_lossy(&torn[..torn.len().min(200)])
            );
            lines.file.set_len(keep)?;
        }
    }
    while resumed.is_none() {
        let Some(line) = lines.next_line()? else {
            break;
        };
        if let Some((head, closing)) = chain::resume_after(&line) {
            resumed = Some(Resumed::Chain { head, closing });
        } else if last_line.is_none() {
            last_line = Some(line);
        }
    }
    let resumed = resumed.unwrap_or_else(|| {
        Resumed::Before(last_line.map_or(chain::GENESIS, |l| chain::line_hash(&l)))
    });
    Ok((file, resumed))
}

/// Opens for appending, creating the file `0600` whatever the umask: it
/// records who may do what.
fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// A file's complete lines from the last, read in blocks from the end.
struct LinesBackwards<'f> {
    file: &'f mut File,
    /// Bytes not yet read, before `buf`.
    unread: u64,
    /// Read bytes not yet returned.
    buf: Vec<u8>,
    /// The bytes after the last newline, if any.
    torn: Option<Vec<u8>>,
}

impl<'f> LinesBackwards<'f> {
    const BLOCK: u64 = 64 * 1024;

    fn new(file: &'f mut File, len: u64) -> std::io::Result<Self> {
        let mut me = LinesBackwards {
            file,
            unread: len,
            buf: Vec::new(),
            torn: None,
        };
        // Read until the last newline is in the buffer.
        while me.unread > 0 && !me.buf.contains(&b'\n') {
            me.read_block()?;
        }
        let cut = match me.buf.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        if cut < me.buf.len() {
            me.torn = Some(me.buf.split_off(cut));
        }
        // Drop the last newline: every line is now followed by one.
        me.buf.pop();
        Ok(me)
    }

    fn read_block(&mut self) -> std::io::Result<()> {
        let n = self.unread.min(Self::BLOCK);
        self.unread -= n;
        let mut block = vec![0; n as usize];
        self.file.seek(SeekFrom::Start(self.unread))?;
        self.file.read_exact(&mut block)?;
        block.extend_from_slice(&self.buf);
        self.buf = block;
        Ok(())
    }

    fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.iter().rposition(|b| *b == b'\n') {
                let line = self.buf.split_off(i + 1);
                self.buf.pop();
                return Ok(Some(line));
            }
            if self.unread == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            self.read_block()?;
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
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["event"], "audit.file");
        assert_eq!(lines[0]["prev"], "0".repeat(64));
        assert_eq!(lines[2]["event"], "b");
        assert!(lines[1]["time"].as_str().unwrap().contains('T'));
        // Each line names the SHA-256 of the one before it.
        for (k, raw) in text.lines().enumerate().skip(1) {
            let before = text.lines().nth(k - 1).unwrap();
            let line: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(line["seq"], k as u64 + 1);
            assert_eq!(
                line["prev"],
                hex::encode(chain::line_hash(before.as_bytes()))
            );
        }
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
        let text = text.lines().nth(1).unwrap();
        assert!(
            text.starts_with(r#"{"event":"decision","decision_id":"00000000-"#),
            "{text}"
        );
        let line: Value = serde_json::from_str(text).unwrap();
        assert_eq!(line["decision"], "APPROVAL_REQUIRED");
        assert_eq!(line["reason"], "NEEDS_ELEVATION");
        assert_eq!(line["principal"], "agent-r");
        assert_eq!(line["data_action"], false);
        assert_eq!(line["revision"], "r1");
        assert!(line["time"].as_str().unwrap().contains('T'));
        assert!(
            text.contains(r#"","time":""#) && text.contains(r#"","seq":2,"prev":""#),
            "time, then the chain, come last: {text}"
        );
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    fn sealed(path: &Path, records: u64, interval: Duration) -> AuditLog {
        let sealing = Sealing {
            key: key(),
            records,
            interval,
        };
        AuditLog::open_with(path, Some(sealing)).unwrap()
    }

    fn verify(paths: &[&Path]) -> chain::Report {
        let texts: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let files: Vec<chain::LogFile> = texts
            .iter()
            .map(|t| chain::LogFile {
                name: "f",
                bytes: t,
            })
            .collect();
        chain::verify(&files, &key().verifying_key())
    }

    fn events(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn checkpoints_come_every_n_records_and_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = sealed(&path, 3, Duration::from_secs(3600));
        for k in 0..5 {
            log.write(&serde_json::json!({"event": "e", "k": k}));
        }
        log.close();
        log.close(); // once is enough
        let seen = events(&path);
        assert_eq!(
            seen,
            [
                "audit.file",
                "e",
                "e",
                "audit.checkpoint",
                "e",
                "e",
                "e",
                "audit.checkpoint",
                "audit.checkpoint"
            ]
        );
        let r = verify(&[&path]);
        assert_eq!(r.outcome(), chain::Outcome::Intact, "{r}");
        assert_eq!(r.checkpoints, 3);
    }

    #[test]
    fn a_tick_checkpoints_waiting_records_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = sealed(&path, 1000, Duration::ZERO);
        log.tick();
        log.write(&serde_json::json!({"event": "e"}));
        log.tick();
        log.tick(); // nothing new: no second checkpoint
        assert_eq!(
            events(&path),
            ["audit.file", "audit.checkpoint", "e", "audit.checkpoint"]
        );
        let r = verify(&[&path]);
        assert_eq!(
            r.tail,
            chain::Tail::Open {
                at: chain::Place {
                    file: 0,
                    line: 4,
                    seq: Some(4)
                }
            }
        );
    }

    #[test]
    fn the_chain_continues_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = sealed(&path, 1000, Duration::from_secs(3600));
        log.write(&serde_json::json!({"event": "before"}));
        drop(log); // closes
        let log = sealed(&path, 1000, Duration::from_secs(3600));
        log.write(&serde_json::json!({"event": "after"}));
        drop(log);
        assert_eq!(
            events(&path),
            [
                "audit.file",
                "before",
                "audit.checkpoint",
                "after",
                "audit.checkpoint"
            ]
        );
        let r = verify(&[&path]);
        assert_eq!(r.outcome(), chain::Outcome::Intact, "{r}");
    }

    #[test]
    fn a_rotated_file_is_sealed_and_the_new_one_names_its_last_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let old = dir.path().join("audit.jsonl.1");
        let log = sealed(&path, 1000, Duration::from_secs(3600));
        log.write(&serde_json::json!({"event": "one"}));
        std::fs::rename(&path, &old).unwrap();
        log.tick();
        log.write(&serde_json::json!({"event": "two"}));
        drop(log);
        assert_eq!(events(&old), ["audit.file", "one", "audit.checkpoint"]);
        assert_eq!(events(&path), ["audit.file", "two", "audit.checkpoint"]);
        let old_text = std::fs::read_to_string(&old).unwrap();
        let first: Value = serde_json::from_str(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        let last_old = old_text.lines().last().unwrap();
        assert_eq!(
            first["prev"],
            hex::encode(chain::line_hash(last_old.as_bytes()))
        );
        assert_eq!(first["seq"], 4);
        let r = verify(&[&old, &path]);
        assert_eq!(r.outcome(), chain::Outcome::Intact, "{r}");
        assert_eq!(r.last_seq, Some(6));
        // The new file alone is sealed too, continuing an earlier one.
        let r = verify(&[&path]);
        assert_eq!(r.outcome(), chain::Outcome::Intact, "{r}");
    }

    #[test]
    fn a_line_cut_by_a_crash_is_dropped_or_completed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.write(&serde_json::json!({"event": "kept"}));
        drop(log);
        let whole = std::fs::read_to_string(&path).unwrap();
        // A torn write: part of a line, no newline.
        let mut torn = whole.clone();
        torn.push_str(r#"{"event":"half"#);
        std::fs::write(&path, &torn).unwrap();
        let log = sealed(&path, 1000, Duration::from_secs(3600));
        log.write(&serde_json::json!({"event": "next"}));
        drop(log);
        assert_eq!(
            events(&path),
            ["audit.file", "kept", "next", "audit.checkpoint"]
        );
        assert_eq!(verify(&[&path]).outcome(), chain::Outcome::Intact);
        // A whole record whose newline was not written is kept.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.trim_end()).unwrap();
        let log = sealed(&path, 1000, Duration::from_secs(3600));
        log.write(&serde_json::json!({"event": "last"}));
        drop(log);
        assert_eq!(
            events(&path),
            [
                "audit.file",
                "kept",
                "next",
                "audit.checkpoint",
                "last",
                "audit.checkpoint"
            ]
        );
        assert_eq!(verify(&[&path]).outcome(), chain::Outcome::Intact);
    }

    #[test]
    fn a_log_from_before_the_chain_is_continued_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let old = "{\"event\":\"elevation.requested\",\"time\":\"t\"}\n".repeat(3);
        std::fs::write(&path, &old).unwrap();
        let log = sealed(&path, 1000, Duration::from_secs(3600));
        log.write(&serde_json::json!({"event": "new"}));
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&old));
        let r = verify(&[&path]);
        assert_eq!(r.outcome(), chain::Outcome::Intact, "{r}");
        assert_eq!(r.unchained, 3);
    }

    #[test]
    fn a_foreign_line_at_the_end_stays_visible_and_the_chain_skips_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.write(&serde_json::json!({"event": "kept"}));
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"not json\n").unwrap();
        let log = sealed(&path, 1000, Duration::from_secs(3600));
        log.write(&serde_json::json!({"event": "next"}));
        drop(log);
        let r = verify(&[&path]);
        assert_eq!(
            r.problem,
            Some(chain::Problem::Inserted {
                at: chain::Place {
                    file: 0,
                    line: 3,
                    seq: None
                }
            }),
            "{r}"
        );
    }

    #[test]
    fn lines_are_read_back_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.jsonl");
        let long = "x".repeat(100_000);
        let log = AuditLog::open(&path).unwrap();
        log.write(&serde_json::json!({"event": "long", "text": long}));
        log.write(&serde_json::json!({"event": "long", "text": long}));
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        log.write(&serde_json::json!({"event": "after"}));
        drop(log);
        let r = verify(&[&path]);
        assert_eq!(r.problem, None, "{r}");
        assert_eq!(r.last_seq, Some(4));
    }
}
