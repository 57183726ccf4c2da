//! Starts the real server on ephemeral loopback ports for a test and hands
//! out tonic clients.

#![allow(dead_code)]

use std::sync::Arc;

use rampart::engine::Engine;
use rampart::proto::admin_client::AdminClient;
use rampart::proto::authorizer_client::AuthorizerClient;
use rampart::proto::{AuthorizeRequest, AuthorizeResponse};
use rampart::server::{self, Running, ServeConfig};
use tonic::transport::Channel;

pub const SUB1: &str = "/subscriptions/11111111-1111-1111-1111-111111111111";
pub const SUB2: &str = "/subscriptions/22222222-2222-2222-2222-222222222222";
pub const RULES: &str = include_str!("../fixtures/rules.yaml");

pub struct TestServer {
    pub running: Option<Running>,
    pub engine: Arc<Engine>,
    pub authorizer: AuthorizerClient<Channel>,
    pub admin: AdminClient<Channel>,
}

impl TestServer {
    pub async fn start(snapshot_yaml: &str) -> TestServer {
        let snapshot =
            rampart::snapshot::load_str(snapshot_yaml, "test").unwrap_or_else(|e| panic!("{e}"));
        let engine = Arc::new(Engine::new(snapshot));
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            health_listen: Some("127.0.0.1:0".parse().unwrap()),
        };
        let running = server::start(config, engine.clone())
            .await
            .expect("server starts");
        let authorizer = AuthorizerClient::connect(format!("http://{}", running.authorizer_addr))
            .await
            .expect("connect to the authorizer");
        let admin = AdminClient::connect(format!("http://{}", running.admin_addr))
            .await
            .expect("connect to admin");
        TestServer {
            running: Some(running),
            engine,
            authorizer,
            admin,
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
