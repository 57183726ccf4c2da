//! Unix signals: SIGTERM or Ctrl-C stops the daemon; SIGHUP reopens the
//! audit log, reloads the snapshot and re-reads the tokens files.

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

/// On every SIGHUP, off the async workers: reopens the audit log, reloads
/// the snapshot (which re-reads the tokens when it changed) and re-reads
/// the tokens against the snapshot serving.
pub(crate) async fn reload_on_sighup(
    reloader: Option<Arc<Reloader>>,
    files: Arc<super::ReopenedFiles>,
    broker: Arc<crate::elevation::Broker>,
) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reopening the audit log, reloading the snapshot and tokens");
        let (reloader, files, broker) = (reloader.clone(), files.clone(), broker.clone());
        let _ = tokio::task::spawn_blocking(move || {
            files.reopen_audit_log();
            if let Some(r) = reloader {
                r.reload();
            }
            files.reload_tokens(&broker.engine().current().snapshot);
        })
        .await;
    }
}
