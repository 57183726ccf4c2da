//! Starts the real daemon in-process on ephemeral loopback ports for a test
//! and hands out tonic clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rampart::daemon::{Daemon, Options, Resources, RunningDaemon};
use rampart::elevation::{Broker, Store};
use rampart::engine::Engine;
use rampart::proto::admin_client::AdminClient;
use rampart::proto::approvals_client::ApprovalsClient;
use rampart::proto::authorizer_client::AuthorizerClient;
use rampart::proto::{AuthorizeRequest, AuthorizeResponse};
use rampart::server::Tokens;
use tonic::transport::Channel;

pub const SUB1: &str = "/subscriptions/11111111-1111-1111-1111-111111111111";
pub const SUB2: &str = "/subscriptions/22222222-2222-2222-2222-222222222222";
pub const RULES: &str = include_str!("../fixtures/rules.yaml");

/// Tokens every test server accepts: an admin, and one per principal
/// named `token-<principal>` for the principals tests approve as.
pub const ADMIN_TOKEN: &str = "test-admin";

/// The connection layer of a test server.
#[derive(Default)]
pub struct Edge {
    pub connections: rampart::server::ConnectionSettings,
    pub caps: rampart::server::ConnectionCaps,
    pub authorizer_tokens: Option<rampart::server::AuthorizerTokens>,
}

pub struct TestServer {
    pub running: Option<RunningDaemon>,
    pub engine: Arc<Engine>,
    pub broker: Arc<Broker>,
    pub authorizer: AuthorizerClient<Channel>,
    pub admin: AdminClient<Channel>,
    pub approvals: ApprovalsClient<Channel>,
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// The token of a principal in test servers.
pub fn token(principal: &str) -> String {
    format!("token-{principal}")
}

impl TestServer {
    pub async fn start(snapshot_yaml: &str) -> TestServer {
        TestServer::start_with_store(snapshot_yaml, Store::in_memory().expect("store")).await
    }

    pub async fn start_with_store(
        snapshot_yaml: &str,
        store: impl rampart::elevation::StateStore + 'static,
    ) -> TestServer {
        TestServer::start_full(snapshot_yaml, store, None).await
    }

    /// Starts the daemon in-process, as `rampart serve` would, on the
    /// given snapshot text and store, with a token per principal.
    pub async fn start_full(
        snapshot_yaml: &str,
        store: impl rampart::elevation::StateStore + 'static,
        audit: Option<(Arc<rampart::audit::AuditLog>, f64)>,
    ) -> TestServer {
        TestServer::start_all(
            snapshot_yaml,
            store,
            audit,
            Default::default(),
            None,
            Default::default(),
        )
        .await
    }

    /// [`TestServer::start_full`] with the broker's limits.
    pub async fn start_with_limits(
        snapshot_yaml: &str,
        store: impl rampart::elevation::StateStore + 'static,
        audit: Option<(Arc<rampart::audit::AuditLog>, f64)>,
        limits: rampart::elevation::Limits,
    ) -> TestServer {
        TestServer::start_all(
            snapshot_yaml,
            store,
            audit,
            Default::default(),
            None,
            limits,
        )
        .await
    }

    /// Starts the daemon with these ext_authz settings, and also on a Unix
    /// socket when `uds` is given.
    pub async fn start_with(
        snapshot_yaml: &str,
        store: impl rampart::elevation::StateStore + 'static,
        audit: Option<(Arc<rampart::audit::AuditLog>, f64)>,
        ext_authz: rampart::extauthz::ExtAuthzSettings,
        uds: Option<std::path::PathBuf>,
    ) -> TestServer {
        TestServer::start_all(
            snapshot_yaml,
            store,
            audit,
            ext_authz,
            uds,
            Default::default(),
        )
        .await
    }

    async fn start_all(
        snapshot_yaml: &str,
        store: impl rampart::elevation::StateStore + 'static,
        audit: Option<(Arc<rampart::audit::AuditLog>, f64)>,
        ext_authz: rampart::extauthz::ExtAuthzSettings,
        uds: Option<std::path::PathBuf>,
        limits: rampart::elevation::Limits,
    ) -> TestServer {
        TestServer::start_edge(
            snapshot_yaml,
            store,
            audit,
            ext_authz,
            uds,
            limits,
            Edge::default(),
        )
        .await
    }

    /// Starts the daemon with these connection settings, caps and
    /// Authorizer tokens.
    pub async fn with_edge(snapshot_yaml: &str, edge: Edge) -> TestServer {
        TestServer::start_edge(
            snapshot_yaml,
            Store::in_memory().expect("store"),
            None,
            Default::default(),
            None,
            Default::default(),
            edge,
        )
        .await
    }

    async fn start_edge(
        snapshot_yaml: &str,
        store: impl rampart::elevation::StateStore + 'static,
        audit: Option<(Arc<rampart::audit::AuditLog>, f64)>,
        ext_authz: rampart::extauthz::ExtAuthzSettings,
        uds: Option<std::path::PathBuf>,
        limits: rampart::elevation::Limits,
        edge: Edge,
    ) -> TestServer {
        let snapshot =
            rampart::snapshot::load_str(snapshot_yaml, "test").unwrap_or_else(|e| panic!("{e}"));
        let plain: Vec<(String, String, bool)> = snapshot
            .tenant
            .principals
            .iter()
            .map(|p| (token(&p.id), p.id.clone(), false))
            .chain(std::iter::once((
                ADMIN_TOKEN.to_owned(),
                "admin".to_owned(),
                true,
            )))
            .collect();
        let borrowed: Vec<(&str, &str, bool)> = plain
            .iter()
            .map(|(t, p, a)| (t.as_str(), p.as_str(), *a))
            .collect();
        let ephemeral: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let resources = Resources {
            snapshot,
            snapshot_file: None,
            store: Box::new(store),
            state_dir: None,
            state_db: None,
            tokens: Tokens::from_plain(&borrowed),
            tokens_file: None,
            authorizer_tokens: edge
                .authorizer_tokens
                .map(|t| (std::path::PathBuf::from("authorizer-tokens.yaml"), t)),
            audit_log: audit.as_ref().map(|(log, _)| log.clone()),
            tls: None,
            warnings: Vec::new(),
        };
        let options = Options {
            listen: ephemeral,
            admin_listen: ephemeral,
            health_listen: Some(ephemeral),
            metrics_listen: None,
            uds,
            insecure: false,
            audit_decisions_sample: audit.as_ref().map_or(0.0, |(_, rate)| *rate),
            watch: false,
            reload_poll: Duration::from_secs(30),
            limits,
            ext_authz,
            connections: edge.connections,
            caps: edge.caps,
        };
        let running = Daemon::from_parts(resources, options)
            .unwrap_or_else(|e| panic!("{e}"))
            .start()
            .await
            .unwrap_or_else(|e| panic!("server starts: {e}"));
        let broker = running.broker.clone();
        let engine = broker.engine().clone();
        // Connected lazily: a test may fill the Authorizer's slots.
        let authorizer = AuthorizerClient::new(
            tonic::transport::Endpoint::from_shared(format!("http://{}", running.authorizer_addr))
                .expect("uri")
                .connect_lazy(),
        );
        let admin = AdminClient::connect(format!("http://{}", running.admin_addr))
            .await
            .expect("connect to admin");
        let approvals = ApprovalsClient::connect(format!("http://{}", running.admin_addr))
            .await
            .expect("connect to approvals");
        TestServer {
            running: Some(running),
            engine,
            broker,
            authorizer,
            admin,
            approvals,
        }
    }

    pub async fn rules() -> TestServer {
        TestServer::start(RULES).await
    }

    pub async fn authorize(
        &self,
        principal: &str,
        action: &str,
        scope: &str,
        data: bool,
    ) -> AuthorizeResponse {
        self.try_authorize(request(principal, action, scope, data))
            .await
            .unwrap_or_else(|s| panic!("{principal} {action} {scope}: {s}"))
    }

    pub async fn try_authorize(
        &self,
        req: AuthorizeRequest,
    ) -> Result<AuthorizeResponse, tonic::Status> {
        self.authorizer
            .clone()
            .authorize(req)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn explain(
        &self,
        principal: &str,
        action: &str,
        scope: &str,
        data: bool,
    ) -> AuthorizeResponse {
        let mut req = request(principal, action, scope, data);
        req.explain = true;
        self.try_authorize(req).await.expect("authorize")
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }
}

pub fn request(principal: &str, action: &str, scope: &str, data: bool) -> AuthorizeRequest {
    AuthorizeRequest {
        principal_id: principal.into(),
        action: action.into(),
        scope: scope.into(),
        data_action: data,
        ..Default::default()
    }
}

pub fn decision(r: &AuthorizeResponse) -> (rampart::proto::Decision, rampart::proto::Reason) {
    (r.decision(), r.reason())
}
