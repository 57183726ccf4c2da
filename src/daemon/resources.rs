//! Turning the serve flags into opened resources, in one place: the
//! snapshot, the state store, the tokens, the audit log and the TLS files.
//! Nothing here needs the async runtime, so a bad flag is reported before
//! one is built.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StartError;
use crate::audit::AuditLog;
use crate::cli::ServeArgs;
use crate::elevation::{DbConfig, PgStore, StateStore, Store};
use crate::server::{AuthorizerTokens, TlsFiles, Tokens};
use crate::snapshot::{self, CompiledSnapshot};

/// Everything the daemon serves from, already opened.
pub struct Resources {
    pub snapshot: CompiledSnapshot,
    /// The file `snapshot` was read from: watched, and reloaded on SIGHUP
    /// and through Admin. `None` serves `snapshot` as given, never reloaded.
    pub snapshot_file: Option<PathBuf>,
    pub store: Box<dyn StateStore>,
    /// Where `store` lives (`None`: in memory or `state_db`), named in
    /// errors.
    pub state_dir: Option<PathBuf>,
    /// The shared database `store` is (its URL without the password).
    pub state_db: Option<String>,
    /// Bearer tokens (and certificate subjects) for the admin listener.
    pub tokens: Tokens,
    /// The file `tokens` came from: re-read on SIGHUP and with the snapshot.
    pub tokens_file: Option<PathBuf>,
    /// Tokens every Authorizer call must bear, and their file.
    pub authorizer_tokens: Option<(PathBuf, AuthorizerTokens)>,
    pub audit_log: Option<Arc<AuditLog>>,
    pub tls: Option<TlsFiles>,
    /// Problems that do not stop the start, logged as warnings.
    pub warnings: Vec<String>,
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
        let (store, state_db) = open_store(args)?;
        let mut warnings = Vec::new();
        let tokens = open_tokens(args, &snapshot, &mut warnings)?;
        let authorizer_tokens = match &args.authorizer_tokens {
            Some(path) => {
                let (tokens, found) =
                    AuthorizerTokens::load(path).map_err(|message| StartError::Tokens {
                        flag: "--authorizer-tokens",
                        path: path.clone(),
                        message,
                    })?;
                warnings.extend(found);
                Some((path.clone(), tokens))
            }
            None => None,
        };
        if args.audit_log.is_none() && args.audit_decisions_sample > 0.0 {
            warnings.push(format!(
                "--audit-decisions-sample {} has no effect without --audit-log: give --audit-log FILE to record decisions",
                args.audit_decisions_sample
            ));
        }
        let audit_log = match &args.audit_log {
            Some(path) => Some(Arc::new(AuditLog::open(path).map_err(|source| {
                StartError::AuditLog {
                    path: path.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let path_text = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(String::new, |p| p.display().to_string())
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
                authorizer_client_ca_pem: args
                    .authorizer_client_ca
                    .as_deref()
                    .map(|ca| read("--authorizer-client-ca", ca))
                    .transpose()?,
                cert_path: cert.display().to_string(),
                key_path: key.display().to_string(),
                admin_client_ca_path: path_text(&args.admin_client_ca),
                authorizer_client_ca_path: path_text(&args.authorizer_client_ca),
            }),
            _ => None,
        };
        // Checked before the state store or any listener is touched.
        if let Some(tls) = &tls {
            tls.check().map_err(StartError::TlsSetup)?;
        }
        Ok(Resources {
            snapshot,
            snapshot_file: args.snapshot.clone(),
            store,
            state_dir: args.state_dir.clone(),
            state_db,
            tokens,
            tokens_file: args.tokens.clone(),
            authorizer_tokens,
            audit_log,
            tls,
            warnings,
        })
    }
}

/// File descriptors kept aside from the listeners' caps: the state store,
/// the audit log, the snapshot watch, outgoing webhooks, the metrics
/// listener.
const SPARE_DESCRIPTORS: usize = 128;

/// Raises the soft open-file limit to the hard one, so the listeners' caps
/// (not the limit) decide when connections are refused; warns when the
/// caps together exceed even the hard limit (a flood on one listener could
/// then starve the others of descriptors).
pub fn raise_open_file_limit(caps_total: usize, metrics: bool) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = caps_total + SPARE_DESCRIPTORS + if metrics { 64 } else { 0 };
    let available = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
    if let Some(warning) = descriptor_warning(needed, available) {
        tracing::warn!("{warning}");
    }
}

fn descriptor_warning(needed: usize, available: usize) -> Option<String> {
    (needed > available).then(|| {
        format!(
            "the open-file limit is {available}, below the {needed} descriptors the connection caps may need (--max-connections, --max-admin-connections, --max-health-connections, plus {SPARE_DESCRIPTORS} spare): a flood on the Authorizer could starve the other listeners; lower the caps or raise the limit (ulimit -n, LimitNOFILE)"
        )
    })
}

/// The state store the flags name: the shared database (`--state-db`),
/// the SQLite file under `--state-dir`, or memory; and the database's
/// name for messages.
fn open_store(args: &ServeArgs) -> Result<(Box<dyn StateStore>, Option<String>), StartError> {
    if let Some(url) = &args.state_db {
        let ca = match &args.state_db_ca {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                StartError::StateDbConfig(format!(
                    "cannot read --state-db-ca {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        let config = DbConfig::parse(url, ca).map_err(StartError::StateDbConfig)?;
        let store = PgStore::open(&config).map_err(|source| StartError::StateDb {
            url: config.display.clone(),
            source,
        })?;
        tracing::info!(state_db = %config.display, "state shared through PostgreSQL");
        return Ok((Box::new(store), Some(config.display)));
    }
    let store = match &args.state_dir {
        Some(dir) => Store::open(dir),
        None => {
            tracing::warn!(
                "no --state-dir or --state-db: elevations, grants and the audit trail live in memory only"
            );
            Store::in_memory()
        }
    }
    .map_err(|source| StartError::StateStore {
        dir: args.state_dir.clone(),
        source,
    })?;
    Ok((Box::new(store), None))
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

fn open_tokens(
    args: &ServeArgs,
    snapshot: &CompiledSnapshot,
    warnings: &mut Vec<String>,
) -> Result<Tokens, StartError> {
    let source = token_source(
        args.tokens.as_deref(),
        args.snapshot.is_none(),
        args.admin_listen,
    );
    Ok(match source {
        TokenSource::File(path) => {
            let (tokens, found) =
                Tokens::load_checked(path, snapshot).map_err(|message| StartError::Tokens {
                    flag: "--tokens",
                    path: path.to_owned(),
                    message,
                })?;
            warnings.extend(found);
            tokens
        }
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
    fn caps_beyond_the_open_file_limit_are_reported() {
        assert_eq!(descriptor_warning(1000, 1024), None);
        let text = descriptor_warning(1472, 1024).unwrap();
        assert!(
            text.starts_with("the open-file limit is 1024, below the 1472 descriptors"),
            "{text}"
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
