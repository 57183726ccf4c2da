//! Unix signals: SIGTERM or Ctrl-C stops the daemon, SIGHUP reloads the
//! snapshot.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::snapshot::reload::Reloader;

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn terminate() {
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reloads the snapshot on every SIGHUP, off the async workers.
pub(crate) async fn reload_on_sighup(reloader: Arc<Reloader>) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the snapshot");
        let r = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || r.reload()).await;
    }
}
