//! The audit log's hash chain and signed checkpoints, as pure functions:
//! building the chained and signed lines rampart writes, and verifying a
//! log (one file or several, in order) against a public key.
//!
//! Every line ends with `"seq":N,"prev":"HEX"`: its place in the chain and
//! the SHA-256 of the previous line's exact bytes (without the newline).
//! Changing, removing, adding or moving a line breaks a link. The chain
//! alone can be rebuilt by whoever edits the file, so every N records or T
//! seconds, and when the log closes, rampart writes an `audit.checkpoint`
//! line signed with its Ed25519 key: the signature covers that line, whose
//! `prev` commits to every line before it. What follows the last checkpoint
//! is unsigned: a log rampart closed ends with a *closing* checkpoint.

use std::fmt;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// The `prev` of a chain's first record.
pub const GENESIS: Hash = [0; 32];
/// The event of a signed checkpoint line.
pub const CHECKPOINT_EVENT: &str = "audit.checkpoint";
/// The event of the first line rampart writes in a new file: its `prev`
/// names the previous file's last line (or [`GENESIS`]).
pub const FILE_EVENT: &str = "audit.file";
/// Signed before the line, so a checkpoint signature means nothing else.
const SIGNING_CONTEXT: &[u8] = b"rampart audit checkpoint v1\n";
/// How a checkpoint line ends: `…,"signature":"BASE64"}`.
const SIGNATURE_FIELD: &str = ",\"signature\":\"";

/// The SHA-256 of a line as written, without its newline.
pub fn line_hash(line: &[u8]) -> Hash {
    Sha256::digest(line).into()
}

/// The last record written: the next one has `seq + 1` and `prev = hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

impl Head {
    /// Before a new chain's first record.
    pub const START: Head = Head {
        seq: 0,
        hash: GENESIS,
    };

    /// The fields the next line ends with.
    pub fn link(&self) -> Link {
        Link {
            seq: self.seq + 1,
            prev: HexHash(self.hash),
        }
    }

    /// The head once `line` (written with [`Head::link`]) is appended.
    pub fn after(&self, line: &[u8]) -> Head {
        Head {
            seq: self.seq + 1,
            hash: line_hash(line),
        }
    }
}

/// The chain fields, last on every line.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Link {
    pub seq: u64,
    pub prev: HexHash,
}

/// A hash written as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HexHash(pub Hash);

impl Serialize for HexHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl fmt::Display for HexHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A short name of a public key, written in each checkpoint so a verifier
/// given the wrong key says so: the first 8 bytes of its SHA-256, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

#[derive(Serialize)]
struct CheckpointFields<'a> {
    event: &'static str,
    closing: bool,
    key_id: &'a str,
    time: &'a str,
    #[serde(flatten)]
    link: Link,
}

/// The checkpoint line after `head`, signed with `key`: `closing` when
/// the writer stops (or rotates) with this line last.
pub fn checkpoint_line(head: &Head, closing: bool, time: &str, key: &SigningKey) -> String {
    let fields = CheckpointFields {
        event: CHECKPOINT_EVENT,
        closing,
        key_id: &key_id(&key.verifying_key()),
        time,
        link: head.link(),
    };
    // A struct of strings, a bool and numbers always serialises.
    let unsigned = serde_json::to_string(&fields).unwrap_or_default();
    let signature = key.sign(&signed_message(unsigned.as_bytes()));
    let mut line = unsigned;
    line.pop(); // the closing brace
    line.push_str(SIGNATURE_FIELD);
    line.push_str(&base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()));
    line.push_str("\"}");
    line
}

fn signed_message(unsigned_line: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + unsigned_line.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(unsigned_line);
    m
}

/// Whether the checkpoint `line` carries `key`'s signature of itself
/// (the line without its final `signature` field).
pub fn checkpoint_signed(line: &[u8], key: &VerifyingKey) -> bool {
    let field = SIGNATURE_FIELD.as_bytes();
    let Some(start) = line.windows(field.len()).rposition(|w| w == field) else {
        return false;
    };
    let Some(encoded) = line[start + field.len()..].strip_suffix(b"\"}") else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(&bytes) else {
        return false;
    };
    let mut unsigned = line[..start].to_vec();
    unsigned.push(b'}');
    key.verify_strict(&signed_message(&unsigned), &signature)
        .is_ok()
}

/// One file of a log to verify, by the name to report.
#[derive(Debug, Clone, Copy)]
pub struct LogFile<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// Where a line is: which of the files given, which line (from 1), and its
/// `seq` when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub file: usize,
    pub line: usize,
    pub seq: Option<u64>,
}

/// The first thing wrong in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The line's bytes differ from those the chain (or a signature) holds.
    Modified { at: Place },
    /// Records `from..=to` are missing after `after` (`None`: before the
    /// first line).
    Deleted {
        after: Option<Place>,
        from: u64,
        to: u64,
    },
    /// The line is not part of the chain where it stands.
    Inserted { at: Place },
    /// A genuine record stands before the record that precedes it in the
    /// chain; `expected` (seq) should stand here.
    Reordered {
        at: Place,
        expected: u64,
        expected_at: Option<Place>,
    },
    /// A checkpoint whose chain fields hold but whose signature does not:
    /// a line between the previous checkpoint and it was rewritten along
    /// with the chain, or it was signed by another key.
    BadSignature {
        at: Place,
        since: Option<Place>,
        key_id: Option<String>,
    },
    /// The last line of the last file ends without a newline and is no
    /// record: the file was cut mid-line.
    Cut { at: Place },
    /// A line that is not a record: added, or changed beyond reading.
    NotARecord { at: Place },
}

/// What follows the last checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The log ends with a closing checkpoint: nothing unsigned.
    Sealed { at: Place },
    /// Records after the last checkpoint (`None`: there is none) are
    /// unsigned: they may have been rewritten, and records after them
    /// removed.
    Unsigned {
        after: Option<Place>,
        first: Place,
        last: Place,
    },
    /// The log ends with a periodic checkpoint, not a closing one: records
    /// after it may have been removed (or rampart stopped without closing).
    Open { at: Place },
    /// No record at all.
    Empty,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub files: Vec<String>,
    /// Chained records checked, up to the problem if any.
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Lines before the chain's first record, written before rampart
    /// chained its audit log: kept, not covered.
    pub unchained: usize,
    /// Signed checkpoints verified.
    pub checkpoints: u64,
    pub problem: Option<Problem>,
    pub tail: Tail,
}

/// The verdict, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every record chained and signed, ending with a closing checkpoint.
    Intact,
    /// A record was modified, deleted, inserted or reordered.
    Tampered,
    /// Intact as far as signed, but the tail is not sealed: it may have
    /// been truncated (or the log is still being written).
    Unsealed,
}

impl Report {
    pub fn outcome(&self) -> Outcome {
        match (&self.problem, &self.tail) {
            (Some(_), _) => Outcome::Tampered,
            (None, Tail::Sealed { .. }) => Outcome::Intact,
            (None, _) => Outcome::Unsealed,
        }
    }

    fn place(&self, p: &Place) -> String {
        let name = self.files.get(p.file).map(String::as_str).unwrap_or("?");
        match p.seq {
            Some(seq) => format!("{name} line {} (seq {seq})", p.line),
            None => format!("{name} line {}", p.line),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(problem) = &self.problem {
            let text = match problem {
                Problem::Modified { at } => format!("{}: modified", self.place(at)),
                Problem::Deleted { after, from, to } => {
                    let what = if from == to {
                        format!("record seq {from} deleted")
                    } else {
                        format!("records seq {from}–{to} deleted")
                    };
                    match after {
                        Some(p) => format!("{what} after {}", self.place(p)),
                        None => format!("{what} before the first line"),
                    }
                }
                Problem::Inserted { at } => {
                    format!("{}: inserted (not part of the chain here)", self.place(at))
                }
                Problem::Reordered {
                    at,
                    expected,
                    expected_at,
                } => match expected_at {
                    Some(p) => format!(
                        "{}: reordered (seq {expected} should come here; it is at {})",
                        self.place(at),
                        self.place(p)
                    ),
                    None => format!(
                        "{}: reordered (seq {expected} should come here)",
                        self.place(at)
                    ),
                },
                Problem::BadSignature { at, since, key_id } => {
                    let since = match since {
                        Some(p) => format!("after {}", self.place(p)),
                        None => "before it".to_owned(),
                    };
                    match key_id {
                        Some(id) => format!(
                            "{}: checkpoint signed by another key ({id}), or a record {since} was rewritten",
                            self.place(at)
                        ),
                        None => format!(
                            "{}: checkpoint signature does not verify: a record {since} was rewritten",
                            self.place(at)
                        ),
                    }
                }
                Problem::Cut { at } => format!(
                    "{}: cut short (the file was truncated mid-record)",
                    self.place(at)
                ),
                Problem::NotARecord { at } => format!(
                    "{}: not an audit record (inserted, or modified beyond reading)",
                    self.place(at)
                ),
            };
            return writeln!(f, "TAMPERED: {text}");
        }
        let range = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!("seq {a}–{b}"),
            _ => "no record".to_owned(),
        };
        let files = match self.files.len() {
            1 => "1 file".to_owned(),
            n => format!("{n} files"),
        };
        let mut notes = String::new();
        if self.unchained > 0 {
            notes.push_str(&format!(
                "; the first {} line(s) predate the chain and are not covered",
                self.unchained
            ));
        }
        if self.first_seq.is_some_and(|s| s > 1) {
            notes
                .push_str("; it continues an earlier file: give that file first to check the link");
        }
        match &self.tail {
            Tail::Sealed { at } => writeln!(
                f,
                "ok: {range} in {files}, {} signed checkpoint(s), sealed by the closing checkpoint at {}{notes}",
                self.checkpoints,
                self.place(at)
            ),
            Tail::Unsigned { after, first, last } => {
                let after = match after {
                    Some(p) => format!("after the last checkpoint ({})", self.place(p)),
                    None => "with no checkpoint before them".to_owned(),
                };
                writeln!(
                    f,
                    "UNSEALED: {} to {} are unsigned, {after}: they may have been rewritten, and records after them removed ({range} in {files}{notes})",
                    self.place(first),
                    self.place(last)
                )
            }
            Tail::Open { at } => writeln!(
                f,
                "UNSEALED: the log ends at a periodic checkpoint ({}), not a closing one: records after it may have been removed, or rampart stopped without closing the log ({range} in {files}{notes})",
                self.place(at)
            ),
            Tail::Empty => writeln!(f, "UNSEALED: no record in {files}: the log is empty or was truncated"),
        }
    }
}

/// What a line says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    seq: u64,
    prev: Hash,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Event,
    FileStart,
    Checkpoint { closing: bool, key_id: String },
}

#[derive(Debug)]
struct Entry<'a> {
    file: usize,
    line: usize,
    bytes: &'a [u8],
    /// The last line of the last file, with no newline after it.
    unterminated: bool,
    hash: Hash,
    parsed: Parsed,
}

#[derive(Debug)]
enum Parsed {
    Record(Record),
    /// A JSON object without chain fields (an earlier rampart's line).
    Unchained,
    Unreadable,
}

fn parse(bytes: &[u8]) -> Parsed {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(bytes) else {
        return Parsed::Unreadable;
    };
    let (seq, prev) = match (map.get("seq"), map.get("prev")) {
        (None, None) => return Parsed::Unchained,
        (Some(seq), Some(prev)) => (seq.as_u64(), prev.as_str()),
        _ => return Parsed::Unreadable,
    };
    let (Some(seq), Some(prev)) = (seq, prev) else {
        return Parsed::Unreadable;
    };
    let mut hash = GENESIS;
    if prev.len() != 64 || hex::decode_to_slice(prev, &mut hash).is_err() {
        return Parsed::Unreadable;
    }
    let kind = match map.get("event").and_then(|e| e.as_str()) {
        Some(CHECKPOINT_EVENT) => Kind::Checkpoint {
            closing: map.get("closing").and_then(|c| c.as_bool()) == Some(true),
            key_id: map
                .get("key_id")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_owned(),
        },
        Some(FILE_EVENT) => Kind::FileStart,
        _ => Kind::Event,
    };
    Parsed::Record(Record {
        seq,
        prev: hash,
        kind,
    })
}

/// Where a writer reopening a log continues when `line` is its last
/// chained line: the head after it, and whether it is a closing
/// checkpoint. `None` when the line has no chain fields.
pub fn resume_after(line: &[u8]) -> Option<(Head, bool)> {
    match parse(line) {
        Parsed::Record(r) => Some((
            Head {
                seq: r.seq,
                hash: line_hash(line),
            },
            matches!(r.kind, Kind::Checkpoint { closing: true, .. }),
        )),
        _ => None,
    }
}

fn entries<'a>(files: &[LogFile<'a>]) -> Vec<Entry<'a>> {
    let mut out = Vec::new();
    for (file, f) in files.iter().enumerate() {
        let mut lines: Vec<&[u8]> = f.bytes.split(|b| *b == b'\n').collect();
        // A file ending in a newline leaves an empty piece after it.
        let terminated = lines.last().is_some_and(|l| l.is_empty());
        if terminated {
            lines.pop();
        }
        let count = lines.len();
        for (i, bytes) in lines.into_iter().enumerate() {
            out.push(Entry {
                file,
                line: i + 1,
                bytes,
                unterminated: !terminated && i + 1 == count && file + 1 == files.len(),
                hash: line_hash(bytes),
                parsed: parse(bytes),
            });
        }
    }
    out
}

/// Where the walk stands: the last accepted record (`at: None` for the
/// anchor a continued file starts from).
#[derive(Debug, Clone, Copy)]
struct Good {
    at: Option<usize>,
    seq: u64,
    hash: Hash,
    /// A checkpoint whose signature verified: its bytes are known good.
    signed: bool,
}

/// Verifies `files` (in order: each continues the one before) against
/// `key`: the first modified, deleted, inserted or reordered line, or how
/// far the signatures reach.
pub fn verify(files: &[LogFile<'_>], key: &VerifyingKey) -> Report {
    let entries = entries(files);
    let mut report = Report {
        files: files.iter().map(|f| f.name.to_owned()).collect(),
        records: 0,
        first_seq: None,
        last_seq: None,
        unchained: 0,
        checkpoints: 0,
        problem: None,
        tail: Tail::Empty,
    };
    let place = |i: usize| {
        let e: &Entry = &entries[i];
        Place {
            file: e.file,
            line: e.line,
            seq: match &e.parsed {
                Parsed::Record(r) => Some(r.seq),
                _ => None,
            },
        }
    };
    // Lines an earlier rampart wrote before chaining, at the very start.
    let unchained = entries
        .iter()
        .take_while(|e| e.file == 0 && matches!(e.parsed, Parsed::Unchained))
        .count();
    report.unchained = unchained;
    let Some(first) = entries.get(unchained) else {
        return report;
    };
    let Parsed::Record(r) = &first.parsed else {
        report.problem = Some(if first.unterminated {
            Problem::Cut {
                at: place(unchained),
            }
        } else {
            Problem::NotARecord {
                at: place(unchained),
            }
        });
        return report;
    };
    if r.kind != Kind::FileStart {
        report.problem = Some(Problem::Deleted {
            after: None,
            from: 1,
            to: r.seq.saturating_sub(1).max(1),
        });
        return report;
    }
    let mut good = if r.seq <= 1 {
        let expected = match unchained {
            0 => GENESIS,
            n => entries[n - 1].hash,
        };
        if r.prev != expected || r.seq == 0 {
            report.problem = Some(if unchained > 0 && r.prev == GENESIS {
                Problem::Inserted { at: place(0) }
            } else if unchained > 0 {
                Problem::Modified {
                    at: place(unchained - 1),
                }
            } else {
                Problem::Modified {
                    at: place(unchained),
                }
            });
            return report;
        }
        Good {
            at: unchained.checked_sub(1),
            seq: 0,
            hash: expected,
            signed: false,
        }
    } else {
        if unchained > 0 {
            report.problem = Some(Problem::Inserted { at: place(0) });
            return report;
        }
        Good {
            at: None,
            seq: r.seq - 1,
            hash: r.prev,
            signed: false,
        }
    };
    report.first_seq = Some(good.seq + 1);
    let expected_key = key_id(key);
    let mut last_checkpoint: Option<usize> = None;
    for i in unchained..entries.len() {
        let e = &entries[i];
        let Parsed::Record(r) = &e.parsed else {
            report.problem = Some(classify_unreadable(&entries, i, &good, place));
            return report;
        };
        if r.seq != good.seq + 1 || r.prev != good.hash {
            report.problem = Some(classify(&entries, i, &good, place));
            return report;
        }
        let mut signed = false;
        if let Kind::Checkpoint { key_id, .. } = &r.kind {
            if !checkpoint_signed(e.bytes, key) {
                report.problem = Some(Problem::BadSignature {
                    at: place(i),
                    since: last_checkpoint.map(place),
                    key_id: (*key_id != expected_key).then(|| key_id.clone()),
                });
                return report;
            }
            signed = true;
            report.checkpoints += 1;
            last_checkpoint = Some(i);
        }
        report.records += 1;
        report.last_seq = Some(r.seq);
        good = Good {
            at: Some(i),
            seq: r.seq,
            hash: e.hash,
            signed,
        };
    }
    let last = entries.len() - 1;
    report.tail = match last_checkpoint {
        Some(c) if c == last => match &entries[c].parsed {
            Parsed::Record(Record {
                kind: Kind::Checkpoint { closing: true, .. },
                ..
            }) => Tail::Sealed { at: place(c) },
            _ => Tail::Open { at: place(c) },
        },
        Some(c) => Tail::Unsigned {
            after: Some(place(c)),
            first: place(c + 1),
            last: place(last),
        },
        None => Tail::Unsigned {
            after: None,
            first: place(unchained),
            last: place(last),
        },
    };
    report
}

/// Whether `b` is the record after `a` in the chain.
fn links(a: &Entry, b: &Entry) -> bool {
    match (&a.parsed, &b.parsed) {
        (Parsed::Record(ra), Parsed::Record(rb)) => rb.prev == a.hash && rb.seq == ra.seq + 1,
        _ => false,
    }
}

fn record<'e>(e: &'e Entry<'_>) -> Option<&'e Record> {
    match &e.parsed {
        Parsed::Record(r) => Some(r),
        _ => None,
    }
}

/// The first line after the accepted ones that continues `good`.
fn successor(entries: &[Entry], good: &Good) -> Option<usize> {
    let from = good.at.map_or(0, |g| g + 1);
    (from..entries.len()).find(|&j| {
        record(&entries[j]).is_some_and(|r| r.prev == good.hash && r.seq == good.seq + 1)
    })
}

/// The line `i` continues, anywhere in the log.
fn predecessor(entries: &[Entry], i: usize) -> Option<usize> {
    let r = record(&entries[i])?;
    (0..entries.len()).find(|&x| x != i && links(&entries[x], &entries[i]) && r.seq > 0)
}

/// A record line at `i` that does not continue `good`: what happened.
fn classify(entries: &[Entry], i: usize, good: &Good, place: impl Fn(usize) -> Place) -> Problem {
    let Some(r) = record(&entries[i]) else {
        return Problem::NotARecord { at: place(i) };
    };
    let next = entries.get(i + 1);
    let next_seq = next.and_then(record).map(|n| n.seq);
    if let Some(j) = successor(entries, good) {
        // The record that should stand here is further on.
        return match predecessor(entries, i) {
            Some(x) if x > i => Problem::Reordered {
                at: place(i),
                expected: good.seq + 1,
                expected_at: Some(place(j)),
            },
            _ => Problem::Inserted { at: place(i) },
        };
    }
    if let Some(x) = predecessor(entries, i) {
        if x > i {
            return Problem::Reordered {
                at: place(i),
                expected: good.seq + 1,
                expected_at: None,
            };
        }
        // This line and the last accepted one both claim to follow `x`:
        // the accepted one was forged in (it leads nowhere), unless this
        // line is a copy of it or it is a signed checkpoint.
        if let Some(g) = good.at {
            let forked = record(&entries[g]).is_some_and(|gr| gr.seq == r.seq && gr.prev == r.prev);
            if forked && entries[g].hash != entries[i].hash && !good.signed {
                return Problem::Inserted { at: place(g) };
            }
        }
        // A copy of a record already seen.
        return Problem::Inserted { at: place(i) };
    }
    if r.seq == good.seq + 1 {
        // Either the previous line's bytes or this line's `prev` changed:
        // the next line tells which, when it continues this one.
        let this_intact = next.is_none_or(|n| links(&entries[i], n));
        return match good.at {
            Some(g) if this_intact && !good.signed => Problem::Modified { at: place(g) },
            _ => Problem::Modified { at: place(i) },
        };
    }
    if next_seq == Some(good.seq + 2) && !next.is_some_and(|n| links(&entries[i], n)) {
        // This line's own seq was changed.
        return Problem::Modified { at: place(i) };
    }
    if r.seq > good.seq + 1 {
        Problem::Deleted {
            after: good.at.map(&place),
            from: good.seq + 1,
            to: r.seq - 1,
        }
    } else {
        Problem::Inserted { at: place(i) }
    }
}

/// A line at `i` that is no record (not JSON, or chain fields unreadable).
fn classify_unreadable(
    entries: &[Entry],
    i: usize,
    good: &Good,
    place: impl Fn(usize) -> Place,
) -> Problem {
    if entries[i].unterminated {
        return Problem::Cut { at: place(i) };
    }
    match entries.get(i + 1).and_then(record) {
        Some(n) if n.prev == good.hash && n.seq == good.seq + 1 => {
            Problem::Inserted { at: place(i) }
        }
        Some(n) if n.seq == good.seq + 2 => Problem::Modified { at: place(i) },
        _ => Problem::NotARecord { at: place(i) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    /// A log of `n` event records after the file record, with a periodic
    /// checkpoint every `every` records and a closing one at the end.
    fn log(n: usize, every: usize) -> Vec<String> {
        let key = key();
        let mut head = Head::START;
        let mut lines = Vec::new();
        let mut push = |line: String, head: &mut Head| {
            *head = head.after(line.as_bytes());
            lines.push(line);
        };
        let file = event_line(&head, FILE_EVENT, 0);
        push(file, &mut head);
        for k in 0..n {
            let line = event_line(&head, "decision", k);
            push(line, &mut head);
            if (k + 1) % every == 0 {
                let cp = checkpoint_line(&head, false, "t", &key);
                push(cp, &mut head);
            }
        }
        let cp = checkpoint_line(&head, true, "t", &key);
        push(cp, &mut head);
        lines
    }

    fn event_line(head: &Head, event: &str, k: usize) -> String {
        let link = head.link();
        format!(
            r#"{{"event":"{event}","principal":"agent-{k}","time":"t","seq":{},"prev":"{}"}}"#,
            link.seq, link.prev
        )
    }

    fn text(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn check(lines: &[String]) -> Report {
        let t = text(lines);
        verify(
            &[LogFile {
                name: "a.jsonl",
                bytes: t.as_bytes(),
            }],
            &key().verifying_key(),
        )
    }

    fn at(line: usize, seq: u64) -> Place {
        Place {
            file: 0,
            line,
            seq: Some(seq),
        }
    }

    #[test]
    fn an_untouched_log_is_intact_and_sealed() {
        let lines = log(10, 4);
        let r = check(&lines);
        assert_eq!(r.outcome(), Outcome::Intact, "{r}");
        assert_eq!(r.first_seq, Some(1));
        assert_eq!(r.last_seq, Some(lines.len() as u64));
        assert_eq!(r.checkpoints, 3);
        assert!(r.to_string().starts_with("ok: seq 1–"), "{r}");
    }

    #[test]
    fn a_checkpoint_verifies_only_with_its_key_and_its_own_bytes() {
        let head = Head::START.after(b"x");
        let line = checkpoint_line(&head, true, "t", &key());
        assert!(checkpoint_signed(line.as_bytes(), &key().verifying_key()));
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(!checkpoint_signed(line.as_bytes(), &other));
        let flipped = line.replace("\"closing\":true", "\"closing\":false");
        assert!(!checkpoint_signed(
            flipped.as_bytes(),
            &key().verifying_key()
        ));
        assert!(line.contains(&format!(
            "\"seq\":2,\"prev\":\"{}\"",
            hex::encode(head.hash)
        )));
    }

    #[test]
    fn a_modified_record_is_named() {
        let mut lines = log(10, 4);
        lines[2] = lines[2].replace("agent-1", "agent-X");
        let r = check(&lines);
        assert_eq!(r.problem, Some(Problem::Modified { at: at(3, 3) }), "{r}");
        assert_eq!(
            r.to_string(),
            "TAMPERED: a.jsonl line 3 (seq 3): modified\n"
        );
    }

    #[test]
    fn a_modified_prev_field_names_its_own_line() {
        let mut lines = log(10, 4);
        let bad = "f".repeat(64);
        let start = lines[2].find("\"prev\":\"").unwrap() + 8;
        lines[2].replace_range(start..start + 64, &bad);
        let r = check(&lines);
        assert_eq!(r.problem, Some(Problem::Modified { at: at(3, 3) }), "{r}");
    }

    #[test]
    fn a_deleted_record_is_named_by_seq() {
        let mut lines = log(10, 4);
        lines.remove(3);
        let r = check(&lines);
        assert_eq!(
            r.problem,
            Some(Problem::Deleted {
                after: Some(at(3, 3)),
                from: 4,
                to: 4
            }),
            "{r}"
        );
        assert_eq!(
            r.to_string(),
            "TAMPERED: record seq 4 deleted after a.jsonl line 3 (seq 3)\n"
        );
        lines.remove(3);
        lines.remove(3);
        let r = check(&lines);
        assert!(r.to_string().contains("records seq 4–6 deleted"), "{r}");
    }

    #[test]
    fn an_inserted_line_is_named() {
        let mut lines = log(10, 4);
        // A forged record that even links to the one before it.
        let head = Head {
            seq: 3,
            hash: line_hash(lines[2].as_bytes()),
        };
        lines.insert(3, event_line(&head, "decision", 99));
        let r = check(&lines);
        assert_eq!(r.problem, Some(Problem::Inserted { at: at(4, 4) }), "{r}");
        // A copy of an earlier record.
        let mut lines = log(10, 4);
        lines.insert(5, lines[1].clone());
        let r = check(&lines);
        assert_eq!(r.problem, Some(Problem::Inserted { at: at(6, 2) }), "{r}");
        // Not a record at all.
        let mut lines = log(10, 4);
        lines.insert(5, "hello".into());
        let r = check(&lines);
        assert_eq!(
            r.problem,
            Some(Problem::Inserted {
                at: Place {
                    file: 0,
                    line: 6,
                    seq: None
                }
            }),
            "{r}"
        );
    }

    #[test]
    fn swapped_records_are_reordered() {
        let mut lines = log(10, 4);
        lines.swap(3, 4);
        let r = check(&lines);
        assert_eq!(
            r.problem,
            Some(Problem::Reordered {
                at: at(4, 5),
                expected: 4,
                expected_at: Some(at(5, 4))
            }),
            "{r}"
        );
        assert_eq!(
            r.to_string(),
            "TAMPERED: a.jsonl line 4 (seq 5): reordered (seq 4 should come here; it is at a.jsonl line 5 (seq 4))\n"
        );
        // Moved far ahead.
        let mut lines = log(10, 4);
        let moved = lines.remove(2);
        lines.insert(7, moved);
        let r = check(&lines);
        assert!(
            matches!(r.problem, Some(Problem::Reordered { expected: 3, .. })),
            "{r}"
        );
    }

    #[test]
    fn a_chain_rewritten_up_to_a_checkpoint_fails_its_signature() {
        let lines = log(10, 4);
        // Rewrite record 3 and re-chain everything after it.
        let mut forged = lines[..2].to_vec();
        let mut head = Head {
            seq: 2,
            hash: line_hash(lines[1].as_bytes()),
        };
        for line in &lines[2..] {
            let body = line
                .split(",\"seq\":")
                .next()
                .unwrap()
                .replace("agent-1", "agent-X");
            let link = head.link();
            let new = format!("{body},\"seq\":{},\"prev\":\"{}\"", link.seq, link.prev);
            let new = if line.contains("signature") {
                // Keep the old signature after the re-chained fields.
                let sig = line.split(",\"signature\":").nth(1).unwrap();
                format!("{new},\"signature\":{sig}")
            } else {
                format!("{new}}}")
            };
            head = head.after(new.as_bytes());
            forged.push(new);
        }
        let r = check(&forged);
        assert!(
            matches!(
                r.problem,
                Some(Problem::BadSignature {
                    at: Place { line: 6, .. },
                    since: None,
                    key_id: None
                })
            ),
            "{r}"
        );
    }

    #[test]
    fn another_key_is_named() {
        let other = SigningKey::from_bytes(&[9; 32]);
        let mut lines = vec![event_line(&Head::START, FILE_EVENT, 0)];
        let head = Head::START.after(lines[0].as_bytes());
        lines.push(checkpoint_line(&head, true, "t", &other));
        let r = check(&lines);
        assert!(r.to_string().contains("signed by another key"), "{r}");
    }

    #[test]
    fn tails_after_the_last_checkpoint_are_unsealed() {
        let lines = log(10, 4);
        // Truncated after a periodic checkpoint.
        let r = check(&lines[..6]);
        assert_eq!(r.tail, Tail::Open { at: at(6, 6) }, "{r}");
        assert_eq!(r.outcome(), Outcome::Unsealed);
        // Truncated after records following a checkpoint.
        let r = check(&lines[..8]);
        assert_eq!(
            r.tail,
            Tail::Unsigned {
                after: Some(at(6, 6)),
                first: at(7, 7),
                last: at(8, 8)
            },
            "{r}"
        );
        assert!(
            r.to_string().starts_with(
                "UNSEALED: a.jsonl line 7 (seq 7) to a.jsonl line 8 (seq 8) are unsigned"
            ),
            "{r}"
        );
        // Cut mid-line.
        let mut t = text(&lines);
        t.truncate(t.len() - 20);
        let r = verify(
            &[LogFile {
                name: "a.jsonl",
                bytes: t.as_bytes(),
            }],
            &key().verifying_key(),
        );
        assert!(matches!(r.problem, Some(Problem::Cut { .. })), "{r}");
        // Nothing left.
        let r = check(&[]);
        assert_eq!(r.tail, Tail::Empty);
        assert_eq!(r.outcome(), Outcome::Unsealed);
    }

    #[test]
    fn a_log_missing_its_first_lines_says_so() {
        let lines = log(10, 4);
        let r = check(&lines[2..]);
        assert_eq!(
            r.problem,
            Some(Problem::Deleted {
                after: None,
                from: 1,
                to: 2
            }),
            "{r}"
        );
    }

    #[test]
    fn rotated_files_verify_in_order_and_a_missing_one_is_a_deletion() {
        let key = key();
        let mut head = Head::START;
        let mut files: Vec<Vec<String>> = Vec::new();
        for f in 0..3 {
            let mut lines = Vec::new();
            let first = event_line(&head, FILE_EVENT, f);
            head = head.after(first.as_bytes());
            lines.push(first);
            for k in 0..3 {
                let l = event_line(&head, "decision", k);
                head = head.after(l.as_bytes());
                lines.push(l);
            }
            let cp = checkpoint_line(&head, true, "t", &key);
            head = head.after(cp.as_bytes());
            lines.push(cp);
            files.push(lines);
        }
        let texts: Vec<String> = files.iter().map(|l| text(l)).collect();
        let names = ["a.1", "a.2", "a.3"];
        let all: Vec<LogFile> = texts
            .iter()
            .zip(names)
            .map(|(t, name)| LogFile {
                name,
                bytes: t.as_bytes(),
            })
            .collect();
        let r = verify(&all, &key.verifying_key());
        assert_eq!(r.outcome(), Outcome::Intact, "{r}");
        assert_eq!((r.first_seq, r.last_seq), (Some(1), Some(15)));
        // The last file alone continues an earlier one.
        let r = verify(&all[2..], &key.verifying_key());
        assert_eq!(r.outcome(), Outcome::Intact, "{r}");
        assert!(r.to_string().contains("continues an earlier file"), "{r}");
        // The middle file left out.
        let r = verify(&[all[0], all[2]], &key.verifying_key());
        assert_eq!(
            r.problem,
            Some(Problem::Deleted {
                after: Some(at(5, 5)),
                from: 6,
                to: 10
            }),
            "{r}"
        );
        // Out of order.
        let r = verify(&[all[1], all[0]], &key.verifying_key());
        assert_eq!(r.outcome(), Outcome::Tampered, "{r}");
    }

    #[test]
    fn lines_before_the_chain_are_counted_not_covered() {
        let old = r#"{"event":"elevation.requested","time":"t"}"#.to_owned();
        let key = key();
        let head = Head {
            seq: 0,
            hash: line_hash(old.as_bytes()),
        };
        let first = event_line(&head, FILE_EVENT, 0);
        let head = head.after(first.as_bytes());
        let cp = checkpoint_line(&head, true, "t", &key);
        let r = check(&[old.clone(), first.clone(), cp.clone()]);
        assert_eq!(r.outcome(), Outcome::Intact, "{r}");
        assert_eq!(r.unchained, 1);
        // A line slipped in before a chain that began with nothing.
        let lines = log(2, 5);
        let mut with = vec![old];
        with.extend(lines);
        let r = check(&with);
        assert!(
            matches!(
                r.problem,
                Some(Problem::Inserted {
                    at: Place { line: 1, .. }
                })
            ),
            "{r}"
        );
    }

    /// One random change to a sealed log.
    #[derive(Debug, Clone)]
    enum Edit {
        FlipByte { at: usize, to: u8 },
        Delete { line: usize },
        DuplicateLine { from: usize, to: usize },
        InsertText { line: usize, text: String },
        Swap { a: usize, b: usize },
        Truncate { keep: usize },
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let i = 0usize..1000;
        prop_oneof![
            (0usize..100_000, any::<u8>()).prop_map(|(at, to)| Edit::FlipByte { at, to }),
            i.clone().prop_map(|line| Edit::Delete { line }),
            (i.clone(), i.clone()).prop_map(|(from, to)| Edit::DuplicateLine { from, to }),
            (i.clone(), "[ -~]{0,40}").prop_map(|(line, text)| Edit::InsertText { line, text }),
            (i.clone(), i.clone()).prop_map(|(a, b)| Edit::Swap { a, b }),
            (0usize..100_000).prop_map(|keep| Edit::Truncate { keep }),
        ]
    }

    /// Applies `edit`; `None` when it would change nothing.
    fn apply(lines: &[String], edit: &Edit) -> Option<Vec<u8>> {
        let n = lines.len();
        let mut lines = lines.to_vec();
        match edit {
            Edit::FlipByte { at, to } => {
                let mut t = text(&lines).into_bytes();
                let at = at % t.len();
                if t[at] == *to {
                    return None;
                }
                t[at] = *to;
                return Some(t);
            }
            Edit::Delete { line } => {
                lines.remove(line % n);
            }
            Edit::DuplicateLine { from, to } => {
                let l = lines[from % n].clone();
                lines.insert(to % (n + 1), l);
            }
            Edit::InsertText { line, text } => lines.insert(line % (n + 1), text.clone()),
            Edit::Swap { a, b } => {
                let (a, b) = (a % n, b % n);
                if lines[a] == lines[b] {
                    return None;
                }
                lines.swap(a, b);
            }
            Edit::Truncate { keep } => {
                let mut t = text(&lines).into_bytes();
                let keep = keep % t.len();
                // Dropping only the final newline leaves every line whole.
                if keep + 1 == t.len() && t.ends_with(b"\n") {
                    return None;
                }
                t.truncate(keep);
                return Some(t);
            }
        }
        Some(text(&lines).into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the edit, a sealed log no longer verifies as intact.
        #[test]
        fn every_edit_of_a_sealed_log_is_detected(n in 1usize..25, every in 1usize..8, e in edit()) {
            let lines = log(n, every);
            prop_assume!(check(&lines).outcome() == Outcome::Intact);
            if let Some(edited) = apply(&lines, &e) {
                prop_assume!(edited != text(&lines).into_bytes());
                let r = verify(&[LogFile { name: "a", bytes: &edited }], &key().verifying_key());
                prop_assert_ne!(r.outcome(), Outcome::Intact, "{:?} went unnoticed: {}", e, r);
            }
        }

        /// Flipping any byte (valid UTF-8 or not) is detected.
        #[test]
        fn every_byte_flip_is_detected(n in 1usize..12, at in 0usize..100_000, to in any::<u8>()) {
            let lines = log(n, 3);
            let mut t = text(&lines).into_bytes();
            let at = at % t.len();
            prop_assume!(t[at] != to);
            t[at] = to;
            let r = verify(&[LogFile { name: "a", bytes: &t }], &key().verifying_key());
            prop_assert_ne!(r.outcome(), Outcome::Intact, "flip at {} went unnoticed: {}", at, r);
        }
    }
}
