//! Live reload (docs/operations.md#live-reload): a new snapshot is read, validated and compiled
//! off to the side and handed over only when it is good; a bad one is
//! reported and the last good one keeps serving.
//!
//! The watch is on the snapshot's directory, not the file: a Kubernetes
//! ConfigMap update swaps a `..data` symlink, which a watch on the file
//! itself would not survive. Only events that end a write count — a file
//! closed after writing, created, renamed or removed — so a file being
//! written in place is not read half-way; a periodic poll catches whatever
//! the watch misses, and every read must settle: the file must stay the
//! same (inode, size, modification time) for a moment after it was read,
//! or it is read again. The path is re-resolved each time, and content
//! whose hash is unchanged is skipped. The safe way to update a snapshot
//! remains writing a new file and renaming it over the old one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::{file, load_file_within, CompiledSnapshot, SnapshotError, LOAD_BUDGET};
use notify::{RecursiveMode, Watcher};

/// How long a file must stay unchanged after it was read.
pub const SETTLE: Duration = Duration::from_millis(300);
/// How many times a changing file is read again before the reload gives up.
const SETTLE_TRIES: u32 = 20;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot is serving, with this revision.
    Reloaded(String),
    /// The file's content is what is serving already.
    Unchanged,
    /// The file is not a valid snapshot (or kept changing while it was
    /// read); the previous one keeps serving.
    Failed(String),
}

/// What identifies one version of a file without reading it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn version(path: &Path) -> Option<Version> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Version {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

type Apply = dyn Fn(Result<CompiledSnapshot, SnapshotError>) + Send + Sync;

/// Reloads one snapshot file into whatever `apply` hands it to.
pub struct Reloader {
    path: PathBuf,
    /// SHA-256 of the content serving (or last rejected), to skip repeats.
    last_hash: Mutex<Option<String>>,
    /// One reload at a time; each is bounded in time ([`LOAD_BUDGET`]) and
    /// size, so a bad file never holds up the reloads after it.
    running: Mutex<()>,
    apply: Box<Apply>,
    settle: Duration,
}

impl Reloader {
    /// `serving_hash` is the content hash of the snapshot loaded at start.
    pub fn new(
        path: PathBuf,
        serving_hash: Option<String>,
        apply: impl Fn(Result<CompiledSnapshot, SnapshotError>) + Send + Sync + 'static,
    ) -> Reloader {
        Reloader {
            path,
            last_hash: Mutex::new(serving_hash),
            running: Mutex::new(()),
            apply: Box::new(apply),
            settle: SETTLE,
        }
    }

    /// How long a file must stay unchanged after it was read (tests use a
    /// shorter or longer one).
    pub fn with_settle(mut self, settle: Duration) -> Reloader {
        self.settle = settle;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads if the file's content changed. Blocking: run it off the
    /// async workers (`spawn_blocking`).
    pub fn reload(&self) -> ReloadOutcome {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // Re-resolve the path each time: a symlink swap points it elsewhere.
        let hash = match self.settled_hash() {
            Ok(h) => h,
            Err(e) => {
                let message = e.to_string();
                tracing::error!("snapshot reload failed: {message}");
                (self.apply)(Err(e));
                return ReloadOutcome::Failed(message);
            }
        };
        {
            let last = self.last_hash.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_deref() == Some(hash.as_str()) {
                return ReloadOutcome::Unchanged;
            }
        }
        // The file is read again to load it (a JSON file as a stream, never
        // whole in memory); the content loaded must be the content settled.
        let loaded = load_file_within(&self.path, Instant::now() + LOAD_BUDGET).and_then(|s| {
            if s.info.content_sha256 == hash {
                Ok(s)
            } else {
                Err(SnapshotError::whole(
                    self.path.display().to_string(),
                    "the file changed while it was loaded; write the new snapshot to another \
                     file and rename it into place"
                        .into(),
                ))
            }
        });
        let outcome = match loaded {
            Ok(snapshot) => {
                let revision = snapshot.info.revision.clone();
                tracing::info!(revision = %revision, path = %self.path.display(), "snapshot reloaded");
                (self.apply)(Ok(snapshot));
                ReloadOutcome::Reloaded(revision)
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(
                    "snapshot reload rejected, the previous snapshot keeps serving: {message}"
                );
                (self.apply)(Err(e));
                ReloadOutcome::Failed(message)
            }
        };
        *self.last_hash.lock().unwrap_or_else(|e| e.into_inner()) = Some(hash);
        outcome
    }

    /// The content hash of the file once it has stopped changing: the same
    /// version before and after it was read, and still the same
    /// [`SETTLE`] later.
    fn settled_hash(&self) -> Result<String, SnapshotError> {
        self.settled_hash_with(|| std::thread::sleep(self.settle))
    }

    /// [`Reloader::settled_hash`], with what happens during the settle
    /// given by the caller (tests change the file there).
    fn settled_hash_with(&self, mut pause: impl FnMut()) -> Result<String, SnapshotError> {
        for _ in 0..SETTLE_TRIES {
            let before = version(&self.path);
            let hash = file::sha256(&self.path)?;
            if version(&self.path) != before {
                continue;
            }
            pause();
            if version(&self.path) == before {
                return Ok(hash);
            }
        }
        Err(SnapshotError::whole(
            self.path.display().to_string(),
            format!(
                "the file kept changing for {SETTLE_TRIES} reads; write the new snapshot \
                 to another file and rename it into place"
            ),
        ))
    }

    /// Watches the file's directory (debounced) and polls every `poll`,
    /// reloading on change, until the returned handle is dropped.
    pub fn watch(
        self: &Arc<Self>,
        debounce: Duration,
        poll: Duration,
    ) -> Result<ReloadWatch, notify::Error> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| ends_a_write(&e.kind)) {
                    let _ = tx.send(());
                }
            })?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(ReloadWatch {
            _watcher: Some(watcher),
            task: tokio::spawn(self.clone().run(Some(rx), debounce, poll)),
        })
    }

    /// Polls every `poll` without a directory watch (when one cannot be
    /// set up), until the returned handle is dropped.
    pub fn poll(self: &Arc<Self>, poll: Duration) -> ReloadWatch {
        ReloadWatch {
            _watcher: None,
            task: tokio::spawn(self.clone().run(None, Duration::ZERO, poll)),
        }
    }

    async fn run(
        self: Arc<Self>,
        mut events: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
        debounce: Duration,
        poll: Duration,
    ) {
        let mut tick = tokio::time::interval(poll);
        tick.tick().await;
        loop {
            tokio::select! {
                event = next(&mut events) => {
                    if event.is_none() {
                        return;
                    }
                    // Debounce: wait until the directory is quiet.
                    loop {
                        match tokio::time::timeout(debounce, next(&mut events)).await {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => {}
            }
            let r = self.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload()).await;
        }
    }
}

/// The next watch event; never, when there is no watch.
async fn next(events: &mut Option<tokio::sync::mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether a directory event means a write has ended: a file closed after
/// writing, created, renamed or removed (a ConfigMap's symlink swap is a
/// rename). Plain data writes are ignored: the file is still being written.
fn ends_a_write(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::EventKind;
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// A running watch; dropping it stops watching.
pub struct ReloadWatch {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReloadWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RenameMode};
    use notify::EventKind;

    #[test]
    fn only_events_that_end_a_write_trigger_a_reload() {
        assert!(ends_a_write(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(ends_a_write(&EventKind::Create(CreateKind::File)));
        assert!(ends_a_write(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(!ends_a_write(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(!ends_a_write(&EventKind::Access(AccessKind::Open(
            AccessMode::Write
        ))));
    }

    /// What a test reloader was handed: revisions, or error messages.
    type Seen = Arc<Mutex<Vec<Result<String, String>>>>;

    fn reloader(path: &Path) -> (Arc<Reloader>, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let r = Reloader::new(path.to_path_buf(), None, move |loaded| {
            let entry = loaded
                .map(|s| s.info.revision.clone())
                .map_err(|e| e.to_string());
            log.lock().unwrap().push(entry);
        })
        .with_settle(Duration::from_millis(20));
        (Arc::new(r), seen)
    }

    #[test]
    fn a_file_that_keeps_changing_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, "revision: r0\n").unwrap();
        let (r, _) = reloader(&path);
        // Rewritten during every settle: never read as settled.
        let mut n = 0;
        let written = || {
            n += 1;
            std::fs::write(&path, format!("revision: r{n}{}\n", " ".repeat(n))).unwrap();
        };
        let refused = r.settled_hash_with(written).unwrap_err().to_string();
        assert!(refused.contains("kept changing"), "{refused}");
        // Left alone during the settle, it is read.
        let read = r.settled_hash_with(|| {}).unwrap();
        use sha2::Digest;
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(read, hex::encode(sha2::Sha256::digest(bytes)));
        assert!(matches!(r.reload(), ReloadOutcome::Reloaded(_)));
    }

    #[test]
    fn a_bad_file_does_not_hold_up_the_next_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        std::fs::write(&path, bomb).unwrap();
        let (r, _) = reloader(&path);
        match r.reload() {
            ReloadOutcome::Failed(m) => assert!(m.contains("aliases expand"), "{m}"),
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, "revision: good\n").unwrap();
        assert_eq!(r.reload(), ReloadOutcome::Reloaded("good".into()));
    }

    #[test]
    fn a_refused_reload_names_every_problem_structural_ones_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(
            &path,
            "principals: [{ id: alice, typ: User }]\nroleAssignments:\n  - { principal: bob, role: Reeder, scope: / }\n",
        )
        .unwrap();
        let (r, seen) = reloader(&path);
        let ReloadOutcome::Failed(message) = r.reload() else {
            panic!("accepted");
        };
        assert!(message.contains("(3 problems)"), "{message}");
        for problem in [
            "s.yaml:1:27: principals[0] (alice): unknown field `typ`",
            "s.yaml:3:18: roleAssignments[0].principal: unknown principal 'bob'",
            "s.yaml:3:29: roleAssignments[0].role: unknown role 'Reeder' (did you mean 'Reader'?)",
        ] {
            assert!(message.contains(problem), "{problem}\n{message}");
        }
        // What the server records as the reload's error is the same list.
        assert_eq!(seen.lock().unwrap().last(), Some(&Err(message)));
    }
}
