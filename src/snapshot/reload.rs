//! Live reload (docs/operations.md#live-reload): a new snapshot is read, validated and compiled
//! off to the side and handed over only when it is good; a bad one is
//! reported and the last good one keeps serving.
//!
//! The watch is on the snapshot's directory, not the file: a Kubernetes
//! ConfigMap update swaps a `..data` symlink, which a watch on the file
//! itself would not survive. Events are debounced, the path is re-resolved
//! each time, content whose hash is unchanged is skipped, and a periodic
//! poll catches whatever the watch misses.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use super::{load_file, CompiledSnapshot, SnapshotError};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot is serving, with this revision.
    Reloaded(String),
    /// The file's content is what is serving already.
    Unchanged,
    /// The file is not a valid snapshot; the previous one keeps serving.
    Failed(String),
}

type Apply = dyn Fn(Result<CompiledSnapshot, SnapshotError>) + Send + Sync;

/// Reloads one snapshot file into whatever `apply` hands it to.
pub struct Reloader {
    path: PathBuf,
    /// SHA-256 of the content serving (or last rejected), to skip repeats.
    last_hash: Mutex<Option<String>>,
    /// One reload at a time.
    running: Mutex<()>,
    apply: Box<Apply>,
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
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads if the file's content changed. Blocking: run it off the
    /// async workers (`spawn_blocking`).
    pub fn reload(&self) -> ReloadOutcome {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // Re-resolve the path each time: a symlink swap points it elsewhere.
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                let message = format!("cannot read {}: {e}", self.path.display());
                tracing::error!("snapshot reload failed: {message}");
                (self.apply)(Err(SnapshotError {
                    source_name: self.path.display().to_string(),
                    problems: vec![super::Problem {
                        path: String::new(),
                        id: None,
                        message: message.clone(),
                        location: None,
                    }],
                }));
                return ReloadOutcome::Failed(message);
            }
        };
        let hash = hex::encode(Sha256::digest(&bytes));
        {
            let last = self.last_hash.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_deref() == Some(hash.as_str()) {
                return ReloadOutcome::Unchanged;
            }
        }
        let outcome = match load_file(&self.path) {
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

    /// Watches the file's directory (debounced) and polls every `poll`,
    /// reloading on change, until the returned handle is dropped.
    pub fn watch(
        self: &Arc<Self>,
        debounce: Duration,
        poll: Duration,
    ) -> Result<ReloadWatch, notify::Error> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    let _ = tx.send(());
                }
            })?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        let reloader = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.tick().await;
            loop {
                tokio::select! {
                    event = rx.recv() => {
                        if event.is_none() {
                            return;
                        }
                        // Debounce: wait until the directory is quiet.
                        loop {
                            match tokio::time::timeout(debounce, rx.recv()).await {
                                Ok(Some(())) => continue,
                                Ok(None) => return,
                                Err(_) => break,
                            }
                        }
                    }
                    _ = tick.tick() => {}
                }
                let r = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || r.reload()).await;
            }
        });
        Ok(ReloadWatch {
            _watcher: watcher,
            task,
        })
    }
}

/// A running watch; dropping it stops watching.
pub struct ReloadWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReloadWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
