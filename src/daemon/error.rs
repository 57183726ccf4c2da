//! Why rampart could not start (or stopped serving): each variant names the
//! resource and the flag that configures it, so the message says what to fix.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::elevation::StoreError;
use crate::server::ServeError;
use crate::snapshot::SnapshotError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The snapshot (the `--snapshot` file, or the embedded demo) is invalid.
    #[error("refusing to start: {}{source}", if .path.is_some() { "--snapshot " } else { "" })]
    Snapshot {
        path: Option<PathBuf>,
        source: SnapshotError,
    },
    /// The state store could not be opened or its records loaded.
    #[error("{}: {source}", state_store_name(.dir))]
    StateStore {
        dir: Option<PathBuf>,
        source: StoreError,
    },
    /// The shared state database could not be opened or its records loaded.
    #[error("cannot use --state-db {url}: {source}")]
    StateDb { url: String, source: StoreError },
    /// `--state-db` or `--state-db-ca` does not make a usable connection.
    #[error("{0}")]
    StateDbConfig(String),
    #[error("cannot load the {flag} file: {message}")]
    Tokens {
        flag: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("cannot load --notifications: {message}")]
    Notifications { path: PathBuf, message: String },
    #[error("cannot open --audit-log {}: {source}; give a file in an existing, writable directory", .path.display())]
    AuditLog { path: PathBuf, source: io::Error },
    /// A TLS file (`--tls-cert`, `--tls-key`, `--admin-client-ca`) is unreadable.
    #[error("cannot read {flag} {}: {source}", .path.display())]
    Tls {
        flag: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The TLS files were read but do not make a usable configuration.
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
    #[error("cannot listen on {flag} {addr}: {source}{}", listen_hint(.flag, .source))]
    Listen {
        /// The flag naming the address, e.g. `--admin-listen`.
        flag: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot listen on --uds {path}: {source}")]
    UnixSocket { path: String, source: io::Error },
    /// The admin listener or the Authorizer beyond loopback without TLS.
    #[error(transparent)]
    AdminNotLoopback(ServeError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    /// A listener failed while serving (or gRPC reflection could not be built).
    #[error(transparent)]
    Serve(ServeError),
}

fn state_store_name(dir: &Option<PathBuf>) -> String {
    match dir {
        Some(dir) => format!("cannot use --state-dir {}", dir.display()),
        None => "cannot start the in-memory state store".to_owned(),
    }
}

fn listen_hint(flag: &str, source: &io::Error) -> String {
    match source.kind() {
        io::ErrorKind::AddrInUse => {
            format!("; another process holds that port: stop it or give another {flag}")
        }
        io::ErrorKind::AddrNotAvailable => {
            format!("; the address is not on this host: give {flag} an address this host has")
        }
        _ => String::new(),
    }
}

impl From<ServeError> for StartError {
    fn from(e: ServeError) -> StartError {
        match e {
            ServeError::Bind { flag, addr, source } => StartError::Listen { flag, addr, source },
            ServeError::Unix { path, source } => StartError::UnixSocket { path, source },
            ServeError::Tls(message) => StartError::TlsSetup(message),
            e @ (ServeError::AdminNotLoopback(_) | ServeError::AuthorizerNotLoopback(_)) => {
                StartError::AdminNotLoopback(e)
            }
            e => StartError::Serve(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_says_which_flag_to_change() {
        let e = StartError::Listen {
            flag: "--metrics-listen",
            addr: "127.0.0.1:9090".parse().unwrap(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("cannot listen on --metrics-listen 127.0.0.1:9090"),
            "{text}"
        );
        assert!(text.ends_with("give another --metrics-listen"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn the_demo_snapshot_is_not_blamed_on_a_flag() {
        let source = SnapshotError {
            source_name: "embedded:demo".into(),
            problems: Vec::new(),
        };
        let demo = StartError::Snapshot {
            path: None,
            source: source.clone(),
        };
        assert!(!demo.to_string().contains("--snapshot"), "{demo}");
        let file = StartError::Snapshot {
            path: Some("s.yaml".into()),
            source,
        };
        assert!(
            file.to_string()
                .starts_with("refusing to start: --snapshot "),
            "{file}"
        );
    }
}
