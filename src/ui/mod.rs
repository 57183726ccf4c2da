//! The approvals page, served on the admin listener under `/ui/`: a page
//! for approvers, and the JSON API it calls under `/ui/api/`.
//!
//! It rides the admin listener's own server (tonic routes `/ui/…` to it
//! and accepts HTTP/1.1 beside gRPC's HTTP/2), so it has the same address,
//! the same TLS certificate and the same client-certificate check, and its
//! callers are authenticated by the same tokens interceptor as the
//! Approvals service. The page itself (HTML, CSS, JavaScript) is embedded
//! in the binary and needs no network beyond this listener.

mod api;
mod assets;
pub mod json;
pub mod preview;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Bytes, HttpBody};
use axum::http::{header, HeaderValue, Request};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::elevation::Broker;
use crate::server::Tokens;

/// The path of the page.
pub const PAGE_PATH: &str = "/ui/approvals";

/// What the handlers share.
pub(crate) struct UiState {
    pub broker: Arc<Broker>,
    pub tokens: Tokens,
    /// Becomes true when the server stops: open event streams end then.
    pub stop: watch::Receiver<bool>,
}

/// The page and its API as a service tonic can route to (every path under
/// `/ui/`).
#[derive(Clone)]
pub struct UiService {
    router: Router,
}

impl NamedService for UiService {
    const NAME: &'static str = "ui";
}

impl UiService {
    pub fn new(broker: Arc<Broker>, tokens: Tokens, stop: watch::Receiver<bool>) -> UiService {
        let state = Arc::new(UiState {
            broker,
            tokens,
            stop,
        });
        let router = Router::new()
            .route(PAGE_PATH, get(assets::page))
            .route("/ui/approvals.css", get(assets::stylesheet))
            .route("/ui/approvals.js", get(assets::script))
            .route("/ui/icon.svg", get(assets::icon))
            .route("/ui/api/me", get(api::me))
            .route("/ui/api/elevations", get(api::elevations))
            .route("/ui/api/elevations/{id}/approve", post(api::approve))
            .route("/ui/api/elevations/{id}/deny", post(api::deny))
            .route("/ui/api/grants", get(api::grants))
            .route("/ui/api/grants/{id}/revoke", post(api::revoke))
            .route("/ui/api/events", get(api::events))
            .route("/ui/api/freeze", get(api::freeze).post(api::set_freeze))
            .fallback(api::not_found)
            .layer(axum::extract::DefaultBodyLimit::max(api::MAX_BODY))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(state);
        UiService { router }
    }
}

/// The page and its API as routes of the admin listener: every path under
/// `/ui/`, and `/`, `/ui` and `/ui/` redirecting a browser to the page.
/// Other paths keep tonic's answer for unknown gRPC methods.
pub fn routes(broker: Arc<Broker>, tokens: Tokens, stop: watch::Receiver<bool>) -> Routes {
    let service = UiService::new(broker, tokens, stop);
    let to_page = || get(|| async { Redirect::to(PAGE_PATH) });
    Routes::from(
        Routes::new(service)
            .into_axum_router()
            .route("/", to_page())
            .route("/ui", to_page())
            .route("/ui/", to_page()),
    )
}

/// The Content-Security-Policy of every response: scripts, styles and
/// images from this origin only (no inline script or style), requests to
/// this origin only, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

impl<B> Service<Request<B>> for UiService
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.router.call(request)
    }
}
