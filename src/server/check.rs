//! Envoy's `envoy.service.auth.v3.Authorization/Check` on the wire: the
//! bearer token when `--authorizer-tokens` asks for one, the message read
//! in place, the answer written as it is ([`super::unary`]). The edge calls
//! it directly for its path, ahead of the router; the router holds it too,
//! so that the service's other paths are answered by it.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::Status;
use tower_service::Service;

use super::auth::AuthorizerTokens;
use super::unary::{self, UnaryBody};
use crate::extauthz::service::{CheckService, MAX_CHECK_MESSAGE};
use crate::extauthz::wire::CheckRequest;

/// The path of the one method.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// `envoy.service.auth.v3.Authorization`, ready to serve.
#[derive(Clone)]
pub struct CheckCall {
    service: Arc<CheckService>,
    tokens: Option<AuthorizerTokens>,
}

impl CheckCall {
    /// Calls need one of `tokens` when given, as `Authorize` does.
    pub fn new(service: CheckService, tokens: Option<AuthorizerTokens>) -> CheckCall {
        CheckCall {
            service: Arc::new(service),
            tokens,
        }
    }

    /// Answers one call. Every failure is a gRPC status; Envoy, failing
    /// closed, denies the request it was asking about.
    pub fn answer<B>(
        &self,
        request: http::Request<B>,
    ) -> BoxFuture<http::Response<UnaryBody>, Infallible>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let admitted = self.admit(&request);
        let service = self.service.clone();
        Box::pin(async move {
            if let Err(status) = admitted {
                return Ok(unary::fail(status));
            }
            let message = match unary::read_message(request.into_body(), MAX_CHECK_MESSAGE).await {
                Ok(message) => message,
                Err(status) => return Ok(unary::fail(status)),
            };
            let request = match CheckRequest::decode(message) {
                Ok(request) => request,
                Err(e) => return Ok(unary::fail(Status::invalid_argument(e.to_string()))),
            };
            let answer = service.answer(&request).await;
            Ok(unary::respond(answer.as_bytes()))
        })
    }

    /// What is refused before the body is read: another method, an
    /// encoding other than identity, a missing or unknown token.
    fn admit<B>(&self, request: &http::Request<B>) -> Result<(), Status> {
        if request.uri().path() != CHECK_PATH {
            return Err(Status::unimplemented(format!(
                "{} serves only {CHECK_PATH}",
                Self::NAME
            )));
        }
        unary::accept_encoding(request.headers())?;
        match &self.tokens {
            Some(tokens) => tokens.admit(request.headers()),
            None => Ok(()),
        }
    }
}

impl NamedService for CheckCall {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl<B> Service<http::Request<B>> for CheckCall
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    type Response = http::Response<UnaryBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.answer(request)
    }
}
