//! The gRPC edge: the `Authorizer` listener for enforcement points (with
//! Envoy's `envoy.service.auth.v3.Authorization` beside it), the
//! `Admin` listener for operators, and an optional health-only listener for
//! kubelet probes. Each serves `grpc.health.v1`, where readiness means "a
//! snapshot is loaded" — it always is once listening, since rampart refuses
//! to start without one — and gRPC reflection (v1 and v1alpha) listing
//! exactly the services it serves; a call for a service another listener
//! serves is answered with that listener's flag and address.

pub mod admin;
pub mod approvals;
pub mod auth;
pub mod authorizer;
pub mod check;
pub mod convert;
pub mod edge;
pub mod metrics;
pub mod tls;
pub mod unary;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::audit::AuditLog;
use crate::elevation::Broker;
use crate::extauthz::service::CheckService;
use crate::proto::admin_server::AdminServer;
use crate::proto::approvals_server::ApprovalsServer;
use crate::proto::authorizer_server::AuthorizerServer;
use crate::snapshot::reload::Reloader;
use admin::AdminService;
use approvals::ApprovalsService;
pub use auth::{AuthorizerTokens, Tokens};
use authorizer::AuthorizerService;
use check::CheckCall;
pub use edge::{ConnectionCaps, ConnectionSettings};

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
    /// When set, every Authorizer call (TCP and Unix socket) needs one of
    /// these bearer tokens.
    pub authorizer_tokens: Option<AuthorizerTokens>,
    /// Allow the Authorizer or admin listener on a non-loopback address
    /// without TLS.
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
    /// Timeouts and keepalive of every connection.
    pub connections: ConnectionSettings,
    /// The most connections each listener holds.
    pub caps: ConnectionCaps,
}

/// PEM material for TLS, read at start, and the paths it came from (named
/// in errors; empty when given in memory).
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Clients of the admin listener may present a certificate signed by
    /// this CA; its subject maps to a principal (tokens file `subject:`).
    pub admin_client_ca_pem: Option<Vec<u8>>,
    /// Clients of the Authorizer's TCP listener must present a certificate
    /// signed by this CA.
    pub authorizer_client_ca_pem: Option<Vec<u8>>,
    pub cert_path: String,
    pub key_path: String,
    pub admin_client_ca_path: String,
    pub authorizer_client_ca_path: String,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert_path)
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("admin_client_ca", &self.admin_client_ca_pem.is_some())
            .field(
                "authorizer_client_ca",
                &self.authorizer_client_ca_pem.is_some(),
            )
            .finish()
    }
}

impl TlsFiles {
    fn cert(&self) -> tls::Named<'_> {
        tls::Named {
            flag: "--tls-cert",
            path: &self.cert_path,
            pem: &self.cert_pem,
        }
    }

    fn key(&self) -> tls::Named<'_> {
        tls::Named {
            flag: "--tls-key",
            path: &self.key_path,
            pem: &self.key_pem,
        }
    }

    /// Checks every file (certificate and key present, not swapped, not
    /// version 1, matching; each CA usable), as at start.
    pub fn check(&self) -> Result<(), String> {
        self.acceptor(false).map(|_| ())?;
        self.acceptor(true).map(|_| ())
    }

    /// The TLS side of the admin listener (`admin`) or of the Authorizer.
    fn acceptor(&self, admin: bool) -> Result<edge::Tls, String> {
        let (ca, path, flag, required) = if admin {
            (
                &self.admin_client_ca_pem,
                &self.admin_client_ca_path,
                "--admin-client-ca",
                false,
            )
        } else {
            (
                &self.authorizer_client_ca_pem,
                &self.authorizer_client_ca_path,
                "--authorizer-client-ca",
                true,
            )
        };
        let ca = ca.as_deref().map(|pem| tls::Named { flag, path, pem });
        let config = tls::server_config(self.cert(), self.key(), ca, required, admin)?;
        Ok(edge::Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            cert: named(self.cert()).into(),
            client_ca: ca.map(|ca| named(ca).into()),
        })
    }
}

fn named(file: tls::Named<'_>) -> String {
    if file.path.is_empty() {
        file.flag.to_owned()
    } else {
        format!("{} {}", file.flag, file.path)
    }
}

/// Binds a Unix socket, replacing a stale socket file (never another kind
/// of file), with mode 0660 whatever the umask: it is bound inside a
/// private directory, given its mode, then renamed into place, so it is
/// never reachable with a wider mode.
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, ServeError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
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
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let private = parent.join(format!(".rampart-uds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(fail)?;
    let staged = private.join("socket");
    let bound = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o660))?;
        std::fs::rename(&staged, path)?;
        listener.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound.map_err(fail)
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
    #[error("--listen {0} is not a loopback address and has no TLS: anyone who reaches it could read decisions and file elevations in any agent's name, in the clear; give --tls-cert and --tls-key (and --authorizer-client-ca or --authorizer-tokens to say who may call), bind it to loopback (or use --uds), or pass --insecure to accept that")]
    AuthorizerNotLoopback(SocketAddr),
    #[error("cannot listen on --uds {path}: {source}")]
    Unix { path: String, source: io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(tonic_reflection::server::Error),
}

/// A running server: its bound addresses and a handle to stop it.
pub struct Running {
    pub authorizer_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub health_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Running {
    /// Stops accepting, lets in-flight calls finish, and waits.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits until every listener has stopped.
    pub async fn wait(self) -> Result<(), ServeError> {
        for (what, task) in self.tasks {
            if let Err(join) = task.await {
                tracing::error!(listener = what, "listener task ended abnormally: {join}")
            }
        }
        Ok(())
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

/// The gRPC services of each listener, for reflection and for telling a
/// caller at the wrong port where to go.
const AUTHORIZER_SERVICES: &[&str] = &[
    "rampart.v1.Authorizer",
    "envoy.service.auth.v3.Authorization",
];
const ADMIN_SERVICES: &[&str] = &["rampart.v1.Admin", "rampart.v1.Approvals"];
const COMMON_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Which listener serves what, with the addresses bound.
#[derive(Debug, Clone, Copy)]
struct Layout {
    authorizer: SocketAddr,
    admin: SocketAddr,
}

/// The answer to a call for a service this listener does not serve: which
/// listener does, or what this one serves.
fn wrong_listener(here: &'static str, layout: Layout, service: &str) -> String {
    let elsewhere = if AUTHORIZER_SERVICES.contains(&service) {
        Some(("the Authorizer listener", "--listen", layout.authorizer))
    } else if ADMIN_SERVICES.contains(&service) {
        Some(("the admin listener", "--admin-listen", layout.admin))
    } else {
        None
    };
    let serves = |flag: &str| -> String {
        let own: &[&str] = match flag {
            "--listen" => AUTHORIZER_SERVICES,
            "--admin-listen" => ADMIN_SERVICES,
            _ => &[],
        };
        own.iter()
            .chain(COMMON_SERVICES)
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    };
    match elsewhere {
        Some((name, flag, addr)) => format!(
            "{service} is not served on this listener ({here}); it is on {name} ({flag} {addr})"
        ),
        None => format!(
            "unknown service {service}: this listener ({here}) serves {}",
            serves(here)
        ),
    }
}

/// `routes`, answering calls for other services with [`wrong_listener`].
fn with_fallback(routes: Routes, here: &'static str, layout: Layout) -> Routes {
    let router = routes.into_axum_router().fallback(
        move |request: http::Request<axum::body::Body>| async move {
            let grpc = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/grpc"));
            if !grpc {
                let mut response = http::Response::new(tonic::body::Body::empty());
                *response.status_mut() = http::StatusCode::NOT_FOUND;
                return response;
            }
            let path = request.uri().path();
            let service = path
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            let message = wrong_listener(here, layout, &crate::elevation::error::echo(service));
            tonic::Status::unimplemented(message).into_http::<tonic::body::Body>()
        },
    );
    Routes::from(router).prepare()
}

/// `routes` with reflection (v1 and v1alpha) listing `services` and the
/// common ones.
fn with_reflection(routes: Routes, services: &[&str], envoy: bool) -> Result<Routes, ServeError> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Both reflection versions list both, so tools of either age see all.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        if envoy {
            b = b.register_encoded_file_descriptor_set(
                crate::extauthz::service::FILE_DESCRIPTOR_SET,
            );
        }
        for name in services.iter().chain(COMMON_SERVICES) {
            b = b.with_service_name(*name);
        }
        b
    };
    let v1 = builder().build_v1().map_err(ServeError::Reflection)?;
    let v1alpha = builder().build_v1alpha().map_err(ServeError::Reflection)?;
    Ok(routes.add_service(v1).add_service(v1alpha))
}

/// Refuses a listener beyond loopback without TLS unless `--insecure`
/// says so: the Authorizer files elevations in any agent's name, the admin
/// listener resolves them.
fn check_exposure(config: &ServeConfig) -> Result<(), ServeError> {
    if !config.admin_listen.ip().is_loopback() && !config.insecure && config.tls.is_none() {
        return Err(ServeError::AdminNotLoopback(config.admin_listen));
    }
    if !config.listen.ip().is_loopback() && config.tls.is_none() {
        if !config.insecure {
            return Err(ServeError::AuthorizerNotLoopback(config.listen));
        }
        tracing::warn!(
            "--listen {} is beyond loopback without TLS (--insecure): anyone who reaches it can read decisions and file elevations in any agent's name",
            config.listen
        );
    }
    Ok(())
}

/// `grpc.health.v1`, serving every service: a listening rampart has a
/// snapshot loaded.
async fn health_service() -> HealthServer<impl Health> {
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
    health_service
}

/// The Authorizer's services (`Authorize` and Envoy's `Check`), behind
/// `--authorizer-tokens` when given, with health and reflection.
fn authorizer_routes(
    config: &ServeConfig,
    broker: &Arc<Broker>,
    health: HealthServer<impl Health>,
    layout: Layout,
) -> Result<edge::Services, ServeError> {
    let audit = config
        .audit
        .clone()
        .map(|log| (log, config.audit_decisions_sample));
    let authorizer = AuthorizerServer::new(AuthorizerService::new(broker.clone(), audit.clone()))
        .max_decoding_message_size(MAX_AUTHORIZER_MESSAGE);
    let check = CheckCall::new(
        CheckService::new(broker.clone(), config.ext_authz.clone(), audit),
        config.authorizer_tokens.clone(),
    );
    // Without --authorizer-tokens the Authorizer is added as it is: nothing
    // stands between a call and its decision. Check reads the tokens itself.
    let routes = match &config.authorizer_tokens {
        Some(tokens) => Routes::new(InterceptedService::new(authorizer, tokens.interceptor())),
        None => Routes::new(authorizer),
    }
    .add_service(check.clone());
    let routes = with_reflection(routes.add_service(health), AUTHORIZER_SERVICES, true)?;
    Ok(edge::Services {
        routes: with_fallback(routes, "--listen", layout),
        check: Some(check),
    })
}

/// The admin listener's services: Admin and Approvals behind the admin
/// tokens, and the approvals page, which shares the listener (HTTP/1.1
/// for browsers beside gRPC's HTTP/2, every path under /ui/ routed to it).
fn admin_routes(
    config: &ServeConfig,
    broker: &Arc<Broker>,
    reloader: Option<Arc<Reloader>>,
    health: HealthServer<impl Health>,
    stop: &watch::Receiver<bool>,
    layout: Layout,
) -> Result<Routes, ServeError> {
    let admin = AdminServer::new(AdminService::new(broker.clone(), reloader))
        .max_decoding_message_size(MAX_ADMIN_MESSAGE);
    let admin = InterceptedService::new(admin, config.tokens.interceptor(true));
    let approvals = ApprovalsServer::new(ApprovalsService::new(broker.clone(), stop.clone()))
        .max_decoding_message_size(MAX_ADMIN_MESSAGE);
    let approvals = InterceptedService::new(approvals, config.tokens.interceptor(false));
    let ui = crate::ui::routes(broker.clone(), config.tokens.clone(), stop.clone());
    let routes = with_reflection(
        ui.add_service(admin)
            .add_service(approvals)
            .add_service(health),
        ADMIN_SERVICES,
        false,
    )?;
    Ok(with_fallback(routes, "--admin-listen", layout))
}

/// Binds every listener, then serves in background tasks.
pub async fn start(
    config: ServeConfig,
    broker: Arc<Broker>,
    reloader: Option<Arc<Reloader>>,
) -> Result<Running, ServeError> {
    check_exposure(&config)?;
    // TLS files are checked before anything binds.
    let tls = match &config.tls {
        Some(files) => Some((
            files.acceptor(false).map_err(ServeError::Tls)?,
            files.acceptor(true).map_err(ServeError::Tls)?,
        )),
        None => None,
    };
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
    let layout = Layout {
        authorizer: authorizer_addr,
        admin: admin_addr,
    };

    let health_service = health_service().await;

    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let settings = config.connections;

    let authorizer_routes = authorizer_routes(&config, &broker, health_service.clone(), layout)?;
    if let Some(path) = &config.uds {
        // The Unix socket is local by nature: plaintext, same services.
        let listener = edge::Listener {
            flag: "--uds",
            socket: edge::Socket::Unix(bind_unix(path)?),
            tls: None,
            http1: false,
            max_connections: config.caps.authorizer,
        };
        tasks.push((
            "authorizer (unix socket)",
            tokio::spawn(edge::serve(
                listener,
                authorizer_routes.clone(),
                settings,
                stop_rx.clone(),
            )),
        ));
    }
    let listener = edge::Listener {
        flag: "--listen",
        socket: edge::Socket::Tcp(authorizer_listener),
        tls: tls.as_ref().map(|(authorizer, _)| authorizer.clone()),
        http1: false,
        max_connections: config.caps.authorizer,
    };
    tasks.push((
        "authorizer",
        tokio::spawn(edge::serve(
            listener,
            authorizer_routes,
            settings,
            stop_rx.clone(),
        )),
    ));

    let admin_routes = admin_routes(
        &config,
        &broker,
        reloader,
        health_service.clone(),
        &stop_rx,
        layout,
    )?;
    let listener = edge::Listener {
        flag: "--admin-listen",
        socket: edge::Socket::Tcp(admin_listener),
        tls: tls.map(|(_, admin)| admin),
        http1: true,
        max_connections: config.caps.admin,
    };
    tasks.push((
        "admin",
        tokio::spawn(edge::serve(
            listener,
            admin_routes.into(),
            settings,
            stop_rx.clone(),
        )),
    ));

    if let Some((listener, _)) = health_listener {
        let routes = with_fallback(
            with_reflection(Routes::new(health_service), &[], false)?,
            "--health-listen",
            layout,
        );
        let listener = edge::Listener {
            flag: "--health-listen",
            socket: edge::Socket::Tcp(listener),
            tls: None,
            http1: false,
            max_connections: config.caps.health,
        };
        tasks.push((
            "health",
            tokio::spawn(edge::serve(listener, routes.into(), settings, stop_rx)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_at_the_wrong_port_names_the_right_one() {
        let layout = Layout {
            authorizer: "127.0.0.1:50051".parse().unwrap(),
            admin: "127.0.0.1:50052".parse().unwrap(),
        };
        assert_eq!(
            wrong_listener("--listen", layout, "rampart.v1.Approvals"),
            "rampart.v1.Approvals is not served on this listener (--listen); it is on the admin listener (--admin-listen 127.0.0.1:50052)"
        );
        assert_eq!(
            wrong_listener("--health-listen", layout, "rampart.v1.Authorizer"),
            "rampart.v1.Authorizer is not served on this listener (--health-listen); it is on the Authorizer listener (--listen 127.0.0.1:50051)"
        );
        assert_eq!(
            wrong_listener("--admin-listen", layout, "foo.Bar"),
            "unknown service foo.Bar: this listener (--admin-listen) serves rampart.v1.Admin, rampart.v1.Approvals, grpc.health.v1.Health, grpc.reflection.v1.ServerReflection, grpc.reflection.v1alpha.ServerReflection"
        );
    }
}
