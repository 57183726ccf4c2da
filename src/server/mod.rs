//! The gRPC edge: the `Authorizer` listener for enforcement points (with
//! Envoy's `envoy.service.auth.v3.Authorization` beside it), the
//! `Admin` listener for operators, and an optional health-only listener for
//! kubelet probes. Each serves gRPC reflection (v1 and v1alpha) and
//! `grpc.health.v1`, where readiness means "a snapshot is loaded" — it
//! always is once listening, since rampart refuses to start without one.

pub mod admin;
pub mod approvals;
pub mod auth;
pub mod authorizer;
pub mod convert;
pub mod metrics;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use tonic::service::interceptor::InterceptedService;

use crate::audit::AuditLog;
use crate::elevation::Broker;
use crate::proto::admin_server::AdminServer;
use crate::proto::approvals_server::ApprovalsServer;
use crate::proto::authorizer_server::AuthorizerServer;
use crate::snapshot::reload::Reloader;
use admin::AdminService;
use approvals::ApprovalsService;
pub use auth::Tokens;
use authorizer::AuthorizerService;

/// The largest request message accepted on the Authorizer listener (a full
/// batch fits comfortably).
pub const MAX_AUTHORIZER_MESSAGE: usize = 1 << 20;
/// The largest request message accepted on the admin listener.
pub const MAX_ADMIN_MESSAGE: usize = 64 << 10;

/// Where to listen, and who may call the admin listener.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub health_listen: Option<SocketAddr>,
    /// Bearer tokens for the admin listener (Approvals and Admin).
    pub tokens: Tokens,
    /// Allow the admin listener on a non-loopback address without TLS.
    pub insecure: bool,
    /// The JSON-lines audit file, and the share of decisions written to it.
    pub audit: Option<Arc<AuditLog>>,
    pub audit_decisions_sample: f64,
    /// Also serve the Authorizer on this Unix socket.
    pub uds: Option<std::path::PathBuf>,
    /// TLS for the Authorizer and admin listeners (the health listener
    /// stays plaintext: kubelet gRPC probes do not speak TLS).
    pub tls: Option<TlsFiles>,
    /// How Envoy's `Check` reads requests (identity source, elevations).
    pub ext_authz: Arc<crate::extauthz::ExtAuthzSettings>,
}

/// PEM material for TLS, read at start.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Clients of the admin listener may present a certificate signed by
    /// this CA; its subject maps to a principal (tokens file `subject:`).
    pub admin_client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("admin_client_ca", &self.admin_client_ca_pem.is_some())
            .finish()
    }
}

/// Binds a Unix socket, replacing a stale socket file (never another kind
/// of file).
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let fail = |source| ServeError::Unix {
        path: path.display().to_string(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail(std::io::Error::other("exists and is not a socket")));
        }
        std::fs::remove_file(path).map_err(fail)?;
    }
    tokio::net::UnixListener::bind(path).map_err(fail)
}

fn tls_builder(tls: &TlsFiles, admin: bool) -> Result<Server, ServeError> {
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
    if admin {
        if let Some(ca) = &tls.admin_client_ca_pem {
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true);
        }
    }
    Server::builder().tls_config(config).map_err(|e| {
        // tonic's own message is only "transport error"; the cause says which file.
        let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |c| c.to_string());
        ServeError::Tls(cause.trim_end_matches('.').to_owned())
    })
}

fn builder(tls: Option<&TlsFiles>, admin: bool) -> Result<Server, ServeError> {
    match tls {
        Some(tls) => tls_builder(tls, admin),
        None => Ok(Server::builder()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {flag} {addr}: {source}")]
    Bind {
        /// The flag that names the address, e.g. `--admin-listen`.
        flag: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("--admin-listen {0} is not a loopback address: bearer tokens would cross the network in the clear; give --tls-cert and --tls-key, bind it to loopback, or pass --insecure to accept that")]
    AdminNotLoopback(SocketAddr),
    #[error("cannot listen on --uds {path}: {source}")]
    Unix { path: String, source: io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(tonic_reflection::server::Error),
    #[error("the {what} listener failed: {source}")]
    Transport {
        what: &'static str,
        source: tonic::transport::Error,
    },
}

/// A running server: its bound addresses and a handle to stop it.
pub struct Running {
    pub authorizer_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub health_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<(
        &'static str,
        JoinHandle<Result<(), tonic::transport::Error>>,
    )>,
}

impl Running {
    /// Stops accepting, lets in-flight calls finish, and waits.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits until every listener has stopped.
    pub async fn wait(self) -> Result<(), ServeError> {
        let mut first_error = None;
        for (what, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    first_error.get_or_insert(ServeError::Transport { what, source });
                }
                Err(join) => {
                    tracing::error!(listener = what, "listener task ended abnormally: {join}")
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A sender that stops the server when `true` is sent.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { flag, addr, source })
}

fn local_addr(
    flag: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, ServeError> {
    l.local_addr()
        .map_err(|source| ServeError::Bind { flag, addr, source })
}

pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Binds every listener, then serves in background tasks.
pub async fn start(
    config: ServeConfig,
    broker: Arc<Broker>,
    reloader: Option<Arc<Reloader>>,
) -> Result<Running, ServeError> {
    let engine = broker.engine().clone();
    if !config.admin_listen.ip().is_loopback() && !config.insecure && config.tls.is_none() {
        return Err(ServeError::AdminNotLoopback(config.admin_listen));
    }
    let authorizer_listener = bind("--listen", config.listen).await?;
    let admin_listener = bind("--admin-listen", config.admin_listen).await?;
    let health_listener = match config.health_listen {
        Some(addr) => Some((bind("--health-listen", addr).await?, addr)),
        None => None,
    };
    let authorizer_addr = local_addr("--listen", &authorizer_listener, config.listen)?;
    let admin_addr = local_addr("--admin-listen", &admin_listener, config.admin_listen)?;
    let health_addr = match &health_listener {
        Some((l, addr)) => Some(local_addr("--health-listen", l, *addr)?),
        None => None,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AuthorizerServer<AuthorizerService>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<AdminService>>()
        .await;
    health_reporter
        .set_service_status(
            "envoy.service.auth.v3.Authorization",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Both reflection versions list both, so tools of either age see all.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = || reflection().build_v1().map_err(ServeError::Reflection);
    let reflection_v1alpha = || reflection().build_v1alpha().map_err(ServeError::Reflection);
    // The Authorizer listeners also describe Envoy's Authorization service.
    let with_envoy = || {
        reflection()
            .register_encoded_file_descriptor_set(crate::extauthz::service::FILE_DESCRIPTOR_SET)
    };
    let authorizer_reflection_v1 = || with_envoy().build_v1().map_err(ServeError::Reflection);
    let authorizer_reflection_v1alpha =
        || with_envoy().build_v1alpha().map_err(ServeError::Reflection);

    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let audit = config
        .audit
        .clone()
        .map(|log| (log, config.audit_decisions_sample));
    let authorizer = AuthorizerServer::new(AuthorizerService::new(broker.clone(), audit.clone()))
        .max_decoding_message_size(MAX_AUTHORIZER_MESSAGE);
    let ext_authz =
        crate::extauthz::service::server(broker.clone(), config.ext_authz.clone(), audit);
    if let Some(path) = &config.uds {
        // The Unix socket is local by nature: plaintext, same services.
        let listener = bind_unix(path)?;
        let router = Server::builder()
            .add_service(authorizer.clone())
            .add_service(ext_authz.clone())
            .add_service(health_service.clone())
            .add_service(authorizer_reflection_v1()?)
            .add_service(authorizer_reflection_v1alpha()?);
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tasks.push((
            "authorizer (unix socket)",
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()))),
        ));
    }
    let router = builder(config.tls.as_ref(), false)?
        .add_service(authorizer)
        .add_service(ext_authz)
        .add_service(health_service.clone())
        .add_service(authorizer_reflection_v1()?)
        .add_service(authorizer_reflection_v1alpha()?);
    let incoming = TcpIncoming::from(authorizer_listener).with_nodelay(Some(true));
    tasks.push((
        "authorizer",
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()))),
    ));

    let admin = AdminServer::new(AdminService::new(engine.clone(), reloader))
        .max_decoding_message_size(MAX_ADMIN_MESSAGE);
    let admin = InterceptedService::new(admin, config.tokens.interceptor(true));
    let approvals = ApprovalsServer::new(ApprovalsService::new(broker.clone(), stop_rx.clone()))
        .max_decoding_message_size(MAX_ADMIN_MESSAGE);
    let approvals = InterceptedService::new(approvals, config.tokens.interceptor(false));
    // The approvals page shares the listener: HTTP/1.1 for browsers beside
    // gRPC's HTTP/2, every path under /ui/ routed to it.
    let ui = crate::ui::routes(broker.clone(), config.tokens.clone(), stop_rx.clone());
    let router = builder(config.tls.as_ref(), true)?
        .accept_http1(true)
        .add_routes(ui)
        .add_service(admin)
        .add_service(approvals)
        .add_service(health_service.clone())
        .add_service(reflection_v1()?)
        .add_service(reflection_v1alpha()?);
    let incoming = TcpIncoming::from(admin_listener).with_nodelay(Some(true));
    tasks.push((
        "admin",
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()))),
    ));

    if let Some((listener, _)) = health_listener {
        let router = Server::builder().add_service(health_service);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tasks.push((
            "health",
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped(stop_rx))),
        ));
    }

    Ok(Running {
        authorizer_addr,
        admin_addr,
        health_addr,
        stop,
        tasks,
    })
}
