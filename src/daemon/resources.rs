//! Turning the serve flags into opened resources, in one place: the
//! snapshot, the state store, the tokens, the audit log and the TLS files.
//! Nothing here needs the async runtime, so a bad flag is reported before
//! one is built.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StartError;
use crate::audit::keys::load_signing_key;
use crate::audit::{AuditLog, Sealing};
use crate::cli::ServeArgs;
use crate::elevation::Store;
use crate::server::{TlsFiles, Tokens};
use crate::snapshot::{self, CompiledSnapshot};

/// Everything the daemon serves from, already opened.
pub struct Resources {
    pub snapshot: CompiledSnapshot,
    /// The file `snapshot` was read from: watched, and reloaded on SIGHUP
    /// and through Admin. `None` serves `snapshot` as given, never reloaded.
    pub snapshot_file: Option<PathBuf>,
    pub store: Store,
    /// Where `store` lives (`None`: in memory), named in errors.
    pub state_dir: Option<PathBuf>,
    /// Bearer tokens (and certificate subjects) for the admin listener.
    pub tokens: Tokens,
    pub audit_log: Option<Arc<AuditLog>>,
    pub tls: Option<TlsFiles>,
}

impl Resources {
    /// Opens what the flags name, stopping at the first failure.
    pub fn open(args: &ServeArgs) -> Result<Resources, StartError> {
        let snapshot = match &args.snapshot {
            Some(path) => snapshot::load_file(path),
            None => snapshot::demo(),
        }
        .map_err(|source| StartError::Snapshot {
            path: args.snapshot.clone(),
            source,
        })?;
        let store = match &args.state_dir {
            Some(dir) => Store::open(dir),
            None => {
                tracing::warn!(
                    "no --state-dir: elevations, grants and the audit trail live in memory only"
                );
                Store::in_memory()
            }
        }
        .map_err(|source| StartError::StateStore {
            dir: args.state_dir.clone(),
            source,
        })?;
        let tokens = open_tokens(args)?;
        let sealing = match &args.audit_signing_key {
            Some(path) => Some(Sealing {
                key: load_signing_key(path).map_err(StartError::AuditKey)?,
                records: args.audit_checkpoint_records,
                interval: args.audit_checkpoint_interval,
            }),
            None => None,
        };
        let audit_log = match &args.audit_log {
            Some(path) => Some(Arc::new(AuditLog::open_with(path, sealing).map_err(
                |source| StartError::AuditLog {
                    path: path.clone(),
                    source,
                },
            )?)),
            None => None,
        };
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert_pem: read("--tls-cert", cert)?,
                key_pem: read("--tls-key", key)?,
                admin_client_ca_pem: args
                    .admin_client_ca
                    .as_deref()
                    .map(|ca| read("--admin-client-ca", ca))
                    .transpose()?,
            }),
            _ => None,
        };
        Ok(Resources {
            snapshot,
            snapshot_file: args.snapshot.clone(),
            store,
            state_dir: args.state_dir.clone(),
            tokens,
            audit_log,
            tls,
        })
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::Tls {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// Where the admin listener's tokens come from.
#[derive(Debug, PartialEq, Eq)]
enum TokenSource<'a> {
    File(&'a Path),
    /// Well-known demo tokens: only for the embedded demo, and only while
    /// the admin listener is reachable from this host alone.
    Demo,
    /// No tokens: every Approvals and Admin call is unauthenticated.
    None,
}

fn token_source(file: Option<&Path>, demo_snapshot: bool, admin: SocketAddr) -> TokenSource<'_> {
    match file {
        Some(path) => TokenSource::File(path),
        None if demo_snapshot && admin.ip().is_loopback() => TokenSource::Demo,
        None => TokenSource::None,
    }
}

fn open_tokens(args: &ServeArgs) -> Result<Tokens, StartError> {
    let source = token_source(
        args.tokens.as_deref(),
        args.snapshot.is_none(),
        args.admin_listen,
    );
    Ok(match source {
        TokenSource::File(path) => Tokens::load(path).map_err(|message| StartError::Tokens {
            path: path.to_owned(),
            message,
        })?,
        TokenSource::Demo => {
            tracing::warn!(
                "demo tokens (embedded demo snapshot on loopback only): 'demo-oncall' for oncall, 'demo-admin' for it-admin (admin)"
            );
            Tokens::from_plain(&[
                ("demo-oncall", "oncall", false),
                ("demo-admin", "it-admin", true),
            ])
        }
        TokenSource::None => {
            tracing::warn!("no --tokens: every Approvals and Admin call will be UNAUTHENTICATED");
            Tokens::default()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn demo_tokens_only_for_the_demo_on_loopback() {
        assert_eq!(
            token_source(None, true, addr("127.0.0.1:50052")),
            TokenSource::Demo
        );
        assert_eq!(
            token_source(None, true, addr("[::1]:50052")),
            TokenSource::Demo
        );
    }

    #[test]
    fn demo_tokens_never_reach_beyond_loopback() {
        for admin in ["0.0.0.0:50052", "[::]:50052", "10.0.0.5:50052"] {
            assert_eq!(
                token_source(None, true, addr(admin)),
                TokenSource::None,
                "{admin}"
            );
        }
    }

    #[test]
    fn demo_tokens_never_guard_a_real_snapshot() {
        assert_eq!(
            token_source(None, false, addr("127.0.0.1:50052")),
            TokenSource::None
        );
    }

    #[test]
    fn a_tokens_file_always_wins() {
        let file = Path::new("tokens.yaml");
        for (demo, admin) in [(true, "127.0.0.1:1"), (false, "0.0.0.0:1")] {
            assert_eq!(
                token_source(Some(file), demo, addr(admin)),
                TokenSource::File(file)
            );
        }
    }
}
